//! `GET /api/v1/referrals`: the customer's invitation code and link, how many accounts
//! registered with it, and the rewards they earned (docs/PAYMENTS.md, "Referrals"). An
//! invitee is never named: the inviter sees counts and amounts only.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::Session;
use crate::http::openapi::SessionUnauthorized;
use crate::http::AppState;

#[derive(Serialize, ToSchema)]
pub struct Reward {
    pub id: Uuid,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.5")]
    pub amount_usd: Decimal,
    /// `pending` (being credited), `held` (for an operator's review), `paid` or `reversed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct Referrals {
    pub invite_code: String,
    /// The registration link that carries the code.
    pub invite_url: String,
    /// Accounts registered with the code.
    pub invitees: i64,
    pub rewards: Vec<Reward>,
    /// Paid to this account.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "1.5")]
    pub earned_usd: Decimal,
    /// Waiting for an operator.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0")]
    pub held_usd: Decimal,
    /// Taken back by an operator after it was paid.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0")]
    pub reversed_usd: Decimal,
}

#[utoipa::path(
    get,
    path = "/api/v1/referrals",
    operation_id = "referrals",
    tag = "payments",
    summary = "The customer's invitation code, invitees and rewards",
    responses(
        (status = 200, description = "The referrals", body = Referrals),
        (status = 401, response = SessionUnauthorized),
    ),
    security(("customer_session" = [])),
)]
pub async fn referrals(
    session: Session,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let account = state
        .store
        .customer(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    let (invitees, rows) = state
        .store
        .referrals_of(session.account_id)
        .await
        .map_err(ApiError::internal)?;
    let (earned_usd, held_usd, reversed_usd) = state
        .store
        .reward_totals(session.account_id)
        .await
        .map_err(ApiError::internal)?;
    let rewards = rows
        .into_iter()
        .map(|row| Reward {
            id: row.id,
            amount_usd: row.amount_usd.normalize(),
            status: row.status,
            created_at: row.created_at,
            paid_at: row.paid_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(Referrals {
        invite_url: format!(
            "{}/register?invite={}",
            state.settings.public_url(),
            account.invite_code
        ),
        invite_code: account.invite_code,
        invitees,
        rewards,
        earned_usd: earned_usd.normalize(),
        held_usd: held_usd.normalize(),
        reversed_usd: reversed_usd.normalize(),
    }))
}
