//! An account's API keys: create (the full key is shown once), list (prefixes and policies
//! only), revoke.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{db_error, json_body, open_account, parse_id, stored_account};
use crate::http::error::ApiError;
use crate::http::keys::{create_key, CreateKeyRequest, KeyView};
use crate::http::AppState;

/// `POST /admin/v1/accounts/{id}/keys`: the full key is in this response and nowhere else.
/// The body takes the same fields as the customer's `POST /api/v1/keys`
/// ([`CreateKeyRequest`]).
pub async fn create(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path, "account")?;
    let input: CreateKeyRequest = json_body(&raw)?;
    let account = open_account(&state, account_id).await?;
    let created = create_key(&state, &account, input).await?;
    Ok(HttpResponse::Created().json(created.to_json()))
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
