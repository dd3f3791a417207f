//! The engine's [`LedgerStore`] for Postgres: the only path by which balances change on disk.
//! Credits, adjustments and status changes are one statement each, with their ledger or
//! status-history row (and a credit's or adjustment's idempotency key); usage goes through
//! the flush ([`super::usage`]).

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use tollgate_actors::store::{BatchOutcome, LedgerStore, StoreError};
use tollgate_actors::{
    AccountId, AccountRecord, AccountStatus, BalanceChange, ChangeApplied, UsageRecord,
};
use uuid::Uuid;

use super::{column, DbError, PgStore};

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

/// An idempotent credit or adjustment: its key is claimed, the balance changed and the
/// ledger entry written in one statement (so one transaction). A key claimed already stops
/// the whole statement: nothing is written, and no row comes back.
const APPLY_CLAIMED_BALANCE_CHANGE: &str = "
    WITH claim AS (
        INSERT INTO idempotency_keys (account_id, scope, key, fingerprint, change_id)
        VALUES ($1, $6, $7, $8, $5)
        ON CONFLICT (account_id, scope, key) DO NOTHING
        RETURNING account_id
    ), upd AS (
        UPDATE accounts SET balance = balance + $2
        WHERE id = (SELECT account_id FROM claim)
        RETURNING id, balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, reason, change_id)
    SELECT id, $3, $2, balance, $4, $5 FROM upd";

/// The change that claimed a key.
const CLAIMED_BY: &str = "
    SELECT change_id FROM idempotency_keys WHERE account_id = $1 AND scope = $2 AND key = $3";

/// Whether a change is in the ledger.
const CHANGE_ENTERED: &str = "SELECT 1 FROM ledger WHERE change_id = $1";

/// The record of a key, for a retry.
const IDEMPOTENCY_RECORD: &str = "
    SELECT fingerprint, status, response FROM idempotency_keys
    WHERE account_id = $1 AND scope = $2 AND key = $3";

/// Stores the first answer to a key, unless one is stored already, and returns the one that
/// is: every request with the key answers the same. One UPDATE, so a writer that waited on a
/// competing one's row lock reads the row as that one committed it (under READ COMMITTED a
/// separate SELECT would see the snapshot taken before the wait).
const FIRST_ANSWER: &str = "
    UPDATE idempotency_keys
    SET status = COALESCE(status, $4), response = COALESCE(response, $5)
    WHERE account_id = $1 AND scope = $2 AND key = $3
    RETURNING status, response";

/// Keys older than the retention are forgotten: a retry after that applies again.
const FORGET_OLD_KEYS: &str = "
    DELETE FROM idempotency_keys
    WHERE account_id = $1 AND created_at < now() - make_interval(days => $2)";

/// How long an `Idempotency-Key` is remembered (docs/adr/0016-idempotent-operator-writes.md):
/// far longer than any retry loop, short enough that the table stays small.
pub const IDEMPOTENCY_RETENTION_DAYS: i32 = 30;

/// What is stored for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: Vec<u8>,
    /// The first answer, once its writer stored it.
    pub answer: Option<StoredAnswer>,
}

/// An answer as it was first sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: String,
}

impl PgStore {
    /// Forgets `account`'s keys older than [`IDEMPOTENCY_RETENTION_DAYS`]: once per request
    /// with a key, before its claim (not on each poll of a waiting duplicate).
    pub async fn forget_old_idempotency_keys(&self, account: AccountId) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(FORGET_OLD_KEYS, &[&account, &IDEMPOTENCY_RETENTION_DAYS])
            .await?;
        Ok(())
    }

    /// The record of `key` on `account`'s `scope` route.
    pub async fn idempotency_record(
        &self,
        account: AccountId,
        scope: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(IDEMPOTENCY_RECORD, &[&account, &scope, &key])
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(IdempotencyRecord {
            fingerprint: column(&row, "fingerprint")?,
            answer: stored_answer(&row)?,
        }))
    }

    /// Stores `answer` as the first answer to `key`, unless another is stored already, and
    /// returns the one stored; `None` if the key has no record.
    pub async fn first_answer(
        &self,
        account: AccountId,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> Result<Option<StoredAnswer>, DbError> {
        let client = self.pool.get().await?;
        let status = i16::try_from(answer.status).unwrap_or(i16::MAX);
        let row = client
            .query_opt(
                FIRST_ANSWER,
                &[&account, &scope, &key, &status, &answer.body],
            )
            .await?;
        match row {
            Some(row) => stored_answer(&row),
            None => Ok(None),
        }
    }
}

fn stored_answer(row: &tokio_postgres::Row) -> Result<Option<StoredAnswer>, DbError> {
    let status: Option<i16> = column(row, "status")?;
    let body: Option<String> = column(row, "response")?;
    Ok(match (status, body) {
        (Some(status), Some(body)) => Some(StoredAnswer {
            status: u16::try_from(status).unwrap_or(500),
            body,
        }),
        _ => None,
    })
}

/// A suspension or reinstatement and its row in the status history, in one statement.
/// A deleted account's status changes no more (the row is not found).
const SET_STATUS: &str = "
    WITH upd AS (
        UPDATE accounts SET status = $2, status_reason = $3,
            deleted_at = CASE WHEN $2 = 'deleted' THEN now() END
        WHERE id = $1 AND status <> 'deleted' RETURNING id
    )
    INSERT INTO account_status_changes (account_id, status, reason) SELECT id, $2, $3 FROM upd";

/// Whether an account is deleted already (a repeated close).
const IS_DELETED: &str = "SELECT 1 FROM accounts WHERE id = $1 AND status = 'deleted'";

#[async_trait]
impl LedgerStore for PgStore {
    async fn load_account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
        let Some(row) = self.account(id).await? else {
            return Ok(None);
        };
        let key_spent = self.key_spent(id).await?;
        Ok(Some(AccountRecord {
            id: row.id,
            status: row.status,
            balance: row.balance,
            limits: row.limits,
            key_spent,
        }))
    }

    async fn apply_balance_change(
        &self,
        change: &BalanceChange,
    ) -> Result<ChangeApplied, StoreError> {
        if let Some(settles) = &change.settles {
            return Ok(self.settle(change, settles).await?);
        }
        let client = self.pool.get().await.map_err(DbError::from)?;
        let kind = change.kind.as_str();
        let common: [&(dyn ToSql + Sync); 5] = [
            &change.account_id,
            &change.amount,
            &kind,
            &change.reason,
            &change.id,
        ];
        let written = match &change.idempotency {
            None => client.execute(APPLY_BALANCE_CHANGE, &common).await,
            Some(claim) => {
                let mut params = common.to_vec();
                params.extend_from_slice(&[
                    &claim.scope as &(dyn ToSql + Sync),
                    &claim.key,
                    &claim.fingerprint,
                ]);
                client.execute(APPLY_CLAIMED_BALANCE_CHANGE, &params).await
            }
        }
        .map_err(DbError::from)?;
        if written == 1 {
            return Ok(ChangeApplied::Applied);
        }
        // Nothing written: the key was claimed, or the change entered, before.
        let earlier = match &change.idempotency {
            Some(claim) => client
                .query_opt(CLAIMED_BY, &[&change.account_id, &claim.scope, &claim.key])
                .await
                .map_err(DbError::from)?
                .map(|row| column::<Uuid>(&row, "change_id"))
                .transpose()?,
            None => client
                .query_opt(CHANGE_ENTERED, &[&change.id])
                .await
                .map_err(DbError::from)?
                .map(|_| change.id),
        };
        match earlier {
            Some(change_id) => Ok(ChangeApplied::AlreadyApplied { change_id }),
            None => Err(StoreError(format!(
                "account {} not found for a balance change",
                change.account_id
            ))),
        }
    }

    async fn set_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(DbError::from)?;
        let written = client
            .execute(SET_STATUS, &[&id, &status.as_str(), &reason])
            .await
            .map_err(DbError::from)?;
        if written == 0 {
            return Err(StoreError(format!(
                "account {id} is deleted or does not exist: its status stays"
            )));
        }
        Ok(())
    }

    async fn close_account(
        &self,
        id: AccountId,
        forfeiture: Option<&BalanceChange>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(DbError::from)?;
        let tx = client.transaction().await.map_err(DbError::from)?;
        if let Some(change) = forfeiture {
            // A forfeiture entered before (its id is the account's) writes nothing.
            let kind = change.kind.as_str();
            tx.execute(
                APPLY_BALANCE_CHANGE,
                &[
                    &change.account_id,
                    &change.amount,
                    &kind,
                    &change.reason,
                    &change.id,
                ],
            )
            .await
            .map_err(DbError::from)?;
        }
        let status = AccountStatus::Deleted.as_str();
        let written = tx
            .execute(SET_STATUS, &[&id, &status, &reason])
            .await
            .map_err(DbError::from)?;
        if written == 0
            && tx
                .query_opt(IS_DELETED, &[&id])
                .await
                .map_err(DbError::from)?
                .is_none()
        {
            return Err(StoreError(format!("account {id} not found to close")));
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }

    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        let inserted = self.write_usage(batch, self.flush_spread).await?;
        Ok(BatchOutcome { inserted })
    }

    async fn write_batch_at_once(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        let inserted = self.write_usage(batch, std::time::Duration::ZERO).await?;
        Ok(BatchOutcome { inserted })
    }
}
