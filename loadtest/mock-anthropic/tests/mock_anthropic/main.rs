//! mock-anthropic driven over real HTTP on loopback, as tollgate's tests and benchmarks use it.

mod errors;
mod helpers;
mod hooks;
mod knobs;
mod runtimes;
mod streaming;
