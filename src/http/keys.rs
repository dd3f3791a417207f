//! Creating an API key with its policy, and showing one: shared by the admin API
//! (`POST /admin/v1/accounts/{id}/keys`) and the customer API (`POST /api/v1/keys`), so both
//! accept the same fields and refuse the same mistakes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::json::money_option;
use super::AppState;
use crate::accounts::{ApiKeySecret, KeyPolicy, KeyPolicyInput};
use crate::auth::KeyOwner;
use crate::store::{AccountRow, DbError, KeyRow};

/// A key's name is a label for its owner; this bounds what is stored and shown.
const MAX_KEY_NAME_CHARS: usize = 100;

/// The body of a key-creation request: a name and the optional policy fields of the contract.
/// Unknown fields are refused, so a misspelt policy is never silently dropped.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A label for the key's owner.
    #[schema(max_length = 100)]
    pub name: Option<String>,
    /// The model ids (or aliases) of the rate card the key may call; absent allows every one.
    #[schema(min_items = 1, max_items = 100)]
    pub models: Option<Vec<String>>,
    /// Addresses or CIDR networks (`203.0.113.0/24`) the key may be used from.
    #[schema(min_items = 1, max_items = 100)]
    pub allowed_ips: Option<Vec<String>>,
    /// From this instant on the key is refused; it must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// Most the key may spend per UTC day, a decimal string of at most 6 fractional digits.
    #[serde(default, deserialize_with = "money_option::deserialize")]
    #[schema(value_type = Option<String>, example = "5.00")]
    pub daily_spend_usd: Option<Decimal>,
    /// Most the key may spend over its life, a decimal string.
    #[serde(default, deserialize_with = "money_option::deserialize")]
    #[schema(value_type = Option<String>, example = "100")]
    pub total_spend_usd: Option<Decimal>,
    /// At most the account's own limit; 0 or absent inherits it.
    pub requests_per_minute: Option<u32>,
    /// At most the account's own limit; 0 or absent inherits it.
    pub tokens_per_minute: Option<u32>,
    /// At most the account's own limit; 0 or absent inherits it.
    pub max_concurrent: Option<u32>,
}

/// A key as listed: its prefix and policy, never the key.
#[derive(Serialize, ToSchema)]
pub struct KeyView<'a> {
    id: Uuid,
    name: &'a str,
    /// The start of the key, enough to recognise it.
    prefix: &'a str,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    policy: &'a KeyPolicy,
    /// What the key has spent, as flushed (behind the live figure by at most a flush interval).
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    spent_usd: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String)]
    spent_today_usd: Decimal,
    /// When the key's latest flushed request started; `null` before its first.
    last_used_at: Option<DateTime<Utc>>,
}

/// `{"data":[...]}`: an account's keys, as both APIs list them.
#[derive(Serialize, ToSchema)]
pub struct KeyList<'a> {
    pub data: Vec<KeyView<'a>>,
}

impl<'a> KeyList<'a> {
    pub fn of(keys: &'a [KeyRow]) -> KeyList<'a> {
        KeyList {
            data: keys.iter().map(KeyView::from).collect(),
        }
    }
}

/// The creation response: the listed view plus the full key, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKeyAnswer<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    /// The whole key (`sk-tg-...`). It is in this answer and nowhere else.
    key: &'a str,
}

impl<'a> From<&'a KeyRow> for KeyView<'a> {
    fn from(key: &'a KeyRow) -> Self {
        KeyView {
            id: key.id,
            name: &key.name,
            prefix: &key.prefix,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
            policy: &key.policy,
            spent_usd: key.spent_usd.normalize(),
            spent_today_usd: key.spent_today_usd.normalize(),
            last_used_at: key.last_used_at,
        }
    }
}

/// A key just created: the one answer that shows the whole key.
pub struct CreatedKey {
    pub row: KeyRow,
    /// Shown once, in the creation response; never stored or logged.
    pub secret: ApiKeySecret,
}

impl CreatedKey {
    /// The creation response: the listed view plus the full key.
    pub fn answer(&self) -> CreatedKeyAnswer<'_> {
        CreatedKeyAnswer {
            view: KeyView::from(&self.row),
            key: self.secret.expose(),
        }
    }
}

/// The most unrevoked keys one account may hold: far more than any customer's tools need,
/// and a bound on what one account keeps in the in-memory key ring.
pub const MAX_ACTIVE_KEYS: i64 = 100;

const UNVERIFIED: &str = "the account's email address is not verified: API keys are issued \
     once the link sent at registration has been followed";

/// Checks `request` against the account and now, stores the key, and makes it usable at once
/// (its policy in the in-memory lookup). A refused field changes nothing: validation runs
/// before anything is written. While `accounts.require_email_verification` is on, an account
/// whose email is not verified gets no key, from either API, so it cannot call the proxy
/// (accounts an operator created count as verified).
pub async fn create_key(
    state: &AppState,
    account: &AccountRow,
    request: CreateKeyRequest,
) -> Result<CreatedKey, ApiError> {
    if state.settings.accounts.require_email_verification {
        let verified = state
            .store
            .customer(account.id)
            .await
            .map_err(ApiError::internal)?
            .is_some_and(|customer| customer.email_verified);
        if !verified {
            return Err(ApiError::Forbidden(UNVERIFIED));
        }
    }
    let name = request.name.unwrap_or_default();
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(ApiError::field(
            "name",
            format!("at most {MAX_KEY_NAME_CHARS} characters"),
        ));
    }
    let input = KeyPolicyInput {
        models: request.models,
        allowed_ips: request.allowed_ips,
        expires_at: request.expires_at,
        daily_spend_usd: request.daily_spend_usd,
        total_spend_usd: request.total_spend_usd,
        requests_per_minute: request.requests_per_minute,
        tokens_per_minute: request.tokens_per_minute,
        max_concurrent: request.max_concurrent,
    };
    let policy = input
        .validate(Utc::now(), &account.limits, |id| {
            state.card.model(id).map(|card| card.id.clone())
        })
        .map_err(|refused| ApiError::field(refused.field, refused.problem))?;
    let active = state
        .store
        .active_key_count(account.id)
        .await
        .map_err(ApiError::internal)?;
    if active >= MAX_ACTIVE_KEYS {
        return Err(ApiError::Conflict(format!(
            "the account has {active} active keys, the most it may hold: revoke one first"
        )));
    }
    let key = state.keys.generate();
    let row = state
        .store
        .create_key(account.id, &name, &key.prefix, &key.digest, &policy)
        .await
        .map_err(|error| match error {
            DbError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::internal(other),
        })?;
    state
        .keys
        .insert(key.digest, KeyOwner::new(row.id, account.id, policy));
    Ok(CreatedKey {
        row,
        secret: key.secret,
    })
}
