//! API-key rows. Only a key's keyed hash (its digest) and display prefix are stored; the key
//! itself never is.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{column, DbError, PgStore};
use tollgate_actors::KeySpent;

use crate::accounts::KeyPolicy;

const INSERT_KEY: &str = "
    INSERT INTO api_keys (id, account_id, name, prefix, digest, models, allowed_ips, expires_at,
        daily_spend_usd, total_spend_usd, requests_per_minute, tokens_per_minute, max_concurrent)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    RETURNING id, account_id, name, prefix, created_at, revoked_at, models, allowed_ips,
        expires_at, daily_spend_usd, total_spend_usd, requests_per_minute, tokens_per_minute,
        max_concurrent, 0::numeric AS spent_usd, 0::numeric AS spent_today_usd,
        NULL::timestamptz AS last_used_at";

/// With what each key spent, in all and since `$2` (the start of the UTC day), and when it was
/// last used, as flushed: both lag the live figures by at most a flush interval, so the last
/// use is recorded in the flush's batches, never by a write per request.
const SELECT_KEYS: &str = "
    SELECT k.id, k.account_id, k.name, k.prefix, k.created_at, k.revoked_at, k.models,
        k.allowed_ips, k.expires_at, k.daily_spend_usd, k.total_spend_usd,
        k.requests_per_minute, k.tokens_per_minute, k.max_concurrent,
        coalesce(s.total, 0) AS spent_usd, coalesce(s.today, 0) AS spent_today_usd,
        s.last_used_at
    FROM api_keys k
    LEFT JOIN LATERAL (
        SELECT sum(u.cost) AS total, sum(u.cost) FILTER (WHERE u.started_at >= $2) AS today,
            max(u.started_at) AS last_used_at
        FROM usage u WHERE u.key_id = k.id
    ) s ON true
    WHERE k.account_id = $1 ORDER BY k.created_at";

const REVOKE_KEY: &str = "
    UPDATE api_keys SET revoked_at = now()
    WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL
    RETURNING digest";

const ACTIVE_KEY_COUNT: &str =
    "SELECT count(*) AS n FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL";

const REVOKE_ALL_KEYS: &str = "
    UPDATE api_keys SET revoked_at = now()
    WHERE account_id = $1 AND revoked_at IS NULL
    RETURNING digest";

const SELECT_ACTIVE_KEYS: &str = "
    SELECT k.digest, k.id, k.account_id, k.models, k.allowed_ips, k.expires_at,
        k.daily_spend_usd, k.total_spend_usd, k.requests_per_minute, k.tokens_per_minute,
        k.max_concurrent
    FROM api_keys k WHERE k.revoked_at IS NULL";

/// What each of an account's keys with a spend cap has spent: in all, and by the requests
/// that started since `$2`, the start of the current UTC day. Only capped keys are summed, and
/// over their own rows (`usage_key_started`), so loading an account with busy uncapped keys
/// costs nothing extra.
const SELECT_KEY_SPENT: &str = "
    SELECT k.id,
        coalesce(sum(u.cost), 0) AS total,
        coalesce(sum(u.cost) FILTER (WHERE u.started_at >= $2), 0) AS today
    FROM api_keys k LEFT JOIN usage u ON u.key_id = k.id
    WHERE k.account_id = $1
      AND (k.daily_spend_usd IS NOT NULL OR k.total_spend_usd IS NOT NULL)
    GROUP BY k.id";

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub policy: KeyPolicy,
    /// Flushed usage of the key, in all and today (UTC).
    pub spent_usd: Decimal,
    pub spent_today_usd: Decimal,
    /// When the key's latest flushed request started.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key as the in-memory lookup needs it.
#[derive(Debug, Clone)]
pub struct ActiveKey {
    pub digest: Vec<u8>,
    pub key_id: Uuid,
    pub account_id: Uuid,
    pub policy: KeyPolicy,
}

impl PgStore {
    pub async fn create_key(
        &self,
        account_id: Uuid,
        name: &str,
        prefix: &str,
        digest: &[u8],
        policy: &KeyPolicy,
    ) -> Result<KeyRow, DbError> {
        let client = self.pool.get().await?;
        let id = Uuid::now_v7();
        let networks: Option<Vec<String>> = policy
            .allowed_ips
            .as_ref()
            .map(|networks| networks.iter().map(ToString::to_string).collect());
        let (rpm, tpm, concurrent) = (
            policy.requests_per_minute as i32,
            policy.tokens_per_minute as i32,
            policy.max_concurrent as i32,
        );
        let row = client
            .query_one(
                INSERT_KEY,
                &[
                    &id,
                    &account_id,
                    &name,
                    &prefix,
                    &digest,
                    &policy.models,
                    &networks,
                    &policy.expires_at,
                    &policy.daily_spend_usd,
                    &policy.total_spend_usd,
                    &rpm,
                    &tpm,
                    &concurrent,
                ],
            )
            .await?;
        key_row(&row)
    }

    pub async fn keys(&self, account_id: Uuid) -> Result<Vec<KeyRow>, DbError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(SELECT_KEYS, &[&account_id, &utc_day_start()])
            .await?;
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

    /// How many unrevoked keys the account holds.
    pub async fn active_key_count(&self, account_id: Uuid) -> Result<i64, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_one(ACTIVE_KEY_COUNT, &[&account_id]).await?;
        column(&row, "n")
    }

    /// Revokes every key of the account; returns their digests for the in-memory lookup to
    /// forget.
    pub async fn revoke_all_keys(&self, account_id: Uuid) -> Result<Vec<Vec<u8>>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(REVOKE_ALL_KEYS, &[&account_id]).await?;
        rows.iter().map(|row| column(row, "digest")).collect()
    }

    /// What the account's capped keys have spent, for its actor to start from.
    pub async fn key_spent(&self, account_id: Uuid) -> Result<Vec<KeySpent>, DbError> {
        let client = self.pool.get().await?;
        let day_start = utc_day_start();
        let day = day_start.date_naive();
        let rows = client
            .query(SELECT_KEY_SPENT, &[&account_id, &day_start])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(KeySpent {
                    key_id: column(row, "id")?,
                    total: column(row, "total")?,
                    today: column(row, "today")?,
                    day,
                })
            })
            .collect()
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
                    policy: key_policy(row)?,
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
        policy: key_policy(row)?,
        spent_usd: column(row, "spent_usd")?,
        spent_today_usd: column(row, "spent_today_usd")?,
        last_used_at: column(row, "last_used_at")?,
    })
}

/// Midnight UTC of today: where a daily spend starts.
fn utc_day_start() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

/// A stored policy. A network that no longer parses leaves an allowlist that admits nothing:
/// a policy that cannot be read fails closed.
fn key_policy(row: &Row) -> Result<KeyPolicy, DbError> {
    let networks: Option<Vec<String>> = column(row, "allowed_ips")?;
    let limit = |name: &'static str| -> Result<u32, DbError> {
        let value: i32 = column(row, name)?;
        Ok(u32::try_from(value).unwrap_or(0))
    };
    Ok(KeyPolicy {
        models: column(row, "models")?,
        allowed_ips: networks.map(|networks| {
            networks
                .iter()
                .filter_map(|network| network.parse().ok())
                .collect()
        }),
        expires_at: column(row, "expires_at")?,
        daily_spend_usd: column::<Option<Decimal>>(row, "daily_spend_usd")?,
        total_spend_usd: column::<Option<Decimal>>(row, "total_spend_usd")?,
        requests_per_minute: limit("requests_per_minute")?,
        tokens_per_minute: limit("tokens_per_minute")?,
        max_concurrent: limit("max_concurrent")?,
    })
}
