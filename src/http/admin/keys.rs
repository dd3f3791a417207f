//! An account's API keys: create (the full key is shown once), list (prefixes and policies
//! only), revoke.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{db_error, json_body, open_account, parse_id, stored_account};
use crate::http::error::ApiError;
use crate::http::keys::{create_key, CreateKeyRequest, CreatedKeyAnswer, KeyList};
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, Conflict, NotFound, PayloadTooLarge,
    TooManyFailures,
};
use crate::http::AppState;

/// A key revoked by an operator.
#[derive(Serialize, ToSchema)]
pub struct RevokedKey {
    id: Uuid,
    /// Always `true`.
    revoked: bool,
}

/// `POST /admin/v1/accounts/{id}/keys`: the full key is in this response and nowhere else.
/// The body takes the same fields as the customer's `POST /api/v1/keys`
/// ([`CreateKeyRequest`]).
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/keys",
    operation_id = "admin_create_key",
    tag = "admin: keys",
    summary = "Create an API key for an account",
    params(("id" = Uuid, Path, description = "The account id")),
    request_body(content = Option<CreateKeyRequest>, description = "Every field may be left out, and so may the body"),
    responses(
        (status = 201, description = "The key, with the full key shown this once", body = CreatedKeyAnswer,
            links(("revoke" = (operation_id = "admin_revoke_key", parameters(("id" = "$request.path.id"), ("key_id" = "$response.body#/id")))))
        ),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn create(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path, "account")?;
    let input: CreateKeyRequest = json_body(&raw)?;
    let account = open_account(&state, account_id).await?;
    let created = create_key(&state, &account, input).await?;
    Ok(HttpResponse::Created().json(created.answer()))
}

/// `GET /admin/v1/accounts/{id}/keys`: prefixes only.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/keys",
    operation_id = "admin_list_keys",
    tag = "admin: keys",
    summary = "List an account's API keys",
    params(("id" = Uuid, Path, description = "The account id")),
    responses(
        (status = 200, description = "Every key of the account, revoked ones too", body = KeyList),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account_id = parse_id(&path, "account")?;
    stored_account(&state, account_id).await?;
    let keys = state.store.keys(account_id).await.map_err(db_error)?;
    Ok(HttpResponse::Ok().json(KeyList::of(&keys)))
}

/// `DELETE /admin/v1/accounts/{id}/keys/{key_id}`: refused from the next request on.
#[utoipa::path(
    delete,
    path = "/admin/v1/accounts/{id}/keys/{key_id}",
    operation_id = "admin_revoke_key",
    tag = "admin: keys",
    summary = "Revoke an API key",
    params(
        ("id" = Uuid, Path, description = "The account id"),
        ("key_id" = Uuid, Path, description = "The key id"),
    ),
    responses(
        (status = 200, description = "The key is refused from the next request on", body = RevokedKey),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
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
    Ok(HttpResponse::Ok().json(RevokedKey {
        id: key_id,
        revoked: true,
    }))
}
