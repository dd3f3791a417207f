//! The flush of settled usage: usage rows keyed by request id, each account's debit and its
//! ledger entry, in one transaction. Paced first (docs/adr/0003-paced-flush.md); a batch that
//! was written before is written again by one statement that skips stored request ids
//! (docs/adr/0006-idempotent-flush-plain-insert-first.md).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use tollgate_actors::UsageRecord;
use uuid::Uuid;

use super::{column, DbError, PgStore};

/// Rows per statement of the idempotent flush. One flush is still one transaction; this only
/// bounds the size of each statement's arrays.
const FLUSH_CHUNK: usize = 5_000;
/// A paced flush inserts its rows in parts of about this many rows...
const ROWS_PER_FLUSH_PART: usize = 32;
/// ...but in no more parts than this, so that a large batch is not paced into many short
/// sleeps (the timer's resolution is a millisecond).
const MAX_FLUSH_PARTS: usize = 16;

/// The usage columns a flush writes, in the order of the batch's column arrays.
macro_rules! usage_columns {
    () => {
        "request_id, account_id, key_id, model,
               input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens,
               cache_write_1h_tokens, web_search_requests, web_fetch_requests,
               cost, price_version, long_prompt_tier, outcome, started_at, finished_at,
               estimated, usage_fault"
    };
}

/// The batch's column arrays, `$1` to `$19`, as rows.
macro_rules! unnest_usage {
    () => {
        "UNNEST(
            $1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
            $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
            $12::numeric[], $13::timestamptz[], $14::bool[], $15::text[],
            $16::timestamptz[], $17::timestamptz[], $18::bool[], $19::text[])"
    };
}

/// Given a CTE `sums (account_id, total, n)`: debits each account by `total` and writes its
/// ledger entry for `n` usage rows. Returns one row per account with its row count.
macro_rules! debit_sums {
    () => {
        "
    upd AS (
        UPDATE accounts a SET balance = a.balance - s.total
        FROM sums s WHERE a.id = s.account_id
        RETURNING a.id, a.balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, usage_count, reason)
    SELECT s.account_id, 'usage', -s.total, upd.balance, s.n, 'usage flush'
    FROM sums s JOIN upd ON upd.id = s.account_id
    RETURNING usage_count"
    };
}

/// The idempotent flush, in one statement: rows whose request id is already stored are
/// skipped, and only rows actually inserted contribute to the per-account debits and their
/// ledger entries, so a replayed batch changes nothing. The batch arrives as column arrays.
/// Returns one row per debited account with the number of usage rows it inserted.
const FLUSH_USAGE: &str = concat!(
    "
    WITH ins AS (
        INSERT INTO usage (",
    usage_columns!(),
    ")
        SELECT * FROM ",
    unnest_usage!(),
    "
        ON CONFLICT (request_id) DO NOTHING
        RETURNING account_id, cost
    ),
    sums AS (
        SELECT account_id, sum(cost) AS total, count(*)::int AS n FROM ins GROUP BY account_id
    ),",
    debit_sums!()
);

/// One part of a paced flush: a plain insert of usage rows, inside the flush's transaction.
/// A row already stored fails it with a unique violation, which rolls the flush back. The
/// balances and the ledger follow in [`DEBIT_FLUSHED_USAGE`] once every part is in.
const INSERT_USAGE: &str = concat!(
    "
    INSERT INTO usage (",
    usage_columns!(),
    ")
    SELECT * FROM ",
    unnest_usage!()
);

/// The end of a paced flush: each account's debit (the sum of the costs of the rows the parts
/// inserted for it) and its ledger entry. Returns one row per account with its row count.
const DEBIT_FLUSHED_USAGE: &str = concat!(
    "
    WITH sums AS (
        SELECT * FROM UNNEST($1::uuid[], $2::numeric[], $3::int4[]) AS s(account_id, total, n)
    ),",
    debit_sums!()
);

impl PgStore {
    /// Writes a batch in one transaction, first paced (see [`PgStore::with_flush_spread`]).
    /// A batch that was written before, wholly or partly (its first attempt timed out after
    /// the commit, say), fails the paced attempt's plain inserts with a unique violation,
    /// which rolls it back, and is then written again by the one statement that skips stored
    /// request ids.
    pub(super) async fn write_usage(
        &self,
        batch: &[UsageRecord],
        spread: std::time::Duration,
    ) -> Result<u64, DbError> {
        match self.write_usage_spread(batch, spread).await {
            Err(error) if error.is_unique_violation() => {
                tracing::info!(
                    records = batch.len(),
                    "usage batch holds rows already stored; writing only the new ones"
                );
                self.write_usage_idempotent(batch).await
            }
            written => written,
        }
    }

    /// The first attempt of a flush, public for tests; the flusher calls
    /// [`LedgerStore::write_batch`]. The batch's rows go in as plain inserts, about
    /// `ROWS_PER_FLUSH_PART` rows each and normally at most `MAX_FLUSH_PARTS` of them,
    /// spread over `flush_spread`; then every account's debit and ledger entry; then the
    /// commit. A flush of a busy interval is several milliseconds of Postgres work; done at
    /// once, it takes a core from the request path on a small machine, and the requests that
    /// arrive meanwhile wait (docs/adr/0003-paced-flush.md).
    ///
    /// [`LedgerStore::write_batch`]: tollgate_actors::store::LedgerStore::write_batch
    pub async fn write_usage_paced(&self, batch: &[UsageRecord]) -> Result<u64, DbError> {
        self.write_usage_spread(batch, self.flush_spread).await
    }

    /// The paced attempt, its parts spread over `spread` (zero for a batch with more waiting
    /// behind it, docs/adr/0017-bounded-flush-batches.md).
    async fn write_usage_spread(
        &self,
        batch: &[UsageRecord],
        spread: std::time::Duration,
    ) -> Result<u64, DbError> {
        let mut client = self.pool.get().await?;
        let insert = client.prepare_cached(INSERT_USAGE).await?;
        let debit = client.prepare_cached(DEBIT_FLUSHED_USAGE).await?;
        let tx = client.transaction().await?;
        let parts = batch
            .len()
            .div_ceil(ROWS_PER_FLUSH_PART)
            .clamp(1, MAX_FLUSH_PARTS);
        // A backlog (the ledger was down) may need more, bounded, parts.
        let part_len = batch.len().div_ceil(parts).clamp(1, FLUSH_CHUNK);
        let pause = spread / batch.len().div_ceil(part_len).max(1) as u32;
        for (i, part) in batch.chunks(part_len).enumerate() {
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            tx.execute(&insert, &UsageColumns::from(part).params())
                .await?;
        }
        let debits = AccountDebits::from(batch);
        let rows = tx
            .query(&debit, &[&debits.account_id, &debits.total, &debits.count])
            .await?;
        // Read before the commit: an error must mean that nothing was written.
        let inserted = usage_counts(&rows)?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// The idempotent flush: one statement per chunk inserts the rows not stored yet and
    /// debits only what it inserted.
    async fn write_usage_idempotent(&self, batch: &[UsageRecord]) -> Result<u64, DbError> {
        let mut client = self.pool.get().await?;
        let statement = client.prepare_cached(FLUSH_USAGE).await?;
        let tx = client.transaction().await?;
        let mut inserted = 0u64;
        for chunk in batch.chunks(FLUSH_CHUNK) {
            let rows = tx
                .query(&statement, &UsageColumns::from(chunk).params())
                .await?;
            inserted += usage_counts(&rows)?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// The sum of the `usage_count` column of a flush statement's rows.
fn usage_counts(rows: &[Row]) -> Result<u64, DbError> {
    rows.iter().try_fold(0u64, |sum, row| {
        let count: i32 = column(row, "usage_count")?;
        Ok(sum + u64::try_from(count).unwrap_or(0))
    })
}

/// Per account: the sum of the costs of a batch's rows, and their number.
struct AccountDebits {
    account_id: Vec<Uuid>,
    total: Vec<Decimal>,
    count: Vec<i32>,
}

impl From<&[UsageRecord]> for AccountDebits {
    fn from(batch: &[UsageRecord]) -> Self {
        let mut sums: HashMap<Uuid, (Decimal, i32)> = HashMap::new();
        for record in batch {
            let sum = sums.entry(record.account_id).or_default();
            sum.0 += record.cost;
            sum.1 += 1;
        }
        let mut debits = AccountDebits {
            account_id: Vec::with_capacity(sums.len()),
            total: Vec::with_capacity(sums.len()),
            count: Vec::with_capacity(sums.len()),
        };
        for (account_id, (total, count)) in sums {
            debits.account_id.push(account_id);
            debits.total.push(total);
            debits.count.push(count);
        }
        debits
    }
}

/// A flush chunk as column arrays, for one `UNNEST` statement.
struct UsageColumns<'a> {
    request_id: Vec<Uuid>,
    account_id: Vec<Uuid>,
    key_id: Vec<Uuid>,
    model: Vec<&'a str>,
    input: Vec<i64>,
    output: Vec<i64>,
    cache_read: Vec<i64>,
    cache_5m: Vec<i64>,
    cache_1h: Vec<i64>,
    web_search: Vec<i64>,
    web_fetch: Vec<i64>,
    cost: Vec<Decimal>,
    price_version: Vec<DateTime<Utc>>,
    long_prompt_tier: Vec<bool>,
    outcome: Vec<&'static str>,
    started_at: Vec<DateTime<Utc>>,
    finished_at: Vec<DateTime<Utc>>,
    estimated: Vec<bool>,
    usage_fault: Vec<Option<&'static str>>,
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl<'a> From<&'a [UsageRecord]> for UsageColumns<'a> {
    fn from(chunk: &'a [UsageRecord]) -> Self {
        UsageColumns {
            request_id: chunk.iter().map(|r| r.request_id).collect(),
            account_id: chunk.iter().map(|r| r.account_id).collect(),
            key_id: chunk.iter().map(|r| r.key_id).collect(),
            model: chunk.iter().map(|r| r.model.as_str()).collect(),
            input: chunk.iter().map(|r| tokens(r.usage.input_tokens)).collect(),
            output: chunk
                .iter()
                .map(|r| tokens(r.usage.output_tokens))
                .collect(),
            cache_read: chunk
                .iter()
                .map(|r| tokens(r.usage.cache_read_tokens))
                .collect(),
            cache_5m: chunk
                .iter()
                .map(|r| tokens(r.usage.cache_write_5m_tokens))
                .collect(),
            cache_1h: chunk
                .iter()
                .map(|r| tokens(r.usage.cache_write_1h_tokens))
                .collect(),
            web_search: chunk
                .iter()
                .map(|r| tokens(r.usage.web_search_requests))
                .collect(),
            web_fetch: chunk
                .iter()
                .map(|r| tokens(r.usage.web_fetch_requests))
                .collect(),
            cost: chunk.iter().map(|r| r.cost).collect(),
            price_version: chunk.iter().map(|r| r.price_version).collect(),
            long_prompt_tier: chunk.iter().map(|r| r.long_prompt_tier).collect(),
            outcome: chunk.iter().map(|r| r.outcome.as_str()).collect(),
            started_at: chunk.iter().map(|r| r.started_at).collect(),
            finished_at: chunk.iter().map(|r| r.finished_at).collect(),
            estimated: chunk.iter().map(|r| r.estimated).collect(),
            usage_fault: chunk
                .iter()
                .map(|r| r.usage_fault.map(|fault| fault.as_str()))
                .collect(),
        }
    }
}

impl UsageColumns<'_> {
    /// The statement parameters `$1` to `$19`, in the order the flush statements declare.
    fn params(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.request_id,
            &self.account_id,
            &self.key_id,
            &self.model,
            &self.input,
            &self.output,
            &self.cache_read,
            &self.cache_5m,
            &self.cache_1h,
            &self.web_search,
            &self.web_fetch,
            &self.cost,
            &self.price_version,
            &self.long_prompt_tier,
            &self.outcome,
            &self.started_at,
            &self.finished_at,
            &self.estimated,
            &self.usage_fault,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::server;

    #[tokio::test]
    async fn the_usage_counts_of_a_flush_are_summed_and_a_null_one_is_an_error() {
        let client = server().await;
        let rows = client
            .query(
                "SELECT n AS usage_count FROM (VALUES (2), (3)) AS t(n)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(usage_counts(&rows).unwrap(), 5);
        let null = client
            .query("SELECT NULL::int4 AS usage_count", &[])
            .await
            .unwrap();
        assert!(matches!(
            usage_counts(&null),
            Err(DbError::Row {
                column: "usage_count",
                ..
            })
        ));
    }
}
