//! One tollgate per database. Each instance holds its accounts' balances in memory (the
//! account actors), so a second instance on the same database would admit against a balance
//! the first is already spending: both could spend it whole. Until the multi-node issue adds
//! balance leases, an instance takes a session-level lock at start-up and a second one exits.
//!
//! The lock lives with one dedicated connection, outside the pool, for the instance's whole
//! life: Postgres releases it when that session ends, however the process ends (a crash, or
//! `kill -9`, included). DESIGN.md prefers row locks to advisory locks for portable SQL; no
//! row exists to lock before the first migration, and a row lock cannot outlive a
//! transaction, so this one place uses a session-level advisory lock
//! (docs/adr/0008-one-instance-per-database.md).

use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::tls::PgTarget;
use super::{column, DbError, CONNECT_TIMEOUT};

/// The lock's key: "tollgate" in ASCII, so that it is recognisable in `pg_locks`
/// (`classid` 0x746f6c6c, `objid` 0x67617465).
const INSTANCE_LOCK_KEY: i64 = 0x746f_6c6c_6761_7465;

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1) AS locked";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1) AS unlocked";
/// Who holds the lock, for the message of the instance that did not get it.
const HOLDER: &str = "
    SELECT a.pid, coalesce(host(a.client_addr), 'a local socket') AS client,
           to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.classid = ($1::int8 >> 32)::oid AND l.objid = ($1::int8 & 4294967295)::oid
      AND l.objsubid = 1
    LIMIT 1";

/// This instance's hold on its database. Dropping it ends the session, and with it the lock;
/// [`InstanceLock::release`] gives it back at once and waits until it has.
pub struct InstanceLock {
    client: Client,
    driver: JoinHandle<()>,
}

impl InstanceLock {
    /// Takes the lock on the database of `url`, or fails with [`DbError::AnotherInstance`]
    /// naming the session that holds it.
    pub async fn acquire(url: &str) -> Result<InstanceLock, DbError> {
        let mut target = PgTarget::from_url(url)?;
        target.config.connect_timeout(CONNECT_TIMEOUT);
        target.config.application_name("tollgate instance lock");
        let (client, connection) = target.connect().await?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::error!(%error, "the instance lock's database session ended");
            }
        });
        let lock = InstanceLock { client, driver };
        let row = lock
            .client
            .query_one(TRY_LOCK, &[&INSTANCE_LOCK_KEY])
            .await?;
        if column::<bool>(&row, "locked")? {
            return Ok(lock);
        }
        let holder = lock.holder().await;
        lock.release().await;
        Err(DbError::AnotherInstance(holder))
    }

    /// A description of the session holding the lock, as far as this role may see it.
    async fn holder(&self) -> String {
        let Ok(Some(row)) = self.client.query_opt(HOLDER, &[&INSTANCE_LOCK_KEY]).await else {
            return "another session".into();
        };
        let pid = column::<i32>(&row, "pid").map_or_else(|_| "?".into(), |p| p.to_string());
        let client = column::<String>(&row, "client").unwrap_or_default();
        let since = column::<String>(&row, "since").unwrap_or_default();
        format!("backend pid {pid}, connected from {client} since {since} UTC")
    }

    /// Gives the lock back and closes its session, waiting until both are done, so that an
    /// instance started right after this one stopped finds the database free.
    pub async fn release(self) {
        if let Err(error) = self.client.query_one(UNLOCK, &[&INSTANCE_LOCK_KEY]).await {
            tracing::warn!(%error, "could not release the instance lock; it ends with the session");
        }
        drop(self.client);
        let _ = self.driver.await;
    }
}
