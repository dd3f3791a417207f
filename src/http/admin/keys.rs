//! An account's API keys: create (the full key is shown once), list (prefixes only), revoke.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{db_error, json_body, parse_id, stored_account};
use crate::auth::KeyOwner;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::store::KeyRow;
use uuid::Uuid;

/// A key's name is a label for its owner; this bounds what is stored and shown.
const MAX_KEY_NAME_CHARS: usize = 100;

/// A key as listed: its prefix, never the key.
#[derive(Serialize)]
struct KeyView<'a> {
    id: Uuid,
    name: &'a str,
    prefix: &'a str,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a KeyRow> for KeyView<'a> {
    fn from(key: &'a KeyRow) -> Self {
        KeyView {
            id: key.id,
            name: &key.name,
            prefix: &key.prefix,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A key just created: the one answer that shows the whole key.
#[derive(Serialize)]
struct CreatedKey<'a> {
    #[serde(flatten)]
    view: KeyView<'a>,
    key: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: Option<String>,
}

/// `POST /admin/v1/accounts/{id}/keys`: the full key is in this response and nowhere else.
pub async fn create(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path, "account")?;
    let input: CreateKey = json_body(&raw)?;
    let name = input.name.unwrap_or_default();
    if name.chars().count() > MAX_KEY_NAME_CHARS {
        return Err(ApiError::field("name", "at most 100 characters"));
    }
    stored_account(&state, account_id).await?;
    let key = state.keys.generate();
    let row = state
        .store
        .create_key(account_id, &name, &key.prefix, &key.digest)
        .await
        .map_err(db_error)?;
    state.keys.insert(
        key.digest,
        KeyOwner {
            key_id: row.id,
            account_id,
        },
    );
    Ok(HttpResponse::Created().json(CreatedKey {
        view: KeyView::from(&row),
        key: key.secret.expose(),
    }))
}

/// `GET /admin/v1/accounts/{id}/keys`: prefixes only.
pub async fn list(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path, "account")?;
    stored_account(&state, account_id).await?;
    let keys = state.store.keys(account_id).await.map_err(db_error)?;
    Ok(HttpResponse::Ok()
        .json(json!({ "data": keys.iter().map(KeyView::from).collect::<Vec<_>>() })))
}

/// `DELETE /admin/v1/accounts/{id}/keys/{key_id}`: refused from the next request on.
pub async fn revoke(
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path.0, "account")?;
    let key_id = parse_id(&path.1, "key")?;
    let digest = state
        .store
        .revoke_key(account_id, key_id)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::NotFound("active key"))?;
    state.keys.remove(&digest);
    Ok(HttpResponse::Ok().json(json!({ "id": key_id, "revoked": true })))
}
