//! tollgate's metering engine. It knows nothing of HTTP or SQL.
//!
//! - [`usage`]: token usage as the upstream reports it.
//! - [`pricing`]: the rate card, dated price versions, prompt-length tiers, request cost. The
//!   built-in card's prices are data, `pricing/rate-card.toml`, embedded at build time.
//! - [`hold`]: the worst-case hold a request reserves before it goes upstream.
//! - [`sse`]: an incremental parser that reads usage out of relayed SSE bytes, in three
//!   layers: SSE framing, the meaning of Anthropic's events, and a lenient JSON reader.
//! - [`limits`]: per-account request, token and concurrency throttles.
//! - [`engine`]: the cloneable [`Engine`] handle: activates account actors, admits requests
//!   with a hold and returns a [`HoldTicket`] that settles or releases it.
//! - `account`: the account actor, the one writer of an account's money. It depends on
//!   nothing in `engine`: a message it drops unhandled finds the account's next actor through
//!   a redelivery handle that the engine implements.
//! - [`relay`]: the stream actor that relays an upstream stream and settles its usage.
//! - [`flusher`]: batches settled usage into one ledger transaction per interval.
//! - [`store`]: the persistence trait the service implements for Postgres.

mod account;
pub mod engine;
pub mod flusher;
pub mod hold;
pub mod limits;
pub mod pricing;
pub mod relay;
pub mod sse;
pub mod store;
pub mod usage;

pub use account::{AccountView, Refusal};
pub use engine::{
    ActorPlacement, AdmitError, Engine, EngineConfig, EngineError, HoldRequest, HoldTicket,
    Settlement,
};
pub use limits::{AccountLimits, Throttle};
pub use usage::Usage;
