//! `/api/v1/me`: the customer's own account, and its password.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::Fields;
use crate::accounts::{verify_password, Password};
use crate::http::error::ApiError;
use crate::http::extract::{client_ip, Session};
use crate::http::AppState;
use tollgate_actors::EngineError;

const MAX_PASSWORD_CHARS: usize = 1024;

/// `GET /api/v1/me`: the stored account with the live view of its money, from its actor, so
/// that it shows what the proxy enforces.
pub async fn me(session: Session, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let row = state
        .store
        .customer(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    let view = state
        .engine
        .view(row.id)
        .await
        .map_err(|error| match error {
            EngineError::AccountNotFound => ApiError::Unauthorized("a valid session is required"),
            other => ApiError::internal(other),
        })?;
    Ok(HttpResponse::Ok().json(json!({
        "id": row.id,
        "email": row.email,
        // The actor's status is the one the proxy enforces (a suspension applies at once).
        "status": view.status.as_str(),
        "email_verified": row.email_verified,
        "balance": view.balance.normalize().to_string(),
        "held": view.held.normalize().to_string(),
        "available": (view.balance - view.held).normalize().to_string(),
        "invite_code": row.invite_code,
        "language": row.language,
        "created_at": row.created_at,
    })))
}

/// `PUT /api/v1/me/password {"current_password","new_password"}` → 204: every other session
/// ends, so a session someone else holds does not outlive the change.
pub async fn change_password(
    req: HttpRequest,
    session: Session,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["current_password", "new_password"])?;
    let current = body
        .required("current_password", MAX_PASSWORD_CHARS)?
        .to_string();
    let new = Password::new(body.required("new_password", MAX_PASSWORD_CHARS)?)
        .map_err(|error| ApiError::field("new_password", error))?;
    let row = state
        .store
        .customer(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    // A stolen session must not make guessing the password cheaper than the login does.
    let ip = client_ip(&req, &state.settings.server.trusted_proxies);
    let throttle = &state.customers.logins;
    throttle
        .check(ip, &row.email)
        .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
    let stored = state
        .store
        .password_hash(row.id)
        .await
        .map_err(ApiError::internal)?;
    if !verify_password(current, stored)
        .await
        .map_err(ApiError::internal)?
    {
        throttle
            .fail(ip, &row.email)
            .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
        return Err(ApiError::field(
            "current_password",
            "is not this account's password",
        ));
    }
    let hash = new.hash().await.map_err(ApiError::internal)?;
    state
        .store
        .change_password(row.id, &hash, Some(&session.token_hash))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(account = %row.id, "password changed; other sessions revoked");
    Ok(HttpResponse::NoContent().finish())
}
