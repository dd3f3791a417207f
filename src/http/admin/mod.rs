//! The operator's API under `/admin/v1`, one file per resource. Every route sits behind
//! [`crate::http::extract::require_admin`], which checks the bearer token before any handler
//! runs or any body is read. Money in and out is a decimal string.

pub mod accounts;
pub mod balance;
pub mod codes;
pub mod flush;
pub mod invitations;
pub mod keys;
pub mod payments;
pub mod referrals;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_actors::{AccountLimits, AccountStatus, AccountView, EngineError};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::json::json_body;
use super::AppState;
use crate::store::{AccountRow, DbError};

/// An id from the path; one that is not a UUID names nothing that exists.
fn parse_id(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(what))
}

fn engine_error(error: EngineError) -> ApiError {
    match error {
        EngineError::AccountNotFound => ApiError::NotFound("account"),
        other => ApiError::internal(other),
    }
}

fn db_error(error: DbError) -> ApiError {
    match error {
        DbError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
        other => ApiError::internal(other),
    }
}

async fn stored_account(state: &AppState, id: Uuid) -> Result<AccountRow, ApiError> {
    state
        .store
        .account(id)
        .await
        .map_err(db_error)?
        .ok_or(ApiError::NotFound("account"))
}

/// A stored account that can still change: a deleted one is final (409).
async fn open_account(state: &AppState, id: Uuid) -> Result<AccountRow, ApiError> {
    let row = stored_account(state, id).await?;
    if row.status == AccountStatus::Deleted {
        return Err(ApiError::Conflict(
            "the account was deleted by its owner and cannot change".into(),
        ));
    }
    Ok(row)
}

/// The account as the admin API shows it: stored fields and the live view of its money.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountAnswer {
    pub id: Uuid,
    pub email: String,
    /// `active` or `suspended`, as the proxy enforces it now.
    #[schema(example = "active")]
    pub status: &'static str,
    /// Credits minus every settled debit, flushed or not.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "12.5")]
    pub balance: Decimal,
    /// The sum of the holds of requests in flight.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0")]
    pub held: Decimal,
    pub active_requests: u32,
    #[schema(value_type = crate::http::openapi::Limits)]
    pub limits: AccountLimits,
    pub created_at: DateTime<Utc>,
}

fn account_json(row: &AccountRow, view: &AccountView) -> AccountAnswer {
    AccountAnswer {
        id: row.id,
        email: row.email.clone(),
        status: view.status.as_str(),
        balance: view.balance.normalize(),
        held: view.held.normalize(),
        active_requests: view.active_requests,
        limits: view.limits,
        created_at: row.created_at,
    }
}

/// The account's stored row and live view.
async fn account_answer(state: &AppState, row: &AccountRow) -> Result<AccountAnswer, ApiError> {
    let view = state.engine.view(row.id).await.map_err(engine_error)?;
    Ok(account_json(row, &view))
}
