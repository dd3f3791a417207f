//! `/api/v1/me`: the customer's own account, and its password.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use std::time::{Duration, Instant};

use super::Fields;
use crate::accounts::{verify_password, Password};
use crate::http::error::ApiError;
use crate::http::extract::{client_ip, Session};
use crate::http::openapi::bodies::{ChangePasswordBody, DeleteAccountBody};
use crate::http::openapi::{
    BadRequest, Conflict, PayloadTooLarge, SessionUnauthorized, TooManyFailures, Unavailable,
};
use crate::http::AppState;
use crate::store::CustomerRow;
use tollgate_actors::{AccountStatus, EngineError, ForfeitRefused};

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
    let row = confirm_password(&req, &session, &state, "current_password", current).await?;
    let hash = new.hash().await.map_err(ApiError::internal)?;
    state
        .store
        .change_password(row.id, &hash, Some(&session.token_hash))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(account = %row.id, "password changed; other sessions revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// The session's account, once `password` (sent as `field`) is found to be its password.
/// Wrong guesses are throttled as logins are: a stolen session must not make guessing the
/// password cheaper than the login does.
async fn confirm_password(
    req: &HttpRequest,
    session: &Session,
    state: &AppState,
    field: &'static str,
    password: String,
) -> Result<CustomerRow, ApiError> {
    let row = state
        .store
        .customer(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    let ip = client_ip(req, &state.settings.server.trusted_proxies);
    let throttle = &state.customers.logins;
    throttle
        .check(ip, &row.email)
        .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
    let stored = state
        .store
        .password_hash(row.id)
        .await
        .map_err(ApiError::internal)?;
    if !verify_password(password, stored)
        .await
        .map_err(ApiError::internal)?
    {
        throttle
            .fail(ip, &row.email)
            .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
        return Err(ApiError::field(field, "is not this account's password"));
    }
    Ok(row)
}

/// How long deletion waits for the account's running requests to finish before answering
/// 409: long enough for a non-streaming answer, short of a client's patience.
const DELETION_WAIT: Duration = Duration::from_secs(20);

/// `DELETE /api/v1/me {"password"}` → 204: the account is closed for good
/// (docs/adr/0021-account-deletion.md).
///
/// In this order, each step safe to repeat if a later one fails (the customer's session
/// lasts until the last): an account that owes money is refused (409); the account is
/// suspended, so nothing new is admitted; every key is revoked; the requests still running
/// are waited for (409 after 20 s, `DELETION_WAIT`: their settles must reach the balance before
/// it is written off); settled usage is flushed (503 if the ledger cannot be written); the
/// actor writes off the whole balance with a `forfeiture` ledger entry and sets the status
/// `deleted`, in one transaction; and the email, password, sessions, emailed tokens and any
/// key made meanwhile go. Usage and ledger rows stay for the books.
#[utoipa::path(
    delete,
    path = "/api/v1/me",
    operation_id = "delete_account",
    tag = "account",
    summary = "Delete the account",
    description = "Revokes every key and session, forfeits the balance (a `forfeiture` ledger entry) and frees the email; usage and ledger rows stay. 409 if the account owes money or requests are still running after 20 s; retry then.",
    request_body = DeleteAccountBody,
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = Unavailable),
    ),
    security(("customer_session" = [])),
)]
pub async fn delete(
    req: HttpRequest,
    session: Session,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = Fields::parse(&raw, &["password"])?;
    let password = body.required("password", MAX_PASSWORD_CHARS)?.to_string();
    let row = confirm_password(&req, &session, &state, "password", password).await?;
    let id = row.id;
    if row.status != AccountStatus::Deleted {
        if let Err(error) = close(&state, id).await {
            // A deletion running at the same time may have closed it meanwhile.
            let closed = state
                .store
                .customer(id)
                .await
                .map_err(ApiError::internal)?
                .is_some_and(|row| row.status == AccountStatus::Deleted);
            if !closed {
                return Err(error);
            }
        }
    }
    if !state
        .store
        .anonymize_deleted(id)
        .await
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::internal(
            "a deleted account was not found to anonymize",
        ));
    }
    // A key created while the deletion ran (from another session) goes too.
    revoke_keys(&state, id).await?;
    tracing::info!(account = %id, "customer deleted the account");
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_keys(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    for digest in state
        .store
        .revoke_all_keys(id)
        .await
        .map_err(ApiError::internal)?
    {
        state.keys.remove(&digest);
    }
    Ok(())
}

/// Every step of a deletion up to the status `deleted`.
async fn close(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let engine = &state.engine;
    let owed = engine.view(id).await.map_err(ApiError::internal)?.balance;
    if owed < Decimal::ZERO {
        return Err(owes(-owed));
    }
    engine
        .set_status(
            id,
            AccountStatus::Suspended,
            "closing: deleted by its owner".into(),
        )
        .await
        .map_err(ApiError::internal)?;
    revoke_keys(state, id).await?;
    let deadline = Instant::now() + DELETION_WAIT;
    loop {
        let running = engine
            .view(id)
            .await
            .map_err(ApiError::internal)?
            .active_requests;
        if running == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(still_running(running as usize));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What settled goes to the ledger first, so that the forfeiture's entry shows the
    // balance after it as zero.
    if !engine.flusher().flush_now().await {
        return Err(ApiError::Unavailable(
            "the ledger cannot be written right now; retry the deletion shortly".into(),
        ));
    }
    let forfeited = engine
        .close(id, "account deleted by its owner".into())
        .await
        .map_err(|refused| match refused {
            ForfeitRefused::Running(running) => still_running(running),
            ForfeitRefused::Debt(owed) => owes(owed),
            ForfeitRefused::Unconfirmed => ApiError::Unavailable(
                "a balance change of this account is not confirmed yet; retry the deletion \
                 shortly"
                    .into(),
            ),
            other => ApiError::internal(other),
        })?;
    tracing::info!(account = %id, forfeited = %forfeited.amount, "account closed");
    Ok(())
}

fn owes(amount: Decimal) -> ApiError {
    ApiError::Conflict(format!(
        "the account owes {} USD: settle it before deleting the account",
        amount.normalize()
    ))
}

fn still_running(running: usize) -> ApiError {
    ApiError::Conflict(format!(
        "{running} requests of this account are still running; its keys are revoked, so \
         none will start: retry the deletion when they finish"
    ))
}
