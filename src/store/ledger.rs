//! The engine's [`LedgerStore`] for Postgres: the only path by which balances change on disk.
//! Credits, adjustments and status changes are one statement each, with their ledger or
//! status-history row; usage goes through the flush ([`super::usage`]).

use async_trait::async_trait;
use tollgate_actors::store::{BatchOutcome, LedgerStore, StoreError};
use tollgate_actors::{AccountId, AccountRecord, AccountStatus, BalanceChange, UsageRecord};

use super::{DbError, PgStore};

/// A credit or adjustment and its ledger entry, in one statement (so one transaction).
/// `change_id` is unique, so a retried change is applied once.
const APPLY_BALANCE_CHANGE: &str = "
    WITH upd AS (
        UPDATE accounts SET balance = balance + $2 WHERE id = $1
        AND NOT EXISTS (SELECT 1 FROM ledger WHERE change_id = $5)
        RETURNING id, balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, reason, change_id)
    SELECT id, $3, $2, balance, $4, $5 FROM upd";

/// A suspension or reinstatement and its row in the status history, in one statement.
const SET_STATUS: &str = "
    WITH upd AS (
        UPDATE accounts SET status = $2, status_reason = $3 WHERE id = $1 RETURNING id
    )
    INSERT INTO account_status_changes (account_id, status, reason) SELECT id, $2, $3 FROM upd";

#[async_trait]
impl LedgerStore for PgStore {
    async fn load_account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
        Ok(self.account(id).await?.map(|row| AccountRecord {
            id: row.id,
            status: row.status,
            balance: row.balance,
            limits: row.limits,
        }))
    }

    async fn apply_balance_change(&self, change: &BalanceChange) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        client
            .execute(
                APPLY_BALANCE_CHANGE,
                &[
                    &change.account_id,
                    &change.amount,
                    &change.kind.as_str(),
                    &change.reason,
                    &change.id,
                ],
            )
            .await
            .map_err(DbError::from)?;
        Ok(())
    }

    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        client
            .execute(SET_STATUS, &[&id, &status.as_str(), &reason])
            .await
            .map_err(DbError::from)?;
        Ok(())
    }

    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        let inserted = self.write_usage(batch).await?;
        Ok(BatchOutcome { inserted })
    }
}
