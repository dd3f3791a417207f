//! `mock-anthropic`: a simulated Anthropic Messages API upstream.
//!
//! tollgate's integration tests start it in-process on a loopback port, `tollgate demo` runs it
//! next to the proxy, and benchmarks run it as the `mock-anthropic` binary. It speaks the wire
//! format of `shared/reference/anthropic-api.md` over real HTTP (actix-web), so a relay in front
//! of it is exercised exactly as it would be against the real API: SSE events arrive one by one
//! with real delays, usage is reported cumulatively, errors come in Anthropic's shape.
//!
//! Map of the crate:
//! - [`config`]: [`MockConfig`], the server-wide defaults, and the per-request `"mock"` body
//!   field that overrides them so that a test can steer one request through a relay.
//! - `plan`: resolves config and overrides into what one request will produce.
//! - `render`: the JSON and SSE bytes, written by hand from pre-rendered fragments because
//!   benchmarks push thousands of requests per second through the mock.
//! - `text`: deterministic hashing and the pseudo-words that make up the output.
//! - `sse`: the streaming body, a small state machine that also counts how streams ended.
//! - `routes`: the HTTP endpoints, including the `/mock/stats` and `/mock/last` test hooks.
//! - [`server`]: [`MockServer`], which runs all of this on its own thread and runtime.
//! - [`stats`]: [`MockStats`], the counters tests read back.

pub mod config;
mod plan;
mod render;
mod routes;
pub mod server;
mod sse;
pub mod stats;
mod text;

pub use config::MockConfig;
pub use server::MockServer;
pub use stats::MockStats;
