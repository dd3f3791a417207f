//! The operator's API under `/admin/v1`, one file per resource. Every route sits behind
//! [`crate::http::extract::require_admin`], which checks the bearer token before any handler
//! runs or any body is read. Money in and out is a decimal string.

pub mod accounts;
pub mod balance;
pub mod flush;
pub mod keys;

use serde_json::json;
use tollgate_actors::{AccountStatus, AccountView, EngineError};
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
fn account_json(row: &AccountRow, view: &AccountView) -> serde_json::Value {
    json!({
        "id": row.id,
        "email": row.email,
        "status": view.status.as_str(),
        "balance": view.balance.normalize().to_string(),
        "held": view.held.normalize().to_string(),
        "active_requests": view.active_requests,
        "limits": view.limits,
        "created_at": row.created_at,
    })
}

/// The account's stored row and live view, answered as JSON.
async fn account_answer(state: &AppState, row: &AccountRow) -> Result<serde_json::Value, ApiError> {
    let view = state.engine.view(row.id).await.map_err(engine_error)?;
    Ok(account_json(row, &view))
}
