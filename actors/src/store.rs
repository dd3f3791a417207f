//! The persistence port of the engine. The engine knows nothing of SQL: the service shell
//! implements [`LedgerStore`] for Postgres, and tests of the engine alone can implement it in
//! memory. What it stores (accounts, usage records, balance changes) is defined by the domain
//! modules, [`crate::account`] and [`crate::ledger`].

use async_trait::async_trait;

use crate::account::{AccountId, AccountRecord, AccountStatus};
use crate::ledger::{BalanceChange, ChangeApplied, UsageRecord};

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

    /// Applies a non-usage balance change and writes its ledger entry, atomically, claiming
    /// its idempotency key in the same transaction. A change already applied (its key
    /// claimed, or its id in the ledger) writes nothing and says so.
    async fn apply_balance_change(
        &self,
        change: &BalanceChange,
    ) -> Result<ChangeApplied, StoreError>;

    /// Records a status change (suspension or its lifting) with the operator's reason.
    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Closes an account its owner deleted: writes `forfeiture` (when there is a balance to
    /// write off) and the status `deleted` together, so that neither can be stored without
    /// the other. Repeating it after it committed writes nothing more: the forfeiture's id is
    /// fixed per account, and a deleted account's status stays. This default, for stores
    /// without transactions, writes them one after the other.
    async fn close_account(
        &self,
        id: AccountId,
        forfeiture: Option<&BalanceChange>,
        reason: &str,
    ) -> Result<(), StoreError> {
        if let Some(change) = forfeiture {
            self.apply_balance_change(change).await?;
        }
        self.set_status(id, AccountStatus::Deleted, reason).await
    }

    /// Writes settled usage in one transaction: usage rows keyed by request id, the
    /// per-account debits, and their ledger entries. Idempotent per request id.
    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError>;

    /// As [`LedgerStore::write_batch`], for a batch with more records waiting behind it: at
    /// once, not spread over the interval, so that a backlog drains at the database's pace
    /// rather than one paced batch at a time (docs/adr/0017-bounded-flush-batches.md).
    async fn write_batch_at_once(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        self.write_batch(batch).await
    }
}
