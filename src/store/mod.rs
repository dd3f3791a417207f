//! The Postgres store: connection pool, migrations, and the named queries of every table.
//! It implements the engine's [`LedgerStore`], the only path by which balances change on disk.

mod queries;

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;
use tollgate_actors::store::{BatchOutcome, LedgerStore, StoreError};
use tollgate_actors::AccountLimits;
use tollgate_actors::{AccountId, AccountRecord, AccountStatus, BalanceChange, UsageRecord};
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Rows per statement of the idempotent flush. One flush is still one transaction; this only
/// bounds the size of each statement's arrays.
const FLUSH_CHUNK: usize = 5_000;
/// A paced flush inserts its rows in parts of about this many rows...
const ROWS_PER_FLUSH_PART: usize = 32;
/// ...but in no more parts than this, so that a large batch is not paced into many short
/// sleeps (the timer's resolution is a millisecond).
const MAX_FLUSH_PARTS: usize = 16;

/// How long to wait for a connection (from the pool or a new one).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Server-side cap on any one statement, set on every connection.
const STATEMENT_TIMEOUT_OPTION: &str = "-c statement_timeout=60000";

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Over how long a flush spreads its inserts ([`PgStore::with_flush_spread`]).
    flush_spread: std::time::Duration,
}

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

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("{0} already exists")]
    Conflict(&'static str),
}

impl DbError {
    fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Query(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        StoreError(error.to_string())
    }
}

impl PgStore {
    /// Spreads each flush's inserts over `spread`, in parts, inside the flush's one
    /// transaction: the same work, in shorter bursts. Half the flush interval leaves the
    /// other half for the debits and the commit before the next flush is due.
    pub fn with_flush_spread(mut self, spread: std::time::Duration) -> PgStore {
        self.flush_spread = spread;
        self
    }

    pub fn connect(url: &str, pool_size: usize) -> Result<PgStore, DbError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| DbError::Config(e.to_string()))?;
        if config.get_options().is_none() {
            // No statement may hang the flusher or an admin request indefinitely.
            config.options(STATEMENT_TIMEOUT_OPTION);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| DbError::Config(e.to_string()))?;
        Ok(PgStore {
            pool,
            flush_spread: std::time::Duration::ZERO,
        })
    }

    /// Creates the database named in `url` if it is missing, connecting to the server's
    /// `postgres` database to do so.
    pub async fn create_database_if_missing(url: &str) -> Result<bool, DbError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| DbError::Config(e.to_string()))?;
        let name = config
            .get_dbname()
            .ok_or_else(|| DbError::Config("database.url names no database".into()))?
            .to_string();
        config.dbname("postgres");
        let (client, connection) = config.connect(NoTls).await?;
        let driver = tokio::spawn(connection);
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            let quoted = name.replace('"', "\"\"");
            client
                .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
                .await?;
        }
        drop(client);
        let _ = driver.await;
        Ok(!exists)
    }

    /// Applies every migration in `sql/` that has not been applied yet.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let mut client = self.pool.get().await?;
        let report = embedded::migrations::runner()
            .run_async(&mut **client)
            .await?;
        Ok(report.applied_migrations().len())
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

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
                queries::INSERT_ACCOUNT,
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
        let row = client.query_opt(queries::SELECT_ACCOUNT, &[&id]).await?;
        Ok(row.as_ref().map(account_row))
    }

    pub async fn account_by_email(&self, email: &str) -> Result<Option<AccountRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(queries::SELECT_ACCOUNT_BY_EMAIL, &[&email])
            .await?;
        Ok(row.as_ref().map(account_row))
    }

    pub async fn set_limits(&self, id: Uuid, limits: &AccountLimits) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                queries::UPDATE_LIMITS,
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
            .query_one(
                queries::INSERT_KEY,
                &[&id, &account_id, &name, &prefix, &digest],
            )
            .await?;
        Ok(key_row(&row))
    }

    pub async fn keys(&self, account_id: Uuid) -> Result<Vec<KeyRow>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(queries::SELECT_KEYS, &[&account_id]).await?;
        Ok(rows.iter().map(key_row).collect())
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
            .query_opt(queries::REVOKE_KEY, &[&account_id, &key_id])
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn active_keys(&self) -> Result<Vec<ActiveKey>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(queries::SELECT_ACTIVE_KEYS, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| ActiveKey {
                digest: row.get(0),
                key_id: row.get(1),
                account_id: row.get(2),
            })
            .collect())
    }

    /// Writes a batch in one transaction, first paced (see [`PgStore::with_flush_spread`]).
    /// A batch that was written before, wholly or partly (its first attempt timed out after
    /// the commit, say), fails the paced attempt's plain inserts with a unique violation,
    /// which rolls it back, and is then written again by the one statement that skips stored
    /// request ids.
    async fn write_usage(&self, batch: &[UsageRecord]) -> Result<u64, DbError> {
        match self.write_usage_paced(batch).await {
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
    /// [`ROWS_PER_FLUSH_PART`] rows each and normally at most [`MAX_FLUSH_PARTS`] of them,
    /// spread over `flush_spread`; then every account's debit and ledger entry; then the
    /// commit. A flush of a busy interval is several milliseconds of Postgres work; done at
    /// once, it takes a core from the request path on a small machine, and the requests that
    /// arrive meanwhile wait (docs/BENCHMARKS.md, Finding 11).
    pub async fn write_usage_paced(&self, batch: &[UsageRecord]) -> Result<u64, DbError> {
        let mut client = self.pool.get().await?;
        let insert = client.prepare_cached(queries::INSERT_USAGE).await?;
        let debit = client.prepare_cached(queries::DEBIT_FLUSHED_USAGE).await?;
        let tx = client.transaction().await?;
        let parts = batch
            .len()
            .div_ceil(ROWS_PER_FLUSH_PART)
            .clamp(1, MAX_FLUSH_PARTS);
        // A backlog (the ledger was down) may need more, bounded, parts.
        let part_len = batch.len().div_ceil(parts).clamp(1, FLUSH_CHUNK);
        let pause = self.flush_spread / batch.len().div_ceil(part_len).max(1) as u32;
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
        tx.commit().await?;
        Ok(usage_counts(&rows))
    }

    /// The idempotent flush: one statement per chunk inserts the rows not stored yet and
    /// debits only what it inserted.
    async fn write_usage_idempotent(&self, batch: &[UsageRecord]) -> Result<u64, DbError> {
        let mut client = self.pool.get().await?;
        let statement = client.prepare_cached(queries::FLUSH_USAGE).await?;
        let tx = client.transaction().await?;
        let mut inserted = 0u64;
        for chunk in batch.chunks(FLUSH_CHUNK) {
            let rows = tx
                .query(&statement, &UsageColumns::from(chunk).params())
                .await?;
            inserted += usage_counts(&rows);
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// The sum of the `usage_count` column of a flush statement's rows.
fn usage_counts(rows: &[tokio_postgres::Row]) -> u64 {
    rows.iter()
        .map(|row| u64::try_from(row.get::<_, i32>(0)).unwrap_or(0))
        .sum()
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
        }
    }
}

impl UsageColumns<'_> {
    /// The statement parameters `$1` to `$17`, in the order the flush statements declare.
    fn params(&self) -> [&(dyn ToSql + Sync); 17] {
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
        ]
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

fn key_row(row: &tokio_postgres::Row) -> KeyRow {
    KeyRow {
        id: row.get("id"),
        account_id: row.get("account_id"),
        name: row.get("name"),
        prefix: row.get("prefix"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

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
                queries::APPLY_BALANCE_CHANGE,
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
            .execute(queries::SET_STATUS, &[&id, &status.as_str(), &reason])
            .await
            .map_err(DbError::from)?;
        Ok(())
    }

    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        let inserted = self.write_usage(batch).await?;
        Ok(BatchOutcome { inserted })
    }
}
