//! Redemption codes as stored: a keyed hash of each, never the code (docs/PAYMENTS.md). A
//! code is redeemed only through [`PgStore::settle`](super::PgStore), the store's side of a
//! [`Settles::RedemptionCode`](tollgate_actors::Settles) change sent by the account's actor.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{column, DbError, PgStore};

const CODE_COLUMNS: &str =
    "id, prefix, amount_usd, batch_id, expires_at, created_at, redeemed_by, redeemed_at";

/// A code as an operator lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeRow {
    pub id: Uuid,
    pub prefix: String,
    pub amount_usd: Decimal,
    pub batch_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub redeemed_by: Option<Uuid>,
    pub redeemed_at: Option<DateTime<Utc>>,
}

impl CodeRow {
    fn from_row(row: &Row) -> Result<CodeRow, DbError> {
        Ok(CodeRow {
            id: column(row, "id")?,
            prefix: column(row, "prefix")?,
            amount_usd: column(row, "amount_usd")?,
            batch_id: column(row, "batch_id")?,
            expires_at: column(row, "expires_at")?,
            created_at: column(row, "created_at")?,
            redeemed_by: column(row, "redeemed_by")?,
            redeemed_at: column(row, "redeemed_at")?,
        })
    }
}

/// One code of a batch to store.
pub struct NewCode {
    pub id: Uuid,
    pub digest: Vec<u8>,
    pub prefix: String,
}

impl PgStore {
    /// Stores a batch of codes of one amount and expiry, all or none.
    pub async fn create_codes(
        &self,
        batch_id: Uuid,
        codes: &[NewCode],
        amount_usd: Decimal,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        let ids: Vec<Uuid> = codes.iter().map(|code| code.id).collect();
        let digests: Vec<&[u8]> = codes.iter().map(|code| code.digest.as_slice()).collect();
        let prefixes: Vec<&str> = codes.iter().map(|code| code.prefix.as_str()).collect();
        client
            .execute(
                "INSERT INTO redemption_codes (id, digest, prefix, amount_usd, batch_id, expires_at) \
                 SELECT id, digest, prefix, $4, $5, $6 \
                 FROM unnest($1::uuid[], $2::bytea[], $3::text[]) AS c (id, digest, prefix)",
                &[&ids, &digests, &prefixes, &amount_usd, &batch_id, &expires_at],
            )
            .await?;
        Ok(())
    }

    /// The code whose digest this is.
    pub async fn code_by_digest(&self, digest: &[u8]) -> Result<Option<CodeRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {CODE_COLUMNS} FROM redemption_codes WHERE digest = $1");
        let row = client.query_opt(&sql, &[&digest]).await?;
        row.as_ref().map(CodeRow::from_row).transpose()
    }

    /// Codes, newest first, at most `limit`, made before `before` if given.
    pub async fn codes(
        &self,
        before: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<CodeRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {CODE_COLUMNS} FROM redemption_codes \
             WHERE ($1::timestamptz IS NULL OR created_at < $1) \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = client.query(&sql, &[&before, &limit]).await?;
        rows.iter().map(CodeRow::from_row).collect()
    }
}
