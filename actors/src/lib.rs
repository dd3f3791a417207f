//! tollgate's metering engine. It knows nothing of HTTP or SQL.
//!
//! Domain:
//! - [`usage`]: token usage as the upstream reports it.
//! - [`bill`]: what a request is billed from that report, when the final usage never came,
//!   when there was none, and when a count is absurd.
//! - [`account`]: an account's id, status and live view, and why a request is refused. Its
//!   private `actor` module is the account actor, the one writer of an account's money; it
//!   depends on nothing in `engine` (a message it drops unhandled finds the account's next
//!   actor through a redelivery handle that the engine implements).
//! - [`ledger`]: what the ledger records: settled usage, and balance changes that are not
//!   usage.
//! - [`pricing`]: the rate card, dated price versions, prompt-length tiers, request cost. The
//!   built-in card's prices are data, `pricing/rate-card.toml`, embedded at build time.
//! - [`probe`]: the one parse of a request body: model, `max_tokens`, and the media and
//!   server tools that add input its bytes do not show.
//! - [`hold`]: the worst-case hold a request reserves before it goes upstream.
//! - [`limits`]: per-account request, token and concurrency throttles.
//!
//! Machinery:
//! - [`engine`]: the cloneable [`Engine`] handle: activates account actors, admits requests
//!   with a hold and returns a [`HoldTicket`] that settles or releases it; graceful shutdown.
//! - [`relay`]: the relay task ([`relay::RelayTask`]), one per streaming request: it relays an
//!   upstream stream to the client and settles its usage.
//! - [`sse`]: an incremental parser that reads usage out of relayed SSE bytes, in three
//!   layers: SSE framing, the meaning of Anthropic's events, and a lenient JSON reader.
//! - [`flusher`]: batches settled usage into one ledger transaction per interval.
//! - [`journal`]: the write-ahead journal on local disk: settled usage made durable, with
//!   group commit, before it counts as settled; replayed at start-up. Not wired in yet.
//! - [`store`]: the persistence port ([`LedgerStore`]) the service implements for Postgres.
//!
//! The types most callers need are re-exported here.

pub mod account;
pub mod bill;
pub mod engine;
pub mod flusher;
pub mod hold;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod pricing;
pub mod probe;
pub mod relay;
pub mod sse;
pub mod store;
pub mod usage;

pub use account::actor::{ForfeitRefused, Forfeited};
pub use account::{
    AccountId, AccountRecord, AccountStatus, AccountView, KeySpent, Refusal, SpendCap, SpendCaps,
};
pub use bill::{Bill, UsageFault};
pub use engine::{
    ActorPlacement, Admission, AdmitError, Durability, Durably, Engine, EngineConfig, EngineError,
    HoldRequest, HoldTicket, Resize, Settlement, UnbilledAdmission, DURABLE_WAIT, INTERRUPT_GRACE,
};
pub use ledger::{
    BalanceChange, BalanceChanged, ChangeApplied, CreditKind, IdempotencyClaim, Outcome,
    PaymentPath, Settles, UsageRecord,
};
pub use limits::{AccountLimits, Throttle};
pub use store::{BatchOutcome, LedgerStore, StoreError};
pub use usage::{Usage, UsageReport};
