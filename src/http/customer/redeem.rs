//! `POST /api/v1/redeem`: a customer redeems a code an operator made (docs/PAYMENTS.md). The
//! code's check characters refuse a typo before any lookup; a failed attempt of any kind
//! counts against the address and the account, which get 429 past their limits; the credit
//! and the code's redemption are one transaction sent by the account's actor, so of two
//! accounts redeeming one code at once exactly one is credited.

use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::{BalanceChange, ChangeApplied, CreditKind, Settles};
use utoipa::ToSchema;

use crate::accounts::code;
use crate::http::error::ApiError;
use crate::http::extract::{client_ip, Session};
use crate::http::json::json_body;
use crate::http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, SessionUnauthorized, TooManyFailures, Unavailable,
};
use crate::http::AppState;

/// The digest a code is stored under: the key ring's HMAC of its canonical form, in a
/// namespace of its own so that it can never equal an API key's.
pub fn code_digest(state: &AppState, canonical: &str) -> Vec<u8> {
    state
        .keys
        .digest(&format!("redemption-code:{canonical}"))
        .to_vec()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    /// The code as printed; case, spaces and dashes do not matter.
    #[schema(example = "TG-7K2QD-M9XRT-4HZ0P-WCV3N-8F6A")]
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct Redeemed {
    /// What the code credited.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "10")]
    pub amount_usd: Decimal,
    /// The balance afterwards.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "12.5")]
    pub balance: Decimal,
}

/// The one answer to every code that does not credit: which of unknown, used or expired it
/// was is not said, so that guessing learns nothing.
const REFUSED: &str = "unknown, already used or expired";

#[utoipa::path(
    post,
    path = "/api/v1/redeem",
    operation_id = "redeem_code",
    tag = "payments",
    summary = "Redeem a code",
    request_body = Redeem,
    responses(
        (status = 200, description = "Credited", body = Redeemed),
        (status = 400, response = BadRequest),
        (status = 401, response = SessionUnauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyFailures),
        (status = 503, response = Unavailable),
    ),
    security(("customer_session" = [])),
)]
pub async fn redeem(
    session: Session,
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ip = client_ip(&req, &state.settings.server.trusted_proxies);
    let account_key = session.account_id.to_string();
    let throttle = &state.customers.redemptions;
    throttle
        .check(ip, &account_key)
        .map_err(|retry_after| ApiError::TooManyFailures { retry_after })?;
    let failed = || match throttle.fail(ip, &account_key) {
        Ok(()) => ApiError::field("code", REFUSED),
        Err(retry_after) => ApiError::TooManyFailures { retry_after },
    };
    let input: Redeem = json_body(&raw)?;
    let Some(canonical) = code::normalize(&input.code) else {
        return Err(failed());
    };
    let account = state
        .store
        .account(session.account_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or(ApiError::Unauthorized("a valid session is required"))?;
    if account.status != tollgate_actors::AccountStatus::Active {
        return Err(ApiError::Forbidden(
            "the account is suspended or being deleted: no codes are redeemed",
        ));
    }
    let digest = code_digest(&state, &canonical);
    let Some(found) = state
        .store
        .code_by_digest(&digest)
        .await
        .map_err(ApiError::internal)?
    else {
        tracing::info!(account_id = %session.account_id, "a redemption code that does not exist was tried");
        return Err(failed());
    };
    let change = BalanceChange {
        id: found.id,
        account_id: session.account_id,
        kind: CreditKind::Redemption,
        amount: found.amount_usd,
        reason: format!("redemption code {}", found.prefix),
        idempotency: None,
        settles: Some(Settles::RedemptionCode),
    };
    let changed = state.engine.apply_change(change).await.map_err(|error| {
        ApiError::Unavailable(format!("the code cannot be redeemed now: {error}"))
    })?;
    match changed.applied {
        ChangeApplied::Applied => {
            tracing::info!(account_id = %session.account_id, code_id = %found.id, amount_usd = %found.amount_usd, "redemption code redeemed");
            // A redemption may earn the inviter's reward (a setting); the background job
            // credits it if this does not.
            if let Ok(Some(reward)) = state.store.reward_of_order(found.id).await {
                if reward.status == "pending" {
                    crate::payments::pay_reward(&state.engine, &reward).await;
                }
            }
        }
        // Used, by this account before (the actor's balance has it) or by another; or expired.
        ChangeApplied::AlreadyApplied { .. } | ChangeApplied::Refused => return Err(failed()),
    }
    Ok(HttpResponse::Ok().json(Redeemed {
        amount_usd: found.amount_usd.normalize(),
        balance: changed.balance.normalize(),
    }))
}
