//! `/api/v1/recharges`: the customer's recharge orders (docs/PAYMENTS.md). An order locks the
//! rate in force when it is made; its USD is CNY ÷ rate, half-even to 6 decimals. Every route
//! reads only the session's own orders: another account's order id is answered as unknown.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::AccountStatus;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::extract::Session;
use crate::http::json::json_body;
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, SessionUnauthorized, Unavailable,
};
use crate::http::AppState;
use crate::payments::{self, epay};
use crate::store::{NewOrder, OrderRow};

/// Orders a list answers at most.
const PAGE: i64 = 100;
/// Pending orders one account may have at once: enough for a retry or two, few enough that
/// no account can bury everyone's orders in the re-query.
const MAX_PENDING: i64 = 10;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecharge {
    /// CNY to pay: a decimal string with at most 2 decimals, within the operator's minimum
    /// and maximum.
    #[schema(value_type = String, example = "100.00")]
    amount_cny: serde_json::Value,
    /// `epay` (an EPay gateway) or `webhook` (any other provider the operator connected).
    #[schema(example = "epay")]
    method: String,
    /// For `epay`: `alipay` (the default) or `wxpay`.
    #[schema(example = "alipay")]
    channel: Option<String>,
}

/// A recharge order.
#[derive(Debug, Serialize, ToSchema)]
pub struct RechargeAnswer {
    pub id: Uuid,
    /// `pending`, `paid` or `expired`.
    #[schema(example = "pending")]
    pub status: String,
    pub method: String,
    pub channel: Option<String>,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "100.00")]
    pub amount_cny: Decimal,
    /// The rate the order locked when it was made.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "7.2")]
    pub cny_per_usd: Decimal,
    /// What it credits: `amount_cny` ÷ `cny_per_usd`, rounded half-even to 6 decimals.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "13.888889")]
    pub amount_usd: Decimal,
    /// Where to pay: the gateway's page for `epay`; `null` for `webhook`, whose provider the
    /// operator's own site leads to.
    pub pay_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Set when a payment was reported that could not be credited (another amount, after
    /// expiry): an operator reviews it.
    pub under_review: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RechargeList {
    pub data: Vec<RechargeAnswer>,
}

fn answer(state: &AppState, order: OrderRow) -> RechargeAnswer {
    let pay_url = (order.method == "epay" && order.status == "pending")
        .then(|| epay_pay_url(state, &order))
        .flatten();
    RechargeAnswer {
        id: order.id,
        status: order.status,
        method: order.method,
        channel: order.channel,
        amount_cny: order.amount_cny,
        cny_per_usd: order.cny_per_usd.normalize(),
        amount_usd: order.amount_usd.normalize(),
        pay_url,
        expires_at: order.expires_at,
        paid_at: order.paid_at,
        created_at: order.created_at,
        under_review: order.review_reason.is_some(),
    }
}

/// The signed `submit.php` link of an EPay order.
fn epay_pay_url(state: &AppState, order: &OrderRow) -> Option<String> {
    let settings = &state.settings.payments;
    if !settings.epay_enabled() {
        return None;
    }
    let base = state.settings.public_url();
    let notify_url = format!("{base}/api/v1/payments/epay/notify");
    let return_url = format!("{base}/console/recharge?order={}", order.id);
    Some(epay::pay_url(
        &settings.epay,
        &epay::PayRequest {
            order_id: order.id,
            channel: order.channel.as_deref().unwrap_or("alipay"),
            amount_cny: order.amount_cny,
            notify_url: &notify_url,
            return_url: &return_url,
        },
    ))
}

/// The CNY amount of a new order: a decimal string, positive, at most 2 decimals, within the
/// operator's bounds.
fn parse_cny(value: &serde_json::Value, min: Decimal, max: Decimal) -> Result<Decimal, ApiError> {
    let invalid = |problem: String| ApiError::field("amount_cny", problem);
    let text = value
        .as_str()
        .ok_or_else(|| invalid("must be a decimal string, such as \"100.00\"".into()))?;
    let amount = epay::plain_decimal(text)
        .ok_or_else(|| invalid("not a positive decimal number in plain notation".into()))?;
    if amount <= Decimal::ZERO {
        return Err(invalid("must be greater than 0".into()));
    }
    if amount.normalize().scale() > 2 {
        return Err(invalid("at most 2 decimals (fen)".into()));
    }
    if amount < min || amount > max {
        return Err(invalid(format!(
            "must be between {} and {} CNY",
            min.normalize(),
            max.normalize()
        )));
    }
    Ok(amount)
}

#[utoipa::path(
    post,
    path = "/api/v1/recharges",
    operation_id = "create_recharge",
    tag = "payments",
    summary = "Create a recharge order",
    description = "Locks the current rate. Pay at `pay_url`; the order becomes `paid` once the provider's payment is verified, and its USD is credited once.",
    request_body = CreateRecharge,
    responses(
        (status = 201, description = "The order", body = RechargeAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    ),
    security(("customer_session" = [])),
)]
pub async fn create(
    session: Session,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let input: CreateRecharge = json_body(&raw)?;
    let settings = &state.settings.payments;
    let amount_cny = parse_cny(&input.amount_cny, settings.min_cny, settings.max_cny)?;
    let (method, channel) = match input.method.as_str() {
        "epay" => {
            let channel = input.channel.unwrap_or_else(|| "alipay".to_owned());
            if channel != "alipay" && channel != "wxpay" {
                return Err(ApiError::field("channel", "must be alipay or wxpay"));
            }
            if !settings.epay_enabled() {
                return Err(ApiError::Unavailable(
                    "EPay payments are not set up on this service".into(),
                ));
            }
            ("epay", Some(channel))
        }
        "webhook" => {
            if settings.webhook.secret.is_empty() {
                return Err(ApiError::Unavailable(
                    "webhook payments are not set up on this service".into(),
                ));
            }
            let channel = input.channel.filter(|c| !c.trim().is_empty());
            if channel.as_ref().is_some_and(|c| c.chars().count() > 64) {
                return Err(ApiError::field("channel", "at most 64 characters"));
            }
            ("webhook", channel)
        }
        _ => return Err(ApiError::field("method", "must be epay or webhook")),
    };
    let account = state
        .store
        .account(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    if account.status != AccountStatus::Active {
        return Err(ApiError::Forbidden(
            "the account is suspended or being deleted: no new orders",
        ));
    }
    let pending = state
        .store
        .pending_orders_of(session.account_id)
        .await
        .map_err(ApiError::internal)?;
    if pending >= MAX_PENDING {
        return Err(ApiError::Conflict(format!(
            "{MAX_PENDING} orders are pending already: pay one, or wait for them to expire"
        )));
    }
    let rate = payments::current_rate(&state.store, settings)
        .await
        .map_err(ApiError::internal)?;
    let amount_usd = payments::usd_for(amount_cny, rate.cny_per_usd)
        .filter(|usd| *usd > Decimal::ZERO)
        .ok_or_else(|| ApiError::field("amount_cny", "too small to credit anything"))?;
    let ttl = i64::try_from(settings.order_ttl_secs).unwrap_or(i64::MAX);
    let order = NewOrder {
        id: Uuid::now_v7(),
        account_id: session.account_id,
        method,
        channel,
        amount_cny: amount_cny.normalize(),
        cny_per_usd: rate.cny_per_usd,
        amount_usd,
        expires_at: Utc::now() + Duration::seconds(ttl),
    };
    let created = state
        .store
        .create_order(&order)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(
        order_id = %created.id,
        account_id = %created.account_id,
        amount_cny = %created.amount_cny,
        method,
        "recharge order created"
    );
    Ok(HttpResponse::Created().json(answer(&state, created)))
}

#[utoipa::path(
    get,
    path = "/api/v1/recharges",
    operation_id = "list_recharges",
    tag = "payments",
    summary = "The customer's recharge orders, newest first",
    params(("before" = Option<DateTime<Utc>>, Query, description = "Only orders made before this time: the `created_at` of the last order of the previous page")),
    responses(
        (status = 200, description = "At most 100 orders", body = RechargeList),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
    ),
    security(("customer_session" = [])),
)]
pub async fn list(
    session: Session,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let orders = state
        .store
        .orders_of(session.account_id, query.before, PAGE)
        .await
        .map_err(ApiError::internal)?;
    let data = orders
        .into_iter()
        .map(|order| answer(&state, order))
        .collect();
    Ok(HttpResponse::Ok().json(RechargeList { data }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    before: Option<DateTime<Utc>>,
}

#[utoipa::path(
    get,
    path = "/api/v1/recharges/{id}",
    operation_id = "get_recharge",
    tag = "payments",
    summary = "One recharge order",
    params(("id" = Uuid, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = RechargeAnswer),
        (status = 401, response = SessionUnauthorized),
        (status = 404, response = NotFound),
    ),
    security(("customer_session" = [])),
)]
pub async fn get(
    session: Session,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound("recharge order"))?;
    let order = state
        .store
        .order(id)
        .await
        .map_err(ApiError::internal)?
        .filter(|order| order.account_id == session.account_id)
        .ok_or(ApiError::NotFound("recharge order"))?;
    Ok(HttpResponse::Ok().json(answer(&state, order)))
}
