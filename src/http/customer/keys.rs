//! `/api/v1/keys`: the customer's own API keys. Creating one takes the same fields and refuses
//! the same mistakes as the admin route (both call [`create_key`]); the full key is in the
//! creation answer and nowhere else. Every route reads and changes only the session's own
//! keys: another account's key id is answered as unknown (404).

use actix_web::{web, HttpResponse};
use tollgate_actors::AccountStatus;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::Session;
use crate::http::json::json_body;
use crate::http::keys::{create_key, CreateKeyRequest, CreatedKeyAnswer, KeyList};
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, SessionUnauthorized,
    TooManyFailures,
};
use crate::http::AppState;

/// `POST /api/v1/keys` → 201 with the full key, this once. An account whose email is not
/// verified gets none while `accounts.require_email_verification` is on ([`create_key`]).
#[utoipa::path(
    post,
    path = "/api/v1/keys",
    operation_id = "create_key",
    tag = "keys",
    summary = "Create an API key",
    request_body(content = Option<CreateKeyRequest>, description = "Every field may be left out, and so may the body"),
    responses(
        (status = 201, description = "The key, with the full key shown this once", body = CreatedKeyAnswer,
            links(("revoke" = (operation_id = "revoke_key", parameters(("id" = "$response.body#/id")))))
        ),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
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
    Ok(HttpResponse::Created().json(created.answer()))
}

/// `GET /api/v1/keys` → `{"data":[...]}`: names, prefixes, policies, spend and last use.
#[utoipa::path(
    get,
    path = "/api/v1/keys",
    operation_id = "list_keys",
    tag = "keys",
    summary = "List the account's API keys",
    responses(
        (status = 200, description = "Every key of the account, revoked ones too", body = KeyList),
        (status = 401, response = SessionUnauthorized),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
pub async fn list(session: Session, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys = state
        .store
        .keys(session.account_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(KeyList::of(&keys)))
}

/// `DELETE /api/v1/keys/{id}` → 204: the key is refused from the next proxied request on. A
/// key that is not this account's, or is already revoked, is 404.
#[utoipa::path(
    delete,
    path = "/api/v1/keys/{id}",
    operation_id = "revoke_key",
    tag = "keys",
    summary = "Revoke an API key",
    params(("id" = Uuid, Path, description = "The key id")),
    responses(
        (status = 204, description = "The key is refused from the next proxied request on"),
        (status = 401, response = SessionUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
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
