//! The operator's side of money in (docs/PAYMENTS.md): the exchange rate and its history, and
//! confirming a recharge order by hand.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::PaymentPath;
use utoipa::ToSchema;

use super::{json_body, parse_id};
use crate::http::error::ApiError;
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, Conflict, NotFound, PayloadTooLarge,
};
use crate::http::AppState;
use crate::payments::{self, Credited};

/// Who set a rate through the bootstrap token (admin users come with the operator issue).
const TOKEN_ACTOR: &str = "admin token";
/// The range a rate is accepted in.
const MIN_RATE: Decimal = Decimal::from_parts(1, 0, 0, false, 2);
const MAX_RATE: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
/// Rates the history answers at most.
const HISTORY: i64 = 500;

#[derive(Serialize, ToSchema)]
pub struct RateAnswer {
    /// CNY per USD.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "7.2")]
    pub cny_per_usd: Decimal,
    /// `admin` (set through this API) or `config` (`payments.cny_per_usd`, no rate set yet).
    pub source: &'static str,
    pub set_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct RateHistoryEntry {
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "7.2")]
    pub cny_per_usd: Decimal,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct RateHistory {
    pub data: Vec<RateHistoryEntry>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRate {
    /// A positive decimal string with at most 6 fractional digits.
    #[schema(value_type = String, example = "7.1835")]
    cny_per_usd: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/admin/v1/exchange-rate",
    operation_id = "admin_get_exchange_rate",
    tag = "admin: payments",
    summary = "The exchange rate new orders lock",
    responses(
        (status = 200, description = "The rate", body = RateAnswer),
        (status = 401, response = AdminUnauthorized),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn get_rate(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rate = payments::current_rate(&state.store, &state.settings.payments)
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(RateAnswer {
        cny_per_usd: rate.cny_per_usd,
        source: rate.source,
        set_at: rate.set_at,
    }))
}

#[utoipa::path(
    put,
    path = "/admin/v1/exchange-rate",
    operation_id = "admin_set_exchange_rate",
    tag = "admin: payments",
    summary = "Set the exchange rate",
    description = "Applies to orders made from now on; a pending order keeps the rate it locked.",
    request_body = SetRate,
    responses(
        (status = 200, description = "The new rate", body = RateAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn set_rate(
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let input: SetRate = json_body(&raw)?;
    let invalid = |problem: &str| ApiError::field("cny_per_usd", problem);
    let text = input
        .cny_per_usd
        .as_str()
        .ok_or_else(|| invalid("must be a decimal string, such as \"7.2\""))?;
    let rate = crate::payments::epay::plain_decimal(text)
        .ok_or_else(|| invalid("not a decimal number in plain notation"))?;
    if rate <= Decimal::ZERO {
        return Err(invalid("must be greater than 0"));
    }
    if rate.normalize().scale() > 6 {
        return Err(invalid("at most 6 fractional digits"));
    }
    // A plausible range, so that a slipped digit cannot make a yuan worth a fortune.
    if rate < MIN_RATE || rate > MAX_RATE {
        return Err(invalid("must be between 0.01 and 10000"));
    }
    let row = state
        .store
        .set_rate(rate.normalize(), TOKEN_ACTOR)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(cny_per_usd = %row.cny_per_usd, "exchange rate set");
    Ok(HttpResponse::Ok().json(RateAnswer {
        cny_per_usd: row.cny_per_usd.normalize(),
        source: "admin",
        set_at: Some(row.set_at),
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/exchange-rate/history",
    operation_id = "admin_exchange_rate_history",
    tag = "admin: payments",
    summary = "Every rate set, newest first",
    responses(
        (status = 200, description = "At most 500 rates", body = RateHistory),
        (status = 401, response = AdminUnauthorized),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn rate_history(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = state
        .store
        .rate_history(HISTORY)
        .await
        .map_err(ApiError::internal)?;
    let data = rows
        .into_iter()
        .map(|row| RateHistoryEntry {
            cny_per_usd: row.cny_per_usd.normalize(),
            set_by: row.set_by,
            set_at: row.set_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(RateHistory { data }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// The payment's reference at its provider (a bank transfer's number, say): a repeat
    /// with the same reference changes nothing.
    provider_ref: String,
    /// Why it is confirmed by hand.
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConfirmAnswer {
    pub order_id: uuid::Uuid,
    /// `paid`.
    pub status: &'static str,
    /// Whether this confirmation credited it (false: it was paid already under this
    /// reference).
    pub credited: bool,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "13.888889")]
    pub amount_usd: Decimal,
}

#[utoipa::path(
    post,
    path = "/admin/v1/recharges/{id}/confirm",
    operation_id = "admin_confirm_recharge",
    tag = "admin: payments",
    summary = "Confirm a recharge order by hand",
    description = "Pays a pending (or expired) order and credits it at its locked rate. Idempotent by `provider_ref`; an order paid already under another reference is 409.",
    params(("id" = uuid::Uuid, Path, description = "The order id")),
    request_body = Confirm,
    responses(
        (status = 200, description = "The order is paid", body = ConfirmAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn confirm(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "recharge order")?;
    let input: Confirm = json_body(&raw)?;
    let provider_ref = input.provider_ref.trim().to_owned();
    if provider_ref.is_empty() || provider_ref.chars().count() > 200 {
        return Err(ApiError::field("provider_ref", "1 to 200 characters"));
    }
    let reason = input.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::field("reason", "1 to 500 characters"));
    }
    let order = state
        .store
        .order(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound("recharge order"))?;
    let credited = payments::credit_order(
        &state.engine,
        &state.store,
        &order,
        PaymentPath::Manual,
        "manual".to_owned(),
        provider_ref.clone(),
        Some(reason.clone()),
    )
    .await
    .map_err(|error| {
        tracing::warn!(order_id = %order.id, %error, "confirming a recharge failed");
        ApiError::Unavailable("the credit could not be written now; retry".into())
    })?;
    let credited = match credited {
        Credited::Now => true,
        Credited::Before { same: true } => false,
        Credited::Before { same: false } => {
            return Err(ApiError::Conflict(
                "the order was paid already, under another reference".into(),
            ))
        }
        Credited::Refused => {
            return Err(ApiError::Conflict(
                "the order cannot be paid: its account was deleted, or the reference paid another order already".into(),
            ))
        }
    };
    tracing::info!(order_id = %order.id, credited, reason = %reason, "recharge order confirmed by hand");
    Ok(HttpResponse::Ok().json(ConfirmAnswer {
        order_id: order.id,
        status: "paid",
        credited,
        amount_usd: order.amount_usd.normalize(),
    }))
}
