//! Accounts: create, view, suspend and unsuspend, set limits.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use tollgate_actors::AccountLimits;
use tollgate_actors::AccountStatus;

use super::{
    account_answer, db_error, engine_error, json_body, open_account, parse_id, stored_account,
};
use crate::accounts::{Email, Password};
use crate::http::error::ApiError;
use crate::http::AppState;

/// Limits are stored as Postgres INTEGER.
const MAX_LIMIT: u32 = i32::MAX as u32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    email: String,
    password: Option<String>,
    limits: Option<AccountLimits>,
}

fn check_limits(limits: &AccountLimits) -> Result<(), ApiError> {
    for (field, value) in [
        ("requests_per_minute", limits.requests_per_minute),
        ("tokens_per_minute", limits.tokens_per_minute),
        ("max_concurrent", limits.max_concurrent),
    ] {
        if value > MAX_LIMIT {
            return Err(ApiError::field(
                format!("limits.{field}"),
                format!("at most {MAX_LIMIT} (0 means unlimited)"),
            ));
        }
    }
    Ok(())
}

/// `POST /admin/v1/accounts`
pub async fn create(raw: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let input: CreateAccount = json_body(&raw)?;
    let email = Email::parse(&input.email).map_err(|error| ApiError::field("email", error))?;
    let password = input
        .password
        .as_deref()
        .map(Password::new)
        .transpose()
        .map_err(|error| ApiError::field("password", error))?;
    let limits = input
        .limits
        .unwrap_or_else(|| state.settings.default_limits());
    check_limits(&limits)?;
    let password_hash = match password {
        Some(password) => Some(password.hash().await.map_err(ApiError::internal)?),
        None => None,
    };
    let row = state
        .store
        .create_account(
            email.as_str(),
            password_hash.as_ref().map(|hash| hash.as_str()),
            &limits,
        )
        .await
        .map_err(db_error)?;
    Ok(HttpResponse::Created().json(account_answer(&state, &row).await?))
}

/// `GET /admin/v1/accounts/{id}`: the live view.
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = stored_account(&state, parse_id(&path, "account")?).await?;
    Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    reason: Option<String>,
}

async fn change_status(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
    status: AccountStatus,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "account")?;
    let input: StatusChange = json_body(&raw)?;
    let row = open_account(&state, id).await?;
    state
        .engine
        .set_status(id, status, input.reason.unwrap_or_default())
        .await
        .map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?))
}

/// `POST /admin/v1/accounts/{id}/suspend`: effective for the next request.
pub async fn suspend(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_status(path, raw, state, AccountStatus::Suspended).await
}

/// `POST /admin/v1/accounts/{id}/unsuspend`
pub async fn unsuspend(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_status(path, raw, state, AccountStatus::Active).await
}

/// `PUT /admin/v1/accounts/{id}/limits {"requests_per_minute","tokens_per_minute","max_concurrent"}`
pub async fn set_limits(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "account")?;
    let limits: AccountLimits = json_body(&raw)?;
    check_limits(&limits)?;
    let row = open_account(&state, id).await?;
    state
        .store
        .set_limits(id, &limits)
        .await
        .map_err(db_error)?;
    state
        .engine
        .set_limits(id, limits)
        .await
        .map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?))
}
