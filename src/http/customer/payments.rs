//! The payment providers' callbacks (docs/PAYMENTS.md): EPay's notify and the signed webhook.
//! Neither takes a session; each is believed only once its signature verifies, and then only
//! for an order made for its path, at the order's amount. A report that fails a check changes
//! nothing and is logged without its body or signature.
//!
//! EPay's answer is `success` only once the credit is committed, or when the order was
//! already paid. Anything else is `fail`: with 400 for a notify not signed by the merchant
//! key or for another merchant; with 200 for a verified one that a retry cannot change (a
//! different amount, an expired order, a deleted account, a trade not paid, another path's
//! order; the payments among them held for an operator); with 503 when the database or the
//! account's actor could not be reached, the one case where a retry helps. The webhook: 200
//! for a payment credited now or before under the same reference; 4xx for what a retry
//! cannot change (payments among them held for an operator); 503 to retry.

use std::collections::BTreeMap;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::PaymentPath;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::http::json::json_body;
use crate::http::openapi::{BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable};
use crate::http::AppState;
use crate::payments::{self, epay, webhook, Credited};
use crate::store::OrderRow;

fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// The parameters of a notify: the query string, and for a POST the form body too (which
/// wins for a name in both). A name given twice keeps its last value.
fn notify_params(req: &HttpRequest, body: &[u8]) -> Result<BTreeMap<String, String>, ()> {
    let mut params: BTreeMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .map_err(|_| ())?
            .into_iter()
            .collect();
    if req.method() == Method::POST && !body.is_empty() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| ())?;
        params.extend(form);
    }
    Ok(params)
}

#[utoipa::path(
    get,
    path = "/api/v1/payments/epay/notify",
    operation_id = "epay_notify",
    tag = "payments",
    summary = "EPay's payment notify (GET)",
    description = "Called by the EPay gateway with the signed result of a payment, in the query string. Answers the plain text `success` only once the order is credited (or was already paid), `fail` otherwise.",
    responses(
        (status = 200, description = "`success` (credited, or paid already); or `fail` for a verified notify that credits nothing and that a retry cannot change", content_type = "text/plain", body = String),
        (status = 400, description = "`fail`: not signed by the merchant key, another merchant, or malformed. Nothing changed", content_type = "text/plain", body = String),
        (status = 503, description = "`fail`: the credit could not be written now; the gateway retries", content_type = "text/plain", body = String),
    ),
)]
pub async fn epay_notify_get(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    epay_notify(req, body, state).await
}

#[utoipa::path(
    post,
    path = "/api/v1/payments/epay/notify",
    operation_id = "epay_notify_post",
    tag = "payments",
    summary = "EPay's payment notify (POST)",
    description = "The same as the GET, with the parameters as an `application/x-www-form-urlencoded` body.",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "`success`", content_type = "text/plain", body = String),
        (status = 400, description = "`fail`: nothing changed", content_type = "text/plain", body = String),
        (status = 413, response = PayloadTooLarge),
        (status = 503, description = "`fail`: the gateway retries", content_type = "text/plain", body = String),
    ),
)]
pub async fn epay_notify_post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    epay_notify(req, body, state).await
}

async fn epay_notify(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let settings = &state.settings.payments;
    if !settings.epay_enabled() {
        return text(StatusCode::NOT_FOUND, epay::NOT_ACKNOWLEDGED);
    }
    let Ok(params) = notify_params(&req, &body) else {
        tracing::warn!("an EPay notify that is not a readable query or form: nothing changed");
        return text(StatusCode::BAD_REQUEST, epay::NOT_ACKNOWLEDGED);
    };
    let notify = match epay::verify_notify(&params, &settings.epay) {
        Ok(notify) => notify,
        Err(rejected) => {
            tracing::warn!(
                ?rejected,
                "an EPay notify failed its checks (signature, merchant or fields): nothing changed"
            );
            metrics::counter!("tollgate_payment_notifies_rejected_total", "provider" => "epay")
                .increment(1);
            return text(StatusCode::BAD_REQUEST, epay::NOT_ACKNOWLEDGED);
        }
    };
    let order = match epay_order(&state, &notify.out_trade_no).await {
        Ok(Some(order)) => order,
        // Signed by the gateway, but not one of our EPay orders: nothing is credited, so no
        // `success`; 200, as a retry would change nothing.
        Ok(None) => return text(StatusCode::OK, epay::NOT_ACKNOWLEDGED),
        Err(()) => return text(StatusCode::SERVICE_UNAVAILABLE, epay::NOT_ACKNOWLEDGED),
    };
    if notify.trade_status != epay::TRADE_SUCCESS {
        tracing::info!(order_id = %order.id, status = %notify.trade_status, "an EPay notify of a trade not paid: nothing changed");
        return text(StatusCode::OK, epay::NOT_ACKNOWLEDGED);
    }
    if notify.money != order.amount_cny {
        let flagged = payments::flag(
            &state.store,
            &order,
            "the gateway reports a different amount paid",
            Some(notify.money),
        )
        .await;
        return once_recorded(flagged.is_ok(), epay::NOT_ACKNOWLEDGED);
    }
    let credited = payments::credit_order(
        &state.engine,
        &state.store,
        &order,
        PaymentPath::Epay,
        "epay".to_owned(),
        notify.trade_no,
        None,
    )
    .await;
    match credited {
        Ok(Credited::Now | Credited::Before { same: true }) => {
            text(StatusCode::OK, epay::ACKNOWLEDGED)
        }
        Ok(Credited::Before { same: false }) => {
            let flagged = payments::flag(
                &state.store,
                &order,
                "a second payment of an order already paid, under another reference",
                Some(notify.money),
            )
            .await;
            // The order is paid: `success`, once the second payment is on record.
            once_recorded(flagged.is_ok(), epay::ACKNOWLEDGED)
        }
        Ok(Credited::Refused) => {
            let flagged = payments::flag(
                &state.store,
                &order,
                "paid at the gateway, but the order cannot be paid (expired, its account deleted, or its reference paid another order)",
                Some(notify.money),
            )
            .await;
            once_recorded(flagged.is_ok(), epay::NOT_ACKNOWLEDGED)
        }
        Err(error) => {
            tracing::warn!(order_id = %order.id, %error, "an EPay notify could not be credited now; the gateway retries");
            text(StatusCode::SERVICE_UNAVAILABLE, epay::NOT_ACKNOWLEDGED)
        }
    }
}

/// `answer` with 200 once a payment that was not credited is on record for an operator (a
/// retry would change nothing); `fail` with 503 when it could not be recorded, so that the
/// gateway retries.
fn once_recorded(recorded: bool, answer: &'static str) -> HttpResponse {
    if recorded {
        text(StatusCode::OK, answer)
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, epay::NOT_ACKNOWLEDGED)
    }
}

/// The EPay order an out_trade_no names; `None` when it names none (logged), `Err` when the
/// database cannot say.
async fn epay_order(state: &AppState, out_trade_no: &str) -> Result<Option<OrderRow>, ()> {
    let Some(id) = epay::order_of(out_trade_no) else {
        tracing::warn!("an EPay notify for an order number tollgate never made: nothing changed");
        return Ok(None);
    };
    let order = state.store.order(id).await.map_err(|error| {
        tracing::warn!(%error, "reading a notify's order failed");
    })?;
    match order {
        Some(order) if order.method == "epay" => Ok(Some(order)),
        Some(order) => {
            tracing::warn!(order_id = %order.id, method = %order.method, "an EPay notify for an order made for another payment path: nothing changed");
            Ok(None)
        }
        None => {
            tracing::warn!(order_id = %id, "an EPay notify for an unknown order: nothing changed");
            Ok(None)
        }
    }
}

/// A payment reported by a provider's webhook.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPayment {
    order_id: Uuid,
    /// The provider's name: 1 to 64 of `a-z`, `0-9`, `_` and `-`.
    #[schema(example = "stripe")]
    provider: String,
    /// The provider's reference for the payment: it pays one order, once.
    provider_ref: String,
    /// What was paid, a decimal string: it must equal the order's `amount_cny`.
    #[schema(value_type = String, example = "100.00")]
    amount_cny: String,
    /// `paid`: the only status reported.
    #[schema(example = "paid")]
    status: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub order_id: Uuid,
    /// `paid`.
    pub status: &'static str,
    /// Whether this report credited it (false: an earlier one did).
    pub credited: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/payments/webhook",
    operation_id = "payment_webhook",
    tag = "payments",
    summary = "A payment provider's signed webhook",
    description = "Signed with `tollgate-signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of \"<t>.<raw body>\">` under `payments.webhook.secret`; a time more than 300 s from now is refused. A report repeated for an order already paid under the same reference answers 200 and credits nothing.",
    request_body = WebhookPayment,
    responses(
        (status = 200, description = "Paid: credited now or before", body = WebhookAnswer),
        (status = 400, response = BadRequest),
        (status = 401, description = "The signature is missing, stale or wrong. Nothing changed", body = crate::http::error::ErrorBody),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn payment_webhook(
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secret = &state.settings.payments.webhook.secret;
    if secret.is_empty() {
        return Err(ApiError::NotFound("route"));
    }
    let header = req
        .headers()
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if let Err(refused) = webhook::verify(header, &raw, secret, chrono::Utc::now().timestamp()) {
        tracing::warn!(
            reason = refused.as_str(),
            bytes = raw.len(),
            "a payment webhook failed its signature check: nothing changed"
        );
        metrics::counter!("tollgate_payment_notifies_rejected_total", "provider" => "webhook")
            .increment(1);
        return Err(ApiError::Unauthorized(refused.as_str()));
    }
    let payment: WebhookPayment = json_body(&raw)?;
    if payment.status != "paid" {
        return Err(ApiError::field("status", "only `paid` is reported"));
    }
    let provider_ok = !payment.provider.is_empty()
        && payment.provider.len() <= 64
        && payment
            .provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !provider_ok {
        return Err(ApiError::field("provider", "1 to 64 of a-z, 0-9, _ and -"));
    }
    if payment.provider_ref.trim().is_empty() || payment.provider_ref.chars().count() > 200 {
        return Err(ApiError::field("provider_ref", "1 to 200 characters"));
    }
    let amount: Decimal = epay::plain_decimal(&payment.amount_cny)
        .ok_or_else(|| ApiError::field("amount_cny", "not a decimal number in plain notation"))?;
    let order = state
        .store
        .order(payment.order_id)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "reading a webhook's order failed");
            ApiError::Unavailable("the order cannot be read now; retry".into())
        })?
        .ok_or(ApiError::NotFound("recharge order"))?;
    if order.method != "webhook" {
        tracing::warn!(order_id = %order.id, method = %order.method, "a webhook payment for an order made for another payment path: nothing changed");
        return Err(ApiError::Conflict(
            "the order is not paid through the webhook".into(),
        ));
    }
    if amount != order.amount_cny {
        payments::flag(
            &state.store,
            &order,
            "the webhook reports a different amount paid",
            Some(amount),
        )
        .await
        .map_err(|_| ApiError::Unavailable("the report cannot be recorded now; retry".into()))?;
        return Err(ApiError::Conflict(
            "amount_cny differs from the order's: nothing was credited, and the order is held for review".into(),
        ));
    }
    let credited = payments::credit_order(
        &state.engine,
        &state.store,
        &order,
        PaymentPath::Webhook,
        format!("webhook:{}", payment.provider),
        payment.provider_ref,
        None,
    )
    .await
    .map_err(|error| {
        tracing::warn!(order_id = %order.id, %error, "a webhook payment could not be credited now");
        ApiError::Unavailable("the credit could not be written now; retry".into())
    })?;
    let credited = match credited {
        Credited::Now => true,
        Credited::Before { same: true } => false,
        Credited::Before { same: false } => {
            payments::flag(
                &state.store,
                &order,
                "a second payment of an order already paid, under another reference",
                Some(amount),
            )
            .await
            .map_err(|_| {
                ApiError::Unavailable("the report cannot be recorded now; retry".into())
            })?;
            return Err(ApiError::Conflict(
                "the order was paid already, under another reference: this payment is held for review".into(),
            ));
        }
        Credited::Refused => {
            payments::flag(
                &state.store,
                &order,
                "a webhook payment for an order that cannot be paid (expired, its account deleted, or its reference paid another order)",
                Some(amount),
            )
            .await
            .map_err(|_| ApiError::Unavailable("the report cannot be recorded now; retry".into()))?;
            return Err(ApiError::Conflict(
                "the order cannot be paid (expired, its account deleted, or the reference paid another order): it is held for review".into(),
            ));
        }
    };
    Ok(HttpResponse::Ok().json(WebhookAnswer {
        order_id: order.id,
        status: "paid",
        credited,
    }))
}
