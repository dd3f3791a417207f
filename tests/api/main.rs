//! Integration tests: a real tollgate, a real Postgres database per test, and the simulated
//! upstream, talking HTTP over loopback. Nothing is mocked in-process.

#![allow(clippy::unwrap_used)]

mod admin;
mod billing;
mod concurrency;
mod errors;
mod helpers;
mod ledger;
mod loadgen;
mod streams;
mod upstream;
