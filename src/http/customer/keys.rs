//! `/api/v1/keys`: the customer's own API keys. Creating one takes the same fields and refuses
//! the same mistakes as the admin route (both call [`create_key`]); the full key is in the
//! creation answer and nowhere else. Every route reads and changes only the session's own
//! keys: another account's key id is answered as unknown (404).

use actix_web::{web, HttpResponse};
use serde_json::json;
use tollgate_actors::AccountStatus;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::Session;
use crate::http::json::json_body;
use crate::http::keys::{create_key, CreateKeyRequest, KeyView};
use crate::http::AppState;

/// `POST /api/v1/keys` → 201 with the full key, this once. An account whose email is not
/// verified gets none while `accounts.require_email_verification` is on ([`create_key`]).
pub async fn create(
    session: Session,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let input: CreateKeyRequest = json_body(&raw)?;
    let account = state
        .store
        .account(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    if account.status != AccountStatus::Active {
        // Suspended by an operator, or being deleted: no new credential.
        return Err(ApiError::Forbidden(
            "the account is suspended or being deleted: no new keys",
        ));
    }
    let created = create_key(&state, &account, input).await?;
    tracing::info!(account = %account.id, key = %created.row.id, "customer created an API key");
    Ok(HttpResponse::Created().json(created.to_json()))
}

/// `GET /api/v1/keys` → `{"data":[...]}`: names, prefixes, policies, spend and last use.
pub async fn list(session: Session, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state
        .store
        .keys(session.account_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .json(json!({ "data": keys.iter().map(KeyView::from).collect::<Vec<_>>() })))
}

/// `DELETE /api/v1/keys/{id}` → 204: the key is refused from the next proxied request on. A
/// key that is not this account's, or is already revoked, is 404.
pub async fn revoke(
    session: Session,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let key_id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound("active key"))?;
    let digest = state
        .store
        .revoke_key(session.account_id, key_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound("active key"))?;
    state.keys.remove(&digest);
    tracing::info!(account = %session.account_id, key = %key_id, "customer revoked an API key");
    Ok(HttpResponse::NoContent().finish())
}
