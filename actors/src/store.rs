//! The persistence boundary of the engine. The engine knows nothing of SQL: the service shell
//! implements [`LedgerStore`] for Postgres, and tests of the engine alone can implement it in
//! memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::AccountLimits;
use crate::Usage;

/// An account's identity.
pub type AccountId = Uuid;

/// Whether an account may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Active,
    /// Suspended by an operator: the balance stays on the books but cannot be spent.
    Suspended,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<AccountStatus> {
        match s {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            _ => None,
        }
    }
}

/// What the engine needs to bring an account's actor to life: the stored balance (credits
/// minus flushed debits), its status and its throttles.
#[derive(Debug, Clone)]
pub struct AccountRecord {
    pub id: AccountId,
    pub status: AccountStatus,
    pub balance: Decimal,
    pub limits: AccountLimits,
}

/// Why money was added to or taken from a balance outside of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// An operator's grant.
    Credit,
    /// An operator's correction, which may be negative.
    Adjustment,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Credit => "credit",
            CreditKind::Adjustment => "adjustment",
        }
    }
}

/// A balance change that is not usage. The store writes it and its ledger entry in one
/// transaction before the actor applies it in memory.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    pub id: Uuid,
    pub account_id: AccountId,
    pub kind: CreditKind,
    pub amount: Decimal,
    pub reason: String,
}

/// How a metered request ended; recorded on its usage row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream finished the response and the client received it.
    Completed,
    /// The client went away; usage is the upstream's final (or last seen, if the drain
    /// timed out) cumulative usage.
    ClientDisconnected,
    /// The upstream stream was cut or reported an error after it had started.
    UpstreamCut,
    /// Shutdown's drain bound passed while the stream was running; usage is the last
    /// cumulative usage seen.
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientDisconnected => "client_disconnected",
            Outcome::UpstreamCut => "upstream_cut",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One settled request, as the flusher writes it. `request_id` is the idempotency key: a
/// record written twice is stored and debited once.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub request_id: Uuid,
    pub account_id: AccountId,
    pub key_id: Uuid,
    pub model: String,
    pub usage: Usage,
    pub cost: Decimal,
    /// The `effective_from` of the rate-card version the request was priced at.
    pub price_version: DateTime<Utc>,
    pub long_prompt_tier: bool,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Result of writing a batch: how many records were new. A replayed batch reports zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub inserted: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("ledger store: {0}")]
pub struct StoreError(pub String);

/// Persistence for accounts and the ledger. Every method that changes a balance is called only
/// by that account's actor (or by the flusher for debits the actor already applied), which is
/// what keeps the stored and the in-memory balance from diverging.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Loads an account for activation; `None` if it does not exist.
    async fn load_account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError>;

    /// Applies a non-usage balance change and writes its ledger entry, atomically.
    async fn apply_balance_change(&self, change: &BalanceChange) -> Result<(), StoreError>;

    /// Records a status change (suspension or its lifting) with the operator's reason.
    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Writes settled usage in one transaction: usage rows keyed by request id, the
    /// per-account debits, and their ledger entries. Idempotent per request id.
    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError>;
}
