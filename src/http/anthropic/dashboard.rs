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
//! amount anything is charged from. They are written from the `Decimal` as number literals,
//! never through a float, so the digits shown are the ledger's. The live balance comes from the account's actor, so the
//! balance they show is the one the proxy enforces; what was spent is the flushed sum.

use actix_web::{web, HttpResponse};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::auth::KeyOwner;
use crate::http::error::{AnthropicError, ProxyError};
use crate::http::request_id::RequestId;
use crate::http::AppState;

/// Money as the tools read it: a JSON number literal, rounded to `dp` places. A `Decimal`
/// prints plain digits (never an exponent), which is JSON's number grammar.
fn shown(amount: Decimal, dp: u32) -> Decimal {
    amount.round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven)
}

/// A JSON object answer written by hand, so that its money stays a decimal literal.
fn json_answer(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
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
    Ok(json_answer(format!(
        "{{\"object\":\"billing_subscription\",\"has_payment_method\":true,\
         \"soft_limit_usd\":{limit},\"hard_limit_usd\":{limit},\
         \"system_hard_limit_usd\":{limit},\"access_until\":{access_until}}}"
    )))
}

/// `GET /v1/dashboard/billing/usage`
pub async fn usage(
    owner: KeyOwner,
    rid: RequestId,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AnthropicError> {
    let (_, used) = money(&owner, &state, rid).await?;
    let cents = shown(used * Decimal::ONE_HUNDRED, 2);
    Ok(json_answer(format!(
        "{{\"object\":\"list\",\"total_usage\":{cents}}}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_shown_as_an_exact_json_number_rounded_to_the_cent() {
        for (amount, shown_as) in [
            ("2", "2"),
            ("1.005", "1.00"),
            ("1.015", "1.02"),
            ("123456789.987654", "123456789.99"),
            ("0.0000001", "0.00"),
        ] {
            let amount: Decimal = amount.parse().unwrap();
            let text = shown(amount, 2).to_string();
            assert_eq!(text, shown_as);
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(parsed.is_number(), "{text}");
        }
    }
}
