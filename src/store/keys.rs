//! API-key rows. Only a key's keyed hash (its digest) and display prefix are stored; the key
//! itself never is.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{column, DbError, PgStore};

const INSERT_KEY: &str = "
    INSERT INTO api_keys (id, account_id, name, prefix, digest) VALUES ($1, $2, $3, $4, $5)
    RETURNING id, account_id, name, prefix, created_at, revoked_at";

const SELECT_KEYS: &str = "
    SELECT id, account_id, name, prefix, created_at, revoked_at
    FROM api_keys WHERE account_id = $1 ORDER BY created_at";

const REVOKE_KEY: &str = "
    UPDATE api_keys SET revoked_at = now()
    WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL
    RETURNING digest";

const SELECT_ACTIVE_KEYS: &str = "
    SELECT k.digest, k.id, k.account_id FROM api_keys k WHERE k.revoked_at IS NULL";

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key as the in-memory lookup needs it.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub digest: Vec<u8>,
    pub key_id: Uuid,
    pub account_id: Uuid,
}

impl PgStore {
    pub async fn create_key(
        &self,
        account_id: Uuid,
        name: &str,
        prefix: &str,
        digest: &[u8],
    ) -> Result<KeyRow, DbError> {
        let client = self.pool.get().await?;
        let id = Uuid::now_v7();
        let row = client
            .query_one(INSERT_KEY, &[&id, &account_id, &name, &prefix, &digest])
            .await?;
        key_row(&row)
    }

    pub async fn keys(&self, account_id: Uuid) -> Result<Vec<KeyRow>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(SELECT_KEYS, &[&account_id]).await?;
        rows.iter().map(key_row).collect()
    }

    /// Revokes a key; returns its digest so the in-memory lookup can forget it, or `None` if
    /// the account has no such unrevoked key.
    pub async fn revoke_key(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<Vec<u8>>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(REVOKE_KEY, &[&account_id, &key_id])
            .await?;
        row.map(|row| column(&row, "digest")).transpose()
    }

    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(SELECT_ACTIVE_KEYS, &[]).await?;
        rows.iter()
            .map(|row| {
                Ok(ActiveKey {
                    digest: column(row, "digest")?,
                    key_id: column(row, "id")?,
                    account_id: column(row, "account_id")?,
                })
            })
            .collect()
    }
}

fn key_row(row: &Row) -> Result<KeyRow, DbError> {
    Ok(KeyRow {
        id: column(row, "id")?,
        account_id: column(row, "account_id")?,
        name: column(row, "name")?,
        prefix: column(row, "prefix")?,
        created_at: column(row, "created_at")?,
        revoked_at: column(row, "revoked_at")?,
    })
}
