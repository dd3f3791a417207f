//! Referral rewards for operators (docs/PAYMENTS.md, "Referrals"): the held ones to review,
//! approving one (it is then credited through the inviter's actor), and reversing any (a
//! paid one is debited back through the actor, and may take the balance below zero, after
//! which the account admits nothing until it is topped up).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::{BalanceChange, ChangeApplied, CreditKind, Settles};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{json_body, parse_id};
use crate::http::error::ApiError;
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, Conflict, NotFound, PayloadTooLarge,
};
use crate::http::AppState;
use crate::store::RewardRow;

/// Rewards a list answers at most.
const PAGE: i64 = 500;

#[derive(Serialize, ToSchema)]
pub struct RewardAnswer {
    pub id: Uuid,
    pub inviter_id: Uuid,
    pub invitee_id: Uuid,
    /// The recharge that earned it; `null` when a redemption did
    /// (`payments.redemption_counts_as_first_recharge`).
    pub order_id: Option<Uuid>,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.5")]
    pub amount_usd: Decimal,
    /// `pending`, `held`, `paid` or `reversed`.
    pub status: String,
    /// Why it was held, or reversed.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

impl From<RewardRow> for RewardAnswer {
    fn from(row: RewardRow) -> RewardAnswer {
        RewardAnswer {
            id: row.id,
            inviter_id: row.inviter_id,
            invitee_id: row.invitee_id,
            order_id: row.order_id,
            amount_usd: row.amount_usd.normalize(),
            status: row.status,
            reason: row.hold_reason,
            created_at: row.created_at,
            paid_at: row.paid_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RewardList {
    pub data: Vec<RewardAnswer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reverse {
    /// Why: recorded on the reward and in the inviter's ledger.
    reason: String,
}

#[utoipa::path(
    get,
    path = "/admin/v1/referral-rewards",
    operation_id = "admin_list_referral_rewards",
    tag = "admin: payments",
    summary = "Referral rewards, newest first",
    params(("status" = Option<String>, Query, description = "Only rewards of this status: pending, held, paid or reversed")),
    responses(
        (status = 200, description = "At most 500 rewards", body = RewardList),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let status = query.status.as_deref();
    if status.is_some_and(|s| !["pending", "held", "paid", "reversed"].contains(&s)) {
        return Err(ApiError::field(
            "status",
            "must be pending, held, paid or reversed",
        ));
    }
    let rows = state
        .store
        .rewards(status, PAGE)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(RewardList {
        data: rows.into_iter().map(RewardAnswer::from).collect(),
    }))
}

async fn stored_reward(state: &AppState, id: Uuid) -> Result<RewardRow, ApiError> {
    state
        .store
        .reward(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound("referral reward"))
}

#[utoipa::path(
    post,
    path = "/admin/v1/referral-rewards/{id}/approve",
    operation_id = "admin_approve_referral_reward",
    tag = "admin: payments",
    summary = "Approve a held reward: it is credited to the inviter",
    params(("id" = Uuid, Path, description = "The reward id")),
    responses(
        (status = 200, description = "The reward, paid", body = RewardAnswer),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn approve(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "referral reward")?;
    let reward = stored_reward(&state, id).await?;
    if reward.status == "held" {
        state
            .store
            .move_reward(id, "held", "pending", None)
            .await
            .map_err(ApiError::internal)?;
    }
    // Read again: a reverse may have come first.
    let current = stored_reward(&state, id).await?;
    if current.status == "reversed" {
        return Err(ApiError::Conflict("the reward was reversed".into()));
    }
    // Pending: credited now; paid: sent again, which credits nothing and settles a write of
    // the actor's whose answer was lost.
    if !crate::payments::pay_reward(&state.engine, &current).await {
        return Err(ApiError::Unavailable(
            "the reward is approved, and its credit could not be written now: the background job retries".into(),
        ));
    }
    tracing::info!(reward_id = %id, "referral reward approved");
    Ok(HttpResponse::Ok().json(RewardAnswer::from(stored_reward(&state, id).await?)))
}

#[utoipa::path(
    post,
    path = "/admin/v1/referral-rewards/{id}/reverse",
    operation_id = "admin_reverse_referral_reward",
    tag = "admin: payments",
    summary = "Reverse a reward",
    description = "A held reward is cancelled. A paid one is debited from the inviter with a `referral_reversal` ledger entry, through the account's actor; if the inviter spent it, the balance goes below zero and the account admits nothing until it is topped up. Idempotent.",
    params(("id" = Uuid, Path, description = "The reward id")),
    request_body = Reverse,
    responses(
        (status = 200, description = "The reward, reversed", body = RewardAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn reverse(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "referral reward")?;
    let input: Reverse = json_body(&raw)?;
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::field("reason", "1 to 500 characters"));
    }
    let reward = stored_reward(&state, id).await?;
    match reward.status.as_str() {
        // Never paid: nothing to send again.
        "reversed" if reward.paid_at.is_none() => {}
        "held" | "pending" => {
            let from = reward.status.as_str();
            // Conditional: a credit that wins the race leaves it paid, and the answer says so.
            let cancelled = state
                .store
                .move_reward(id, from, "reversed", Some(&reason))
                .await
                .map_err(ApiError::internal)?;
            if !cancelled {
                return Err(ApiError::Conflict(
                    "the reward changed meanwhile; ask again".into(),
                ));
            }
        }
        // Paid, or reversed after it was paid (sent again: it debits nothing more, and
        // settles a write of the actor's whose answer was lost).
        _ => {
            let change = BalanceChange {
                // Derived from the reward, so that a reward is reversed once however often
                // this is asked.
                id: Uuid::new_v5(&reward.id, b"referral-reversal"),
                account_id: reward.inviter_id,
                kind: CreditKind::ReferralReversal,
                amount: -reward.amount_usd,
                // The customer reads the ledger: the operator's reason stays on the reward.
                reason: "referral reward reversed by the operator".into(),
                idempotency: None,
                settles: Some(Settles::ReferralReversal {
                    reward_id: reward.id,
                    reason: reason.clone(),
                }),
            };
            let changed = state.engine.apply_change(change).await.map_err(|error| {
                tracing::warn!(reward_id = %id, %error, "reversing a referral reward failed");
                ApiError::Unavailable("the reversal could not be written now; retry".into())
            })?;
            if changed.applied == ChangeApplied::Refused {
                return Err(ApiError::Conflict(
                    "the reward changed meanwhile; ask again".into(),
                ));
            }
        }
    }
    tracing::info!(reward_id = %id, reason = %reason, "referral reward reversed");
    Ok(HttpResponse::Ok().json(RewardAnswer::from(stored_reward(&state, id).await?)))
}
