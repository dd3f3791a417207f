//! What a customer reads of its own past: usage rows, a daily summary by model, and the ledger.
//! Every query is bounded by the account id first, so no filter or cursor can reach another
//! account's rows, and pages by a keyset (never an offset), so a page costs the same however
//! deep it is.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{column, DbError, PgStore};

/// Newest first; `$5`/`$6` is the keyset of the previous page's last row.
const SELECT_USAGE_PAGE: &str = "
    SELECT request_id, started_at, finished_at, model, key_id, input_tokens, output_tokens,
        cache_read_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cost, outcome
    FROM usage
    WHERE account_id = $1
      AND ($2::timestamptz IS NULL OR started_at >= $2)
      AND ($3::timestamptz IS NULL OR started_at < $3)
      AND ($4::text IS NULL OR model = $4)
      AND ($7::uuid IS NULL OR key_id = $7)
      AND ($5::timestamptz IS NULL OR (started_at, request_id) < ($5, $6::uuid))
    ORDER BY started_at DESC, request_id DESC
    LIMIT $8";

const SELECT_DAILY: &str = "
    SELECT (started_at AT TIME ZONE 'UTC')::date AS day, model, count(*) AS requests,
        sum(input_tokens)::int8 AS input_tokens, sum(output_tokens)::int8 AS output_tokens,
        sum(cache_read_tokens)::int8 AS cache_read_tokens,
        sum(cache_write_5m_tokens)::int8 AS cache_write_5m_tokens,
        sum(cache_write_1h_tokens)::int8 AS cache_write_1h_tokens,
        sum(cost) AS cost
    FROM usage
    WHERE account_id = $1 AND started_at >= $2 AND started_at < $3
    GROUP BY 1, 2
    ORDER BY 1 DESC, 2";

const SELECT_LEDGER_PAGE: &str = "
    SELECT id, created_at, kind, amount, balance_after, usage_count, reason, change_id
    FROM ledger
    WHERE account_id = $1 AND ($2::int8 IS NULL OR id < $2)
    ORDER BY id DESC
    LIMIT $3";

const KEY_OF_ACCOUNT: &str = "SELECT 1 FROM api_keys WHERE id = $1 AND account_id = $2";

/// What an account has spent, flushed: every balance change but usage, less the stored
/// balance (which is the sum of all of them), so that only the few credit-like entries are
/// read (a partial index holds them), never the usage rows.
const SELECT_USED: &str = "
    SELECT (SELECT coalesce(sum(amount), 0) FROM ledger
            WHERE account_id = $1 AND kind <> 'usage') - balance AS used
    FROM accounts WHERE id = $1";

/// Which of an account's usage rows to read.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub model: Option<String>,
    pub key_id: Option<Uuid>,
}

/// Where a page of usage starts: just after the row with this start time and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageCursor {
    pub started_at: DateTime<Utc>,
    pub request_id: Uuid,
}

#[derive(Debug, Clone)]
pub struct UsageEntry {
    pub request_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub model: String,
    pub key_id: Uuid,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cost: Decimal,
    pub outcome: String,
}

impl UsageEntry {
    pub fn cursor(&self) -> UsageCursor {
        UsageCursor {
            started_at: self.started_at,
            request_id: self.request_id,
        }
    }

    /// From the request's start to its settlement, in whole milliseconds.
    pub fn latency_ms(&self) -> i64 {
        (self.finished_at - self.started_at)
            .num_milliseconds()
            .max(0)
    }
}

/// One day's (UTC) usage of one model.
#[derive(Debug, Clone)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cost: Decimal,
}

/// One change of a balance, as the books hold it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub kind: String,
    pub amount: Decimal,
    pub balance_after: Decimal,
    /// How many usage rows a `usage` entry sums.
    pub usage_count: Option<i32>,
    pub reason: Option<String>,
    pub change_id: Option<Uuid>,
}

impl PgStore {
    /// At most `limit` usage rows of the account, newest first, after `cursor`.
    pub async fn usage_page(
        &self,
        account_id: Uuid,
        filter: &UsageFilter,
        cursor: Option<UsageCursor>,
        limit: i64,
    ) -> Result<Vec<UsageEntry>, DbError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(SELECT_USAGE_PAGE).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &account_id,
                    &filter.from,
                    &filter.to,
                    &filter.model,
                    &cursor.map(|c| c.started_at),
                    &cursor.map(|c| c.request_id),
                    &filter.key_id,
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(usage_entry).collect()
    }

    /// The account's usage between `from` and `to`, summed by UTC day and model.
    pub async fn daily_usage(
        &self,
        account_id: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DailyUsage>, DbError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(SELECT_DAILY, &[&account_id, &from, &to])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DailyUsage {
                    day: column(row, "day")?,
                    model: column(row, "model")?,
                    requests: column(row, "requests")?,
                    input_tokens: column(row, "input_tokens")?,
                    output_tokens: column(row, "output_tokens")?,
                    cache_read_tokens: column(row, "cache_read_tokens")?,
                    cache_write_5m_tokens: column(row, "cache_write_5m_tokens")?,
                    cache_write_1h_tokens: column(row, "cache_write_1h_tokens")?,
                    cost: column(row, "cost")?,
                })
            })
            .collect()
    }

    /// At most `limit` ledger entries of the account, newest first, below id `before`.
    pub async fn ledger_page(
        &self,
        account_id: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<LedgerEntry>, DbError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(SELECT_LEDGER_PAGE, &[&account_id, &before, &limit])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LedgerEntry {
                    id: column(row, "id")?,
                    created_at: column(row, "created_at")?,
                    kind: column(row, "kind")?,
                    amount: column(row, "amount")?,
                    balance_after: column(row, "balance_after")?,
                    usage_count: column(row, "usage_count")?,
                    reason: column(row, "reason")?,
                    change_id: column(row, "change_id")?,
                })
            })
            .collect()
    }

    /// Whether the key is one of the account's own (revoked or not).
    pub async fn key_of_account(&self, key_id: Uuid, account_id: Uuid) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(KEY_OF_ACCOUNT, &[&key_id, &account_id])
            .await?;
        Ok(row.is_some())
    }

    /// What the account has spent in all, as flushed.
    pub async fn account_used(&self, account_id: Uuid) -> Result<Decimal, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(SELECT_USED, &[&account_id]).await?;
        row.map_or(Ok(Decimal::ZERO), |row| column(&row, "used"))
    }
}

fn usage_entry(row: &Row) -> Result<UsageEntry, DbError> {
    Ok(UsageEntry {
        request_id: column(row, "request_id")?,
        started_at: column(row, "started_at")?,
        finished_at: column(row, "finished_at")?,
        model: column(row, "model")?,
        key_id: column(row, "key_id")?,
        input_tokens: column(row, "input_tokens")?,
        output_tokens: column(row, "output_tokens")?,
        cache_read_tokens: column(row, "cache_read_tokens")?,
        cache_write_5m_tokens: column(row, "cache_write_5m_tokens")?,
        cache_write_1h_tokens: column(row, "cache_write_1h_tokens")?,
        cost: column(row, "cost")?,
        outcome: column(row, "outcome")?,
    })
}
