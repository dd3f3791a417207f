//! `GET /v1/dashboard/billing/subscription` and `GET /v1/dashboard/billing/usage`, with an API
//! key, in the shapes one-api and new-api answer (OpenAI's old billing endpoints), so that
//! tools which read a relay's balance that way (CC Switch, Claude Code status lines) show
//! tollgate's. Those tools compute the balance as `hard_limit_usd - total_usage / 100`.
//!
//! - `subscription`: `hard_limit_usd` (and its soft and system twins) is what the account can
//!   still spend plus what it has spent; `access_until` is the key's expiry in Unix seconds,
//!   0 for none.
//! - `usage`: `total_usage` is what the account has spent, in US cents.
//!
//! Both are JSON numbers, as those tools expect: a display, rounded to the cent, never an
//! amount anything is charged from. The live balance comes from the account's actor, so the
//! balance they show is the one the proxy enforces; what was spent is the flushed sum.

use actix_web::{web, HttpResponse};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::json;

use crate::auth::KeyOwner;
use crate::http::error::{AnthropicError, ProxyError};
use crate::http::request_id::RequestId;
use crate::http::AppState;

/// Money as the tools read it: a JSON number, rounded to `dp` places.
fn shown(amount: Decimal, dp: u32) -> f64 {
    amount
        .round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
        .to_f64()
        .unwrap_or(0.0)
}

/// What the account can spend now and what it has spent.
async fn money(
    owner: &KeyOwner,
    state: &AppState,
    rid: RequestId,
) -> Result<(Decimal, Decimal), AnthropicError> {
    let view = state.engine.view(owner.account_id).await.map_err(|error| {
        tracing::error!(%rid, %error, "the account's balance could not be read");
        ProxyError::Internal.at(rid)
    })?;
    let used = state
        .store
        .account_used(owner.account_id)
        .await
        .map_err(|error| {
            tracing::error!(%rid, %error, "the account's spend could not be read");
            ProxyError::Internal.at(rid)
        })?;
    let available = (view.balance - view.held).max(Decimal::ZERO);
    Ok((available, used))
}

/// `GET /v1/dashboard/billing/subscription`
pub async fn subscription(
    owner: KeyOwner,
    rid: RequestId,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnthropicError> {
    let (available, used) = money(&owner, &state, rid).await?;
    let limit = shown(available + used, 2);
    let access_until = owner
        .policy
        .as_ref()
        .and_then(|policy| policy.expires_at)
        .map_or(0, |at| at.timestamp());
    Ok(HttpResponse::Ok().json(json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "soft_limit_usd": limit,
        "hard_limit_usd": limit,
        "system_hard_limit_usd": limit,
        "access_until": access_until,
    })))
}

/// `GET /v1/dashboard/billing/usage`
pub async fn usage(
    owner: KeyOwner,
    rid: RequestId,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnthropicError> {
    let (_, used) = money(&owner, &state, rid).await?;
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "total_usage": shown(used * Decimal::ONE_HUNDRED, 2),
    })))
}
