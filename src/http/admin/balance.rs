//! Money an operator puts in or corrects: credits and adjustments, each through the account's
//! actor and recorded in the ledger. With an `Idempotency-Key` header, each applies once
//! however often it is sent, and every retry gets the first answer.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_actors::{ChangeApplied, CreditKind, IdempotencyClaim};
use utoipa::ToSchema;

use super::{
    account_answer, db_error, engine_error, json_body, open_account, parse_id, AccountAnswer,
};
use crate::http::error::ApiError;
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, IdempotencyKeyReused, NotFound,
    PayloadTooLarge, TooManyFailures,
};
use crate::http::AppState;
use crate::store::{AccountRow, IdempotencyRecord, StoredAnswer};

/// The header that makes a credit or adjustment apply once however often it is sent
/// (docs/adr/0016-idempotent-operator-writes.md).
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Set on an answer sent again for a key already used.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The longest key accepted: room for any UUID or hash, not for a body.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// How long a concurrent duplicate waits for the first request's answer: it is stored a
/// moment after the commit, so a few polls are plenty.
const FIRST_ANSWER_POLLS: u32 = 50;
const FIRST_ANSWER_POLL: Duration = Duration::from_millis(20);

/// The largest single credit accepted, a guard against a typo of many zeros.
const MAX_CREDIT_USD: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Fractional digits a credit may carry (money is kept to at least 12).
const MAX_CREDIT_SCALE: u32 = 12;

/// Money an operator adds (a credit) or corrects (an adjustment).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Credit {
    /// A decimal string in plain notation, at most 12 fractional digits and 1,000,000,000 in
    /// size: positive for a credit, either sign but not zero for an adjustment.
    #[schema(value_type = String, pattern = r"^\s*[+-]?[0-9.]+\s*$", example = "12.5")]
    amount_usd: serde_json::Value,
    /// Recorded in the ledger; an adjustment needs one.
    reason: Option<String>,
}

/// A money amount from a JSON decimal string. A credit must be positive; an adjustment may be
/// either sign but not zero.
fn parse_amount(value: &serde_json::Value, kind: CreditKind) -> Result<Decimal, ApiError> {
    let invalid = |problem: &str| ApiError::field("amount_usd", problem);
    let text = value
        .as_str()
        .ok_or_else(|| invalid("must be a decimal string, such as \"12.5\""))?
        .trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    // Plain notation only: "1e3" and the like are refused rather than guessed at.
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid("not a decimal number"));
    }
    let amount: Decimal = text.parse().map_err(|_| invalid("not a decimal number"))?;
    match kind {
        CreditKind::Credit if amount <= Decimal::ZERO => {
            return Err(invalid("must be greater than 0"))
        }
        CreditKind::Adjustment if amount.is_zero() => return Err(invalid("must not be 0")),
        _ => {}
    }
    if amount.abs() > MAX_CREDIT_USD {
        return Err(invalid("larger than the 1,000,000,000 limit"));
    }
    if amount.normalize().scale() > MAX_CREDIT_SCALE {
        return Err(invalid("more than 12 fractional digits"));
    }
    Ok(amount.normalize())
}

/// `POST /admin/v1/accounts/{id}/credit`
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/credit",
    operation_id = "admin_credit",
    tag = "admin: balance",
    summary = "Credit an account",
    params(
        ("id" = Uuid, Path, description = "The account id"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Makes the change apply once however often it is sent: 1 to 255 visible ASCII characters. A retry gets the first answer, marked `idempotent-replayed: true`"),
    ),
    request_body = Credit,
    responses(
        (status = 200, description = "The account after the credit", body = AccountAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = IdempotencyKeyReused),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn credit(
    path: web::Path<String>,
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_balance(path, req, raw, state, CreditKind::Credit).await
}

/// `POST /admin/v1/accounts/{id}/adjust`: an operator's correction, of either sign, with a
/// reason. It can take a balance below zero; a negative account admits nothing.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/adjust",
    operation_id = "admin_adjust",
    tag = "admin: balance",
    summary = "Adjust an account's balance",
    params(
        ("id" = Uuid, Path, description = "The account id"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Makes the change apply once however often it is sent: 1 to 255 visible ASCII characters. A retry gets the first answer, marked `idempotent-replayed: true`"),
    ),
    request_body = Credit,
    responses(
        (status = 200, description = "The account after the adjustment", body = AccountAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = IdempotencyKeyReused),
        (status = 429, response = TooManyFailures),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn adjust(
    path: web::Path<String>,
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_balance(path, req, raw, state, CreditKind::Adjustment).await
}

async fn change_balance(
    path: web::Path<String>,
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
    kind: CreditKind,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "account")?;
    let key = idempotency_key(&req)?;
    let input: Credit = json_body(&raw)?;
    let amount = parse_amount(&input.amount_usd, kind)?;
    let reason = input.reason.unwrap_or_default().trim().to_string();
    if kind == CreditKind::Adjustment && reason.is_empty() {
        return Err(ApiError::field(
            "reason",
            "an adjustment needs a reason for the books",
        ));
    }
    let row = open_account(&state, id).await?;
    let Some(key) = key else {
        state
            .engine
            .change_balance(id, kind, amount, reason)
            .await
            .map_err(engine_error)?;
        return Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?));
    };
    let claim = IdempotencyClaim {
        scope: kind.scope(),
        fingerprint: fingerprint(kind, amount, &reason),
        key,
    };
    state
        .store
        .forget_old_idempotency_keys(id)
        .await
        .map_err(db_error)?;
    // A retry of a change already answered, or one that asks something else, is answered
    // from its record, without the actor. A key claimed but not answered goes through the
    // actor all the same: its first request may still be answering, or its commit's answer
    // was lost, and then only the store's AlreadyApplied tells the actor to add an amount it
    // never saw (docs/adr/0016-idempotent-operator-writes.md).
    if let Some(record) = state
        .store
        .idempotency_record(id, claim.scope, &claim.key)
        .await
        .map_err(db_error)?
    {
        if record.fingerprint != claim.fingerprint || record.answer.is_some() {
            return replay(&state, &row, &claim, record).await;
        }
    }
    let changed = state
        .engine
        .change_balance_once(id, kind, amount, reason, Some(claim.clone()))
        .await
        .map_err(engine_error)?;
    match changed.applied {
        ChangeApplied::Applied => answer_first(&state, &row, &claim).await,
        // A concurrent duplicate claimed the key first: answer as it does.
        ChangeApplied::AlreadyApplied { .. } => {
            let record = state
                .store
                .idempotency_record(id, claim.scope, &claim.key)
                .await
                .map_err(db_error)?
                .ok_or_else(|| ApiError::internal("a claimed idempotency key has no record"))?;
            replay(&state, &row, &claim, record).await
        }
        // Only a change that settles something (an order) is refused; a credit settles none.
        ChangeApplied::Refused => Err(ApiError::internal(
            "an operator's credit was refused by the store",
        )),
    }
}

/// The `Idempotency-Key` header, if sent: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible ASCII
/// characters (a UUID, say).
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::field(
            IDEMPOTENCY_KEY,
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// What a request with a key asks, as compared with its retries: the parsed, normalized
/// values, so that a retry that spells `"5.0"` for `"5"` is the same request.
fn fingerprint(kind: CreditKind, amount: Decimal, reason: &str) -> Vec<u8> {
    let mut digest = Sha256::new();
    for part in [kind.as_str(), &amount.normalize().to_string(), reason] {
        digest.update(part.len().to_le_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().to_vec()
}

/// The answer to the request that applied the change, stored as the key's first answer
/// unless a concurrent duplicate stored one first; either way, the stored one is sent.
async fn answer_first(
    state: &AppState,
    row: &AccountRow,
    claim: &IdempotencyClaim,
) -> Result<HttpResponse, ApiError> {
    let body =
        serde_json::to_string(&account_answer(state, row).await?).map_err(ApiError::internal)?;
    let ours = StoredAnswer { status: 200, body };
    let stored = state
        .store
        .first_answer(row.id, claim.scope, &claim.key, &ours)
        .await
        .map_err(db_error)?
        .unwrap_or(ours);
    Ok(respond(stored, false))
}

/// A retry: refused if it asks something else, else answered as the first request was.
/// The first request stores its answer just after its change commits, so a concurrent
/// duplicate waits for it a little; if it never comes (that request failed after the
/// commit), this answer becomes the first.
async fn replay(
    state: &AppState,
    row: &AccountRow,
    claim: &IdempotencyClaim,
    mut record: IdempotencyRecord,
) -> Result<HttpResponse, ApiError> {
    for _ in 0..FIRST_ANSWER_POLLS {
        if record.fingerprint != claim.fingerprint {
            return Err(ApiError::IdempotencyKeyReused(claim.key.clone()));
        }
        if let Some(answer) = record.answer {
            return Ok(respond(answer, true));
        }
        tokio::time::sleep(FIRST_ANSWER_POLL).await;
        record = state
            .store
            .idempotency_record(row.id, claim.scope, &claim.key)
            .await
            .map_err(db_error)?
            .ok_or_else(|| ApiError::internal("an idempotency record went away"))?;
    }
    answer_first(state, row, claim).await
}

fn respond(answer: StoredAnswer, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.content_type("application/json").body(answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credit_amounts_are_positive_decimal_strings() {
        assert_eq!(
            parse_amount(&json!("12.50"), CreditKind::Credit).ok(),
            Some(Decimal::new(125, 1))
        );
        assert_eq!(
            parse_amount(&json!("-2.5"), CreditKind::Adjustment).ok(),
            Some(Decimal::new(-25, 1))
        );
        assert!(parse_amount(&json!("0"), CreditKind::Adjustment).is_err());
        for bad in [
            json!(12.5),
            json!("-1"),
            json!("0"),
            json!("abc"),
            json!("1e3"),
            json!("2000000000"),
            json!("0.0000000000001"),
        ] {
            assert!(parse_amount(&bad, CreditKind::Credit).is_err(), "{bad}");
        }
    }
}
