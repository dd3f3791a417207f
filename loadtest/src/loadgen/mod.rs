//! `loadgen`: tollgate's load generator, as a library so that the `loadgen` binary stays thin.
//!
//! It measures HTTP targets that speak the Anthropic Messages API (the simulated upstream
//! itself, a pass-through hop, tollgate) under identical load, one after the other, and
//! compares them. The load is a closed loop: a fixed number of clients, each sending its next
//! request as soon as the previous one ends.
//!
//! Map of the module:
//! - [`target`]: a named endpoint and the key it is sent with.
//! - [`workload`]: what one request looks like ([`Workload`]), and the streaming [`Mode`]s.
//! - [`stats`]: per-client recorders (HDR histograms at microsecond resolution, status counts)
//!   and the summaries read from them.
//! - [`runner`]: drives one closed-loop run against one target, with warmup and a progress line.
//! - [`bench`]: the whole measurement: rounds × modes × targets, interleaved.
//! - [`report`]: medians over rounds, comparisons between targets, the console table and JSON.

pub mod bench;
pub mod report;
pub mod runner;
pub mod stats;
pub mod target;
pub mod workload;

pub use bench::{run_bench, BenchConfig};
pub use report::Report;
pub use target::Target;
pub use workload::{Mode, Workload};
