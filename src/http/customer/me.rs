//! `/api/v1/me`: the customer's own account, and its password.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Fields;
use crate::accounts::{verify_password, Password};
use crate::http::error::ApiError;
use crate::http::extract::{client_ip, Session};
use crate::http::openapi::bodies::ChangePasswordBody;
use crate::http::openapi::{BadRequest, PayloadTooLarge, SessionUnauthorized, TooManyFailures};
use crate::http::AppState;
use tollgate_actors::EngineError;

const MAX_PASSWORD_CHARS: usize = 1024;

/// The customer's account as `GET /api/v1/me` shows it.
#[derive(Serialize, ToSchema)]
pub struct Me {
    id: Uuid,
    email: String,
    /// The status the proxy enforces now (a suspension applies at once).
    #[schema(example = "active")]
    status: &'static str,
    email_verified: bool,
    /// Credits minus every settled debit, flushed or not.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "20")]
    balance: Decimal,
    /// Held for requests in flight.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.05")]
    held: Decimal,
    /// `balance` minus `held`: what new requests may spend.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "19.95")]
    available: Decimal,
    /// The code that invites others on this account's behalf.
    invite_code: String,
    /// The language of the account's emails, `en` or `zh`.
    language: String,
    created_at: DateTime<Utc>,
}

/// `GET /api/v1/me`: the stored account with the live view of its money, from its actor, so
/// that it shows what the proxy enforces.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    operation_id = "get_me",
    tag = "account",
    summary = "Read the account and its live balance",
    responses(
        (status = 200, description = "The account", body = Me),
        (status = 401, response = SessionUnauthorized),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
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
    Ok(HttpResponse::Ok().json(Me {
        id: row.id,
        email: row.email,
        // The actor's status is the one the proxy enforces (a suspension applies at once).
        status: view.status.as_str(),
        email_verified: row.email_verified,
        balance: view.balance.normalize(),
        held: view.held.normalize(),
        available: (view.balance - view.held).normalize(),
        invite_code: row.invite_code,
        language: row.language,
        created_at: row.created_at,
    }))
}

/// `PUT /api/v1/me/password {"current_password","new_password"}` → 204: every other session
/// ends, so a session someone else holds does not outlive the change.
#[utoipa::path(
    put,
    path = "/api/v1/me/password",
    operation_id = "change_password",
    tag = "account",
    summary = "Change the password",
    request_body = ChangePasswordBody,
    responses(
        (status = 204, description = "Changed; every other session has ended"),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
    ),
    security(("customer_session" = [])),
)]
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
