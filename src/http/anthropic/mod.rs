//! The Anthropic-compatible surface under `/v1`. A Messages request's life, in order:
//!
//! 1. authenticate: the [`KeyOwner`](crate::auth::KeyOwner) extractor, before the body is read;
//! 2. check in: the account's gate refuses a suspended, empty or over-limit account and gives
//!    the request a concurrency slot, still before the body is read (`messages`);
//! 3. read the body within its size, time and per-key limits (`body`), then parse and price it
//!    (`request`);
//! 4. admit: the account's actor takes a hold (`messages`);
//! 5. choose an upstream, forward, then relay the stream or read the body, and settle
//!    (`exchange`), on a tracked task of its own so that a client going away does not stop
//!    tollgate from learning and billing what the upstream produced.

pub mod body;
pub mod count_tokens;
pub mod dashboard;
mod exchange;
pub mod messages;
mod metrics;
pub mod models;
pub mod probes;
mod request;

pub use request::PriceOptions;
