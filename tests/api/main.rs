//! Integration tests: a real tollgate, a real Postgres database per test, and the simulated
//! upstream, talking HTTP over loopback. Nothing is mocked in-process.

// The helpers beside the tests are test code too, which clippy.toml's allowances (made for
// #[test] functions and #[cfg(test)] modules) do not reach.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod admin;
mod admission;
mod billing;
mod codes;
mod concurrency;
mod crash;
mod customer_history;
mod customer_keys;
mod customers;
mod database_tls;
mod deletion;
mod errors;
mod flush;
mod helpers;
mod holds;
mod idempotency;
mod instance;
mod journal;
mod key_policies;
mod ledger;
mod loadgen;
mod log_secrets;
mod nul_bytes;
mod openapi;
mod output_billed;
mod payments;
mod pg_fault;
mod prices;
mod proxies;
mod referrals;
mod shutdown;
mod smtp_sink;
mod streams;
mod upstream;
