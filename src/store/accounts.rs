//! Account rows: who a customer is, whether they may spend, their stored balance and limits.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tollgate_actors::AccountLimits;
use tollgate_actors::AccountStatus;
use uuid::Uuid;

use super::{column, DbError, PgStore};

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
        account_row(&row)
    }

    pub async fn account(&self, id: Uuid) -> Result<Option<AccountRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_ACCOUNT, &[&id]).await?;
        row.as_ref().map(account_row).transpose()
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_ACCOUNT_BY_EMAIL, &[&email]).await?;
        row.as_ref().map(account_row).transpose()
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

fn limits_of(row: &Row) -> Result<AccountLimits, DbError> {
    // The columns' CHECK constraints admit no negative value, so the fallback is never taken.
    let limit = |name: &'static str| -> Result<u32, DbError> {
        let stored: i32 = column(row, name)?;
        Ok(u32::try_from(stored).unwrap_or(0))
    };
    Ok(AccountLimits {
        requests_per_minute: limit("requests_per_minute")?,
        tokens_per_minute: limit("tokens_per_minute")?,
        max_concurrent: limit("max_concurrent")?,
    })
}

fn status_of(row: &Row) -> Result<AccountStatus, DbError> {
    let stored: &str = column(row, "status")?;
    // The column's CHECK constraint admits only the two values; fail closed on anything else.
    Ok(AccountStatus::parse(stored).unwrap_or(AccountStatus::Suspended))
}

fn account_row(row: &Row) -> Result<AccountRow, DbError> {
    Ok(AccountRow {
        id: column(row, "id")?,
        email: column(row, "email")?,
        status: status_of(row)?,
        balance: column(row, "balance")?,
        limits: limits_of(row)?,
        created_at: column(row, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::server;

    const ROW: &str = "SELECT '0190a1b2-0000-7000-8000-000000000001'::uuid AS id,
        'a@example.com' AS email, $1::text AS status, 12.5::numeric AS balance,
        1 AS requests_per_minute, 2 AS tokens_per_minute, 3 AS max_concurrent,
        now() AS created_at";

    #[tokio::test]
    async fn a_stored_account_reads_back_whole() {
        let row = server().await.query_one(ROW, &[&"active"]).await.unwrap();
        let account = account_row(&row).unwrap();
        assert_eq!(account.email, "a@example.com");
        assert_eq!(account.status, AccountStatus::Active);
        assert_eq!(account.balance, Decimal::new(125, 1));
        assert_eq!(
            (
                account.limits.requests_per_minute,
                account.limits.tokens_per_minute,
                account.limits.max_concurrent
            ),
            (1, 2, 3)
        );
    }

    #[tokio::test]
    async fn an_unknown_status_reads_as_suspended() {
        let row = server().await.query_one(ROW, &[&"paused"]).await.unwrap();
        assert_eq!(account_row(&row).unwrap().status, AccountStatus::Suspended);
    }

    #[tokio::test]
    async fn a_missing_or_mistyped_column_is_an_error_that_names_it() {
        let client = server().await;
        let missing = client
            .query_one("SELECT 'a@example.com' AS email", &[])
            .await
            .unwrap();
        assert!(matches!(
            account_row(&missing),
            Err(DbError::Row { column: "id", .. })
        ));
        let mistyped = client
            .query_one(
                "SELECT 'not a number' AS requests_per_minute, 0 AS tokens_per_minute, 0 AS max_concurrent",
                &[],
            )
            .await
            .unwrap();
        assert!(matches!(
            limits_of(&mistyped),
            Err(DbError::Row {
                column: "requests_per_minute",
                ..
            })
        ));
    }
}
