//! Money an operator puts in or corrects: credits and adjustments, each through the account's
//! actor and recorded in the ledger.

use actix_web::{web, HttpResponse};
use rust_decimal::Decimal;
use serde::Deserialize;
use tollgate_actors::CreditKind;

use super::{account_answer, engine_error, json_body, parse_id, stored_account};
use crate::http::error::ApiError;
use crate::http::AppState;

/// The largest single credit accepted, a guard against a typo of many zeros.
const MAX_CREDIT_USD: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Fractional digits a credit may carry (money is kept to at least 12).
const MAX_CREDIT_SCALE: u32 = 12;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    amount_usd: serde_json::Value,
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
pub async fn credit(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_balance(path, raw, state, CreditKind::Credit).await
}

/// `POST /admin/v1/accounts/{id}/adjust`: an operator's correction, of either sign, with a
/// reason. It can take a balance below zero; a negative account admits nothing.
pub async fn adjust(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    change_balance(path, raw, state, CreditKind::Adjustment).await
}

async fn change_balance(
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
    kind: CreditKind,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "account")?;
    let input: Credit = json_body(&raw)?;
    let amount = parse_amount(&input.amount_usd, kind)?;
    let reason = input.reason.unwrap_or_default().trim().to_string();
    if kind == CreditKind::Adjustment && reason.is_empty() {
        return Err(ApiError::field(
            "reason",
            "an adjustment needs a reason for the books",
        ));
    }
    let row = stored_account(&state, id).await?;
    state
        .engine
        .change_balance(id, kind, amount, reason)
        .await
        .map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_answer(&state, &row).await?))
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
