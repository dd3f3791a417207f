//! The operator's bootstrap API under `/admin/v1`, behind `Authorization: Bearer <admin.token>`.
//! Money in and out is a decimal string.

use actix_web::{web, HttpRequest, HttpResponse};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tollgate_actors::store::{AccountStatus, CreditKind};
use tollgate_actors::{AccountLimits, AccountView, EngineError};
use uuid::Uuid;

use super::errors::AdminError;
use super::AppState;
use crate::accounts::{Email, Password};
use crate::auth::KeyOwner;
use crate::store::{AccountRow, DbError, KeyRow};

/// The largest single credit accepted, a guard against a typo of many zeros.
const MAX_CREDIT_USD: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// Limits are stored as Postgres INTEGER.
const MAX_LIMIT: u32 = i32::MAX as u32;
/// Fractional digits a credit may carry (money is kept to at least 12).
const MAX_CREDIT_SCALE: u32 = 12;

/// Checks the admin bearer token. Both sides are hashed first, so the comparison takes the
/// same time wherever the tokens differ.
fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), AdminError> {
    let expected = &state.settings.admin.token;
    if expected.is_empty() {
        return Err(AdminError::unavailable(
            "the admin API is disabled: admin.token is empty",
        ));
    }
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .unwrap_or("");
    if Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes()) {
        Ok(())
    } else {
        Err(AdminError::unauthorized())
    }
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid, AdminError> {
    Uuid::parse_str(raw).map_err(|_| AdminError::not_found(what))
}

fn engine_error(error: EngineError) -> AdminError {
    match error {
        EngineError::AccountNotFound => AdminError::not_found("account"),
        other => AdminError::internal(other),
    }
}

fn db_error(error: DbError) -> AdminError {
    match error {
        DbError::Conflict(what) => AdminError::conflict(format!("{what} already exists")),
        other => AdminError::internal(other),
    }
}

/// A JSON body, with a plain-shaped 400 when it does not parse.
fn body<T: for<'de> Deserialize<'de>>(raw: &web::Bytes) -> Result<T, AdminError> {
    let raw: &[u8] = if raw.is_empty() { b"{}" } else { raw };
    serde_json::from_slice(raw)
        .map_err(|e| AdminError::bad_request(format!("invalid JSON body: {e}")))
}

fn account_json(row: &AccountRow, view: &AccountView) -> serde_json::Value {
    json!({
        "id": row.id,
        "email": row.email,
        "status": view.status.as_str(),
        "balance": view.balance.normalize().to_string(),
        "held": view.held.normalize().to_string(),
        "active_requests": view.active_requests,
        "limits": view.limits,
        "created_at": row.created_at,
    })
}

fn key_json(key: &KeyRow) -> serde_json::Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    })
}

fn check_limits(limits: &AccountLimits) -> Result<(), AdminError> {
    for (field, value) in [
        ("requests_per_minute", limits.requests_per_minute),
        ("tokens_per_minute", limits.tokens_per_minute),
        ("max_concurrent", limits.max_concurrent),
    ] {
        if value > MAX_LIMIT {
            return Err(AdminError::bad_request(format!(
                "limits.{field}: at most {MAX_LIMIT} (0 means unlimited)"
            )));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    email: String,
    password: Option<String>,
    limits: Option<AccountLimits>,
}

/// `POST /admin/v1/accounts`
pub async fn create_account(
    req: HttpRequest,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let input: CreateAccount = body(&raw)?;
    let email = Email::parse(&input.email)
        .map_err(|_| AdminError::bad_request("email: not a valid email address"))?;
    let password_hash = match input.password.as_deref().map(Password::new) {
        None => None,
        Some(Err(_)) => {
            return Err(AdminError::bad_request(
                "password: needs at least 8 characters, with letters and digits",
            ))
        }
        Some(Ok(password)) => Some(password.hash().await.map_err(AdminError::internal)?),
    };
    let limits = input
        .limits
        .unwrap_or_else(|| state.settings.default_limits());
    check_limits(&limits)?;
    let row = state
        .store
        .create_account(
            email.as_str(),
            password_hash.as_ref().map(|hash| hash.as_str()),
            &limits,
        )
        .await
        .map_err(db_error)?;
    let view = state.engine.view(row.id).await.map_err(engine_error)?;
    Ok(HttpResponse::Created().json(account_json(&row, &view)))
}

async fn stored_account(state: &AppState, id: Uuid) -> Result<AccountRow, AdminError> {
    state
        .store
        .account(id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| AdminError::not_found("account"))
}

/// `GET /admin/v1/accounts/{id}`: the live view.
pub async fn get_account(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = parse_id(&path, "account")?;
    let row = stored_account(&state, id).await?;
    let view = state.engine.view(id).await.map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_json(&row, &view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credit {
    amount_usd: serde_json::Value,
    reason: Option<String>,
}

/// A money amount from a JSON decimal string. A credit must be positive; an adjustment may be
/// either sign but not zero.
fn parse_amount(value: &serde_json::Value, kind: CreditKind) -> Result<Decimal, AdminError> {
    let text = value.as_str().ok_or_else(|| {
        AdminError::bad_request("amount_usd: must be a decimal string, such as \"12.5\"")
    })?;
    let text = text.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    // Plain notation only: "1e3" and the like are refused rather than guessed at.
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(AdminError::bad_request("amount_usd: not a decimal number"));
    }
    let amount: Decimal = text
        .parse()
        .map_err(|_| AdminError::bad_request("amount_usd: not a decimal number"))?;
    match kind {
        CreditKind::Credit if amount <= Decimal::ZERO => {
            return Err(AdminError::bad_request(
                "amount_usd: must be greater than 0",
            ))
        }
        CreditKind::Adjustment if amount.is_zero() => {
            return Err(AdminError::bad_request("amount_usd: must not be 0"))
        }
        _ => {}
    }
    if amount.abs() > MAX_CREDIT_USD {
        return Err(AdminError::bad_request(
            "amount_usd: larger than the 1,000,000,000 limit",
        ));
    }
    if amount.normalize().scale() > MAX_CREDIT_SCALE {
        return Err(AdminError::bad_request(
            "amount_usd: more than 12 fractional digits",
        ));
    }
    Ok(amount.normalize())
}

/// `POST /admin/v1/accounts/{id}/credit`
pub async fn credit(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    change_balance(req, path, raw, state, CreditKind::Credit).await
}

/// `POST /admin/v1/accounts/{id}/adjust`: an operator's correction, of either sign, with a
/// reason. It can take a balance below zero; a negative account admits nothing.
pub async fn adjust(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    change_balance(req, path, raw, state, CreditKind::Adjustment).await
}

async fn change_balance(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
    kind: CreditKind,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = parse_id(&path, "account")?;
    let input: Credit = body(&raw)?;
    let amount = parse_amount(&input.amount_usd, kind)?;
    let reason = input.reason.unwrap_or_default().trim().to_string();
    if kind == CreditKind::Adjustment && reason.is_empty() {
        return Err(AdminError::bad_request(
            "reason: an adjustment needs a reason for the books",
        ));
    }
    let row = stored_account(&state, id).await?;
    state
        .engine
        .change_balance(id, kind, amount, reason)
        .await
        .map_err(engine_error)?;
    let view = state.engine.view(id).await.map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_json(&row, &view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: Option<String>,
}

/// `POST /admin/v1/accounts/{id}/keys`: the full key is in this response and nowhere else.
pub async fn create_key(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let account_id = parse_id(&path, "account")?;
    let input: CreateKey = body(&raw)?;
    let name = input.name.unwrap_or_default();
    if name.chars().count() > 100 {
        return Err(AdminError::bad_request("name: at most 100 characters"));
    }
    stored_account(&state, account_id).await?;
    let key = state.keys.generate();
    let row = state
        .store
        .create_key(account_id, &name, &key.prefix, &key.digest)
        .await
        .map_err(db_error)?;
    state.keys.insert(
        key.digest,
        KeyOwner {
            key_id: row.id,
            account_id,
        },
    );
    let mut out = key_json(&row);
    out["key"] = json!(key.secret.expose());
    Ok(HttpResponse::Created().json(out))
}

/// `GET /admin/v1/accounts/{id}/keys`: prefixes only.
pub async fn list_keys(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let account_id = parse_id(&path, "account")?;
    stored_account(&state, account_id).await?;
    let keys = state.store.keys(account_id).await.map_err(db_error)?;
    Ok(HttpResponse::Ok().json(json!({ "data": keys.iter().map(key_json).collect::<Vec<_>>() })))
}

/// `DELETE /admin/v1/accounts/{id}/keys/{key_id}`: refused from the next request on.
pub async fn revoke_key(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let account_id = parse_id(&path.0, "account")?;
    let key_id = parse_id(&path.1, "key")?;
    let digest = state
        .store
        .revoke_key(account_id, key_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| AdminError::not_found("active key"))?;
    state.keys.remove(&digest);
    Ok(HttpResponse::Ok().json(json!({ "id": key_id, "revoked": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    reason: Option<String>,
}

async fn change_status(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
    status: AccountStatus,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = parse_id(&path, "account")?;
    let input: StatusChange = body(&raw)?;
    let row = stored_account(&state, id).await?;
    state
        .engine
        .set_status(id, status, input.reason.unwrap_or_default())
        .await
        .map_err(engine_error)?;
    let view = state.engine.view(id).await.map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_json(&row, &view)))
}

/// `POST /admin/v1/accounts/{id}/suspend`: effective for the next request.
pub async fn suspend(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    change_status(req, path, raw, state, AccountStatus::Suspended).await
}

/// `POST /admin/v1/accounts/{id}/unsuspend`
pub async fn unsuspend(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    change_status(req, path, raw, state, AccountStatus::Active).await
}

/// `PUT /admin/v1/accounts/{id}/limits {"requests_per_minute","tokens_per_minute","max_concurrent"}`
pub async fn set_limits(
    req: HttpRequest,
    path: web::Path<String>,
    raw: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let id = parse_id(&path, "account")?;
    let limits: AccountLimits = body(&raw)?;
    check_limits(&limits)?;
    let row = stored_account(&state, id).await?;
    state
        .store
        .set_limits(id, &limits)
        .await
        .map_err(db_error)?;
    state
        .engine
        .set_limits(id, limits)
        .await
        .map_err(engine_error)?;
    let view = state.engine.view(id).await.map_err(engine_error)?;
    Ok(HttpResponse::Ok().json(account_json(&row, &view)))
}

/// `POST /admin/v1/flush`: writes settled usage now instead of at the next interval.
pub async fn flush(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let empty = state.engine.flusher().flush_now().await;
    let stats = state.engine.flusher_stats();
    Ok(HttpResponse::Ok().json(json!({
        "flushed": empty,
        "backlog": stats.backlog,
        "flushed_records": stats.flushed_records,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

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
