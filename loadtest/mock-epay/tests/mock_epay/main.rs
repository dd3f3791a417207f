//! mock-epay driven over real HTTP on loopback, as tollgate's tests use it.

// Test code: a failed expectation is the test failing, so the helpers may panic.
#![allow(
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used
)]

mod helpers;
mod notify;
mod query;
mod signing;
mod submit;
