//! Accounts: create, view, suspend and unsuspend, set limits.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use tollgate_actors::AccountLimits;
use tollgate_actors::AccountStatus;
use utoipa::ToSchema;

use super::{
    account_answer, db_error, engine_error, json_body, open_account, parse_id, stored_account,
    AccountAnswer,
};
use crate::accounts::{Email, Password};
use crate::http::error::ApiError;
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, Conflict, Limits, NotFound, PayloadTooLarge,
    TooManyFailures,
};
use crate::http::AppState;

/// Limits are stored as Postgres INTEGER.
const MAX_LIMIT: u32 = i32::MAX as u32;

/// An account created by an operator; it counts as email-verified.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    #[schema(
        max_length = 254,
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f.]+(\.[^@\s\x00-\x1f\x7f-\x9f.]+)+$",
        example = "alice@example.com"
    )]
    email: String,
    /// Lets the customer log in to the console; at least 8 characters, letters and digits.
    #[schema(min_length = 8, max_length = 1024)]
    password: Option<String>,
    /// The default tier's limits when absent.
    #[schema(value_type = Option<Limits>)]
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
#[utoipa::path(
    post,
    path = "/admin/v1/accounts",
    operation_id = "admin_create_account",
    tag = "admin: accounts",
    summary = "Create an account",
    request_body = CreateAccount,
    responses(
        (status = 201, description = "The account, with its live view", body = AccountAnswer,
            links(
                ("get" = (operation_id = "admin_get_account", parameters(("id" = "$response.body#/id")))),
                ("credit" = (operation_id = "admin_credit", parameters(("id" = "$response.body#/id")))),
                ("adjust" = (operation_id = "admin_adjust", parameters(("id" = "$response.body#/id")))),
                ("create_key" = (operation_id = "admin_create_key", parameters(("id" = "$response.body#/id")))),
                ("list_keys" = (operation_id = "admin_list_keys", parameters(("id" = "$response.body#/id")))),
                ("suspend" = (operation_id = "admin_suspend", parameters(("id" = "$response.body#/id")))),
                ("unsuspend" = (operation_id = "admin_unsuspend", parameters(("id" = "$response.body#/id")))),
                ("set_limits" = (operation_id = "admin_set_limits", parameters(("id" = "$response.body#/id"))))
            )
        ),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
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
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}",
    operation_id = "admin_get_account",
    tag = "admin: accounts",
    summary = "Read an account's live view",
    params(("id" = Uuid, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account: balance and held as of now", body = AccountAnswer),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let row = stored_account(&state, parse_id(&path, "account")?).await?;
    Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?))
}

/// Why the status changes, for the audit trail; the body may be empty.
#[derive(Deserialize, ToSchema)]
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
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/suspend",
    operation_id = "admin_suspend",
    tag = "admin: accounts",
    summary = "Suspend an account",
    params(("id" = Uuid, Path, description = "The account id")),
    request_body(content = Option<StatusChange>, description = "Optional; an empty body is `{}`"),
    responses(
        (status = 200, description = "The account after the change", body = AccountAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn suspend(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_status(path, raw, state, AccountStatus::Suspended).await
}

/// `POST /admin/v1/accounts/{id}/unsuspend`
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/unsuspend",
    operation_id = "admin_unsuspend",
    tag = "admin: accounts",
    summary = "Lift a suspension",
    params(("id" = Uuid, Path, description = "The account id")),
    request_body(content = Option<StatusChange>, description = "Optional; an empty body is `{}`"),
    responses(
        (status = 200, description = "The account after the change", body = AccountAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn unsuspend(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_status(path, raw, state, AccountStatus::Active).await
}

/// `PUT /admin/v1/accounts/{id}/limits {"requests_per_minute","tokens_per_minute","max_concurrent"}`
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{id}/limits",
    operation_id = "admin_set_limits",
    tag = "admin: accounts",
    summary = "Set an account's limits",
    params(("id" = Uuid, Path, description = "The account id")),
    request_body = Limits,
    responses(
        (status = 200, description = "The account with its new limits", body = AccountAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
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
