//! mock-anthropic driven over real HTTP on loopback, as tollgate's tests and benchmarks use it.

// Test code: a failed expectation is the test failing, so the helpers may panic.
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable
)]

mod errors;
mod helpers;
mod hooks;
mod knobs;
mod runtimes;
mod streaming;
