//! `loadgen`: tollgate's load generator, as a library so that the `loadgen` binary stays thin.
//!
//! It measures HTTP targets that speak the Anthropic Messages API (the simulated upstream
//! itself, a pass-through hop, tollgate) under identical load, one after the other, and
//! compares them. The load is a closed loop: a fixed number of clients, each sending its next
//! request as soon as the previous one ends.
//!
//! Map of the crate:
//! - [`target`]: a named endpoint and the key it is sent with.
//! - [`workload`]: what one request looks like ([`Workload`]), and the streaming [`Mode`]s.
//! - [`stats`]: per-client recorders (HDR histograms at microsecond resolution, status counts)
//!   and the summaries read from them.
//! - [`runner`]: drives one closed-loop run against one target, with warmup and a progress line.
//! - [`bench`](mod@bench): the whole measurement: rounds × modes × targets, interleaved.
//! - [`report`]: medians over rounds, comparisons between targets, the console table and JSON.
//!
//! Scenario mode (`loadgen --scenario FILE`): one workload from a YAML file, against tollgate
//! with provisioned tenants, then reconciled against its books. loadgen talks to tollgate over
//! HTTP only and shares no code with it: it reads usage and prices it itself, so that a bug in
//! tollgate's parser, rate card or arithmetic cannot reconcile.
//! - [`scenario`]: the file's schema ([`Scenario`]), its validation, [`Endpoints`], and the
//!   entry point [`run_scenario`].
//! - [`schedule`]: open-loop arrival schedules (constant or Poisson, seeded), intended times.
//! - [`mix`]: the traffic mix (stream share, weighted models, prompt sizes, drops) and bodies.
//! - [`provision`]: preflight checks and tenants through the admin API.
//! - [`drive`]: sending the workload to one target (open or closed loop) and the whole
//!   scenario sequence.
//! - [`record`]: per-class HDR histograms, outcome counts and per-second series.
//! - [`outcome`]: [`ScenarioReport`]: comparisons, checks, verdict, console summary, JSON.
//! - [`html`]: the self-contained HTML report with inline SVG charts.
//! - [`usage`]: loadgen's own reader of the usage in a stream or a message, independent of
//!   tollgate's parser.
//! - [`prices`]: loadgen's own price table (by default `prices.yaml`, shipped in the binary)
//!   and cost arithmetic; after tollgate's pricing API lands, the prices will come from the
//!   deployment's `GET /api/v1/pricing`.
//! - [`reconcile`]: compares what clients received, priced by [`prices`], with tollgate's
//!   books in Postgres.

pub mod bench;
pub mod drive;
pub mod html;
pub mod mix;
pub mod outcome;
pub mod prices;
pub mod provision;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod usage;
pub mod workload;
mod yaml;

pub use bench::{run_bench, BenchConfig};
pub use drive::{run_scenario, run_scenario_with, RunOptions};
pub use outcome::ScenarioReport;
pub use report::Report;
pub use scenario::{Endpoints, Scenario, ScenarioError};
pub use target::Target;
pub use workload::{Mode, Workload};
