//! tollgate: a metering proxy for reselling Claude API access.
//!
//! - [`accounts`]: the customer domain: email, password and API-key rules.
//! - [`config`]: layered settings (`config.yaml`, then `TOLLGATE__SECTION__KEY`).
//! - [`startup`]: builds and runs the service ([`startup::Application`]).
//! - [`http`]: routes: the Anthropic-compatible proxy, the admin API, health and metrics.
//! - [`auth`]: API keys, their keyed hashes and the in-memory lookup.
//! - [`store`]: Postgres: migrations, named queries, the ledger writer.
//! - [`upstream`]: the providers requests are forwarded to.
//! - [`demo`]: `tollgate demo`.
//!
//! The metering engine itself (account actors, the relay task, pricing, holds) is the
//! `tollgate-actors` crate.

pub mod accounts;
pub mod auth;
pub mod config;
pub mod demo;
pub mod email;
pub mod http;
pub mod payments;
pub mod startup;
pub mod store;
pub mod upstream;
