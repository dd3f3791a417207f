//! Account rows: who a customer is, whether they may spend, their stored balance and limits.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tollgate_actors::AccountLimits;
use tollgate_actors::AccountStatus;
use uuid::Uuid;

use super::{DbError, PgStore};

const INSERT_ACCOUNT: &str = "
    INSERT INTO accounts (id, email, password_hash, requests_per_minute, tokens_per_minute, max_concurrent)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at";

const SELECT_ACCOUNT: &str = "
    SELECT id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at
    FROM accounts WHERE id = $1";

const SELECT_ACCOUNT_BY_EMAIL: &str = "
    SELECT id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at
    FROM accounts WHERE email = $1";

const UPDATE_LIMITS: &str = "
    UPDATE accounts SET requests_per_minute = $2, tokens_per_minute = $3, max_concurrent = $4
    WHERE id = $1";

/// An account as stored (the admin API's static fields).
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: Uuid,
    pub email: String,
    pub status: AccountStatus,
    pub balance: Decimal,
    pub limits: AccountLimits,
    pub created_at: DateTime<Utc>,
}

impl PgStore {
    pub async fn create_account(
        &self,
        email: &str,
        password_hash: Option<&str>,
        limits: &AccountLimits,
    ) -> Result<AccountRow, DbError> {
        let client = self.pool.get().await?;
        let id = Uuid::now_v7();
        let row = client
            .query_one(
                INSERT_ACCOUNT,
                &[
                    &id,
                    &email,
                    &password_hash,
                    &(limits.requests_per_minute as i32),
                    &(limits.tokens_per_minute as i32),
                    &(limits.max_concurrent as i32),
                ],
            )
            .await
            .map_err(DbError::from)
            .map_err(|e| {
                if e.is_unique_violation() {
                    DbError::Conflict("an account with this email")
                } else {
                    e
                }
            })?;
        Ok(account_row(&row))
    }

    pub async fn account(&self, id: Uuid) -> Result<Option<AccountRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_ACCOUNT, &[&id]).await?;
        Ok(row.as_ref().map(account_row))
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_ACCOUNT_BY_EMAIL, &[&email]).await?;
        Ok(row.as_ref().map(account_row))
    }

    pub async fn set_limits(&self, id: Uuid, limits: &AccountLimits) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                UPDATE_LIMITS,
                &[
                    &id,
                    &(limits.requests_per_minute as i32),
                    &(limits.tokens_per_minute as i32),
                    &(limits.max_concurrent as i32),
                ],
            )
            .await?;
        Ok(n == 1)
    }
}

fn limits_of(row: &tokio_postgres::Row) -> AccountLimits {
    let get = |name: &str| u32::try_from(row.get::<_, i32>(name)).unwrap_or(0);
    AccountLimits {
        requests_per_minute: get("requests_per_minute"),
        tokens_per_minute: get("tokens_per_minute"),
        max_concurrent: get("max_concurrent"),
    }
}

fn status_of(row: &tokio_postgres::Row) -> AccountStatus {
    // The column's CHECK constraint admits only the two values; fail closed on anything else.
    AccountStatus::parse(row.get("status")).unwrap_or(AccountStatus::Suspended)
}

fn account_row(row: &tokio_postgres::Row) -> AccountRow {
    AccountRow {
        id: row.get("id"),
        email: row.get("email"),
        status: status_of(row),
        balance: row.get("balance"),
        limits: limits_of(row),
        created_at: row.get("created_at"),
    }
}
