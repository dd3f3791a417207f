//! The Postgres store: the connection pool, migrations, and one file per table or aggregate,
//! each with its SQL beside it as named statements.
//!
//! - `accounts`: account rows (email, status, balance, limits).
//! - `customers`: what customer self-service stores: registrations, sessions, emailed tokens.
//! - `outbox`: emails stored with what they announce, sent later with retries.
//! - `history`: what a customer reads of its past: usage, daily sums, the ledger.
//! - `keys`: API-key rows: only their keyed hashes and display prefixes.
//! - `usage`: the flush of settled usage, paced first, idempotent on a replay.
//! - `ledger`: [`LedgerStore`] for Postgres, the only path by which balances change on disk,
//!   and the `Idempotency-Key` records of operator writes.
//! - `instance`: the lock that keeps a second instance off the same database.
//! - `tls`: Postgres over TLS (rustls) as `database.url`'s `sslmode` asks, in libpq's
//!   meanings.
//!
//! [`LedgerStore`]: tollgate_actors::store::LedgerStore

mod accounts;
mod codes;
mod customers;
mod history;
mod instance;
mod keys;
mod ledger;
mod outbox;
mod payments;
mod tls;
mod usage;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};
use tollgate_actors::store::StoreError;

pub use accounts::AccountRow;
pub use codes::{CodeRow, NewCode};
pub use customers::{CustomerRow, InvitationRow, NewCustomer, TokenPurpose};
pub use history::{DailyUsage, LedgerEntry, UsageCursor, UsageEntry, UsageFilter};
pub use instance::InstanceLock;
pub use keys::{ActiveKey, KeyRow};
pub use ledger::{IdempotencyRecord, StoredAnswer, IDEMPOTENCY_RETENTION_DAYS};
pub use outbox::{OutgoingEmail, QueuedEmail};
pub use payments::{NewOrder, OrderRow, RateRow, RewardRow};
use tls::PgTarget;
pub use tls::Transport;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// How long to wait for a connection (from the pool or a new one).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Server-side cap on any one statement, set on every connection.
const STATEMENT_TIMEOUT_OPTION: &str = "-c statement_timeout=60000";

/// Whether a database of the given name exists on the server.
const DATABASE_EXISTS: &str = "SELECT 1 FROM pg_database WHERE datname = $1";

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Over how long a flush spreads its inserts ([`PgStore::with_flush_spread`]).
    flush_spread: std::time::Duration,
    /// How its connections are secured, as `database.url` asked.
    transport: Transport,
    /// The inviter's reward, as a share of an invitee's first paid recharge
    /// ([`PgStore::with_referral_ratio`]).
    referral_ratio: rust_decimal::Decimal,
    /// Whether a redemption earns the inviter's reward like a first recharge.
    redemption_first_recharge: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// A row lacks a column the code reads, or holds it as another type: the schema and the
    /// code disagree. An error for the one request, never a panic of the worker.
    #[error("database row, column {column}: {source}")]
    Row {
        column: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("migrations: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A one-use-at-a-time thing ran out meanwhile (an invitation code's last use).
    #[error("{0} is used up or expired")]
    Exhausted(&'static str),
    /// Another tollgate serves this database (the argument says which session): a second
    /// one could spend every balance again.
    #[error("another tollgate instance is running against this database ({0}); one instance per database is supported, so stop that one or point this one at another database")]
    AnotherInstance(String),
}

impl DbError {
    fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Query(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

impl From<DbError> for StoreError {
    /// With its causes: the driver's own message (a TLS handshake failed, say) keeps why in
    /// its source, and the flusher's log must say why.
    fn from(error: DbError) -> Self {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        StoreError(text)
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

    /// Rewards an inviter with `ratio` of the invitee's first paid recharge (0: none).
    pub fn with_referral_ratio(mut self, ratio: rust_decimal::Decimal) -> PgStore {
        self.referral_ratio = ratio;
        self
    }

    /// Whether a redeemed code earns the inviter's reward as a first recharge would.
    pub fn with_redemption_as_first_recharge(mut self, counts: bool) -> PgStore {
        self.redemption_first_recharge = counts;
        self
    }

    /// A pool of connections to `url`, over TLS when its `sslmode` asks
    /// ([`Transport`]). Nothing connects until the first use.
    pub fn connect(url: &str, pool_size: usize) -> Result<PgStore, DbError> {
        let PgTarget {
            mut config,
            tls,
            transport,
        } = PgTarget::from_url(url)?;
        if config.get_options().is_none() {
            // No statement may hang the flusher or an admin request indefinitely.
            config.options(STATEMENT_TIMEOUT_OPTION);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Some(tls) => Manager::from_config(config, tls, recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
        tracing::debug!(%transport, "database connections");
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
            transport,
            referral_ratio: rust_decimal::Decimal::ZERO,
            redemption_first_recharge: false,
        })
    }

    /// Creates the database named in `url` if it is missing, connecting to the server's
    /// `postgres` database to do so. The connection's driver task is awaited on every path,
    /// so none outlives the call.
    pub async fn create_database_if_missing(url: &str) -> Result<bool, DbError> {
        let mut target = PgTarget::from_url(url)?;
        let name = target
            .config
            .get_dbname()
            .ok_or_else(|| DbError::Config("database.url names no database".into()))?
            .to_string();
        target.config.dbname("postgres");
        let (client, connection) = target.connect().await?;
        let driver = tokio::spawn(connection);
        let created = async {
            let exists = client.query_opt(DATABASE_EXISTS, &[&name]).await?.is_some();
            if !exists {
                client.batch_execute(&create_database(&name)).await?;
            }
            Ok(!exists)
        }
        .await;
        // The driver returns once its last client is gone.
        drop(client);
        let _ = driver.await;
        created
    }

    /// Applies every migration in `sql/` that has not been applied yet.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let mut client = self.pool.get().await?;
        let report = embedded::migrations::runner()
            .run_async(&mut **client)
            .await?;
        Ok(report.applied_migrations().len())
    }

    /// How the connections are secured, as `database.url` asked.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// Reads the column `name` of `row`, as a [`DbError::Row`] if it is missing or does not
/// convert to `T`.
fn column<'a, T: FromSql<'a>>(row: &'a Row, name: &'static str) -> Result<T, DbError> {
    row.try_get(name).map_err(|source| DbError::Row {
        column: name,
        source,
    })
}

/// `CREATE DATABASE` takes no parameters, so the name is quoted as an identifier.
fn create_database(name: &str) -> String {
    let quoted = name.replace('"', "\"\"");
    format!("CREATE DATABASE \"{quoted}\"")
}

#[cfg(test)]
pub(crate) mod tests {
    /// A connection to the test server's `postgres` database, for statements that read no
    /// table (`TOLLGATE_TEST_POSTGRES`, as the integration tests use).
    pub(crate) async fn server() -> tokio_postgres::Client {
        let base = std::env::var("TOLLGATE_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let (client, connection) =
            tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
    }
}
