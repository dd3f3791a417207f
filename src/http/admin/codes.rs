//! Redemption codes (兑换码) for operators: a batch of single-use codes for a USD amount, shown
//! once when made (docs/PAYMENTS.md). Only a keyed hash of each is stored.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::json_body;
use crate::accounts::code;
use crate::http::customer::redeem::code_digest;
use crate::http::error::ApiError;
use crate::http::openapi::{AdminUnauthorized, AdminUnavailable, BadRequest, PayloadTooLarge};
use crate::http::AppState;
use crate::store::NewCode;

/// Codes one request makes at most.
const MAX_BATCH: u32 = 1_000;
/// The largest amount one code carries.
const MAX_CODE_USD: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);
/// Codes a list answers at most.
const PAGE: i64 = 500;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCodes {
    /// How many codes: 1 to 1,000.
    count: u32,
    /// What each credits: a decimal string, more than 0, at most 6 decimals and 100,000.
    #[schema(value_type = String, example = "10")]
    amount_usd: serde_json::Value,
    /// After this time the codes redeem nothing. Must be in the future.
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedCodes {
    /// The codes, shown this once.
    pub codes: Vec<String>,
    pub batch_id: Uuid,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "10")]
    pub amount_usd: Decimal,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CodeAnswer {
    pub id: Uuid,
    /// The first characters of the code.
    #[schema(example = "TG-7K2QD")]
    pub prefix: String,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "10")]
    pub amount_usd: Decimal,
    pub batch_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub redeemed_by: Option<Uuid>,
    pub redeemed_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CodeList {
    pub data: Vec<CodeAnswer>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_cursor: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    before: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/admin/v1/redemption-codes",
    operation_id = "admin_create_redemption_codes",
    tag = "admin: payments",
    summary = "Make a batch of redemption codes",
    request_body = CreateCodes,
    responses(
        (status = 201, description = "The codes, shown this once", body = CreatedCodes),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn create(raw: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let input: CreateCodes = json_body(&raw)?;
    if input.count == 0 || input.count > MAX_BATCH {
        return Err(ApiError::field("count", "must be between 1 and 1000"));
    }
    let invalid = |problem: &str| ApiError::field("amount_usd", problem);
    let text = input
        .amount_usd
        .as_str()
        .ok_or_else(|| invalid("must be a decimal string, such as \"10\""))?;
    let amount = crate::payments::epay::plain_decimal(text)
        .ok_or_else(|| invalid("not a decimal number in plain notation"))?;
    if amount <= Decimal::ZERO {
        return Err(invalid("must be greater than 0"));
    }
    if amount > MAX_CODE_USD {
        return Err(invalid("larger than the 100,000 limit"));
    }
    if amount.normalize().scale() > 6 {
        return Err(invalid("at most 6 fractional digits"));
    }
    if input.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::field("expires_at", "must be in the future"));
    }
    let amount = amount.normalize();
    let batch_id = Uuid::now_v7();
    let mut shown = Vec::with_capacity(input.count as usize);
    let mut stored = Vec::with_capacity(input.count as usize);
    for _ in 0..input.count {
        let made = code::generate();
        let canonical = code::normalize(&made)
            .ok_or_else(|| ApiError::internal("a generated redemption code does not check"))?;
        stored.push(NewCode {
            id: Uuid::now_v7(),
            digest: code_digest(&state, &canonical),
            prefix: code::display_prefix(&made),
        });
        shown.push(made);
    }
    state
        .store
        .create_codes(batch_id, &stored, amount, input.expires_at)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(%batch_id, count = input.count, amount_usd = %amount, "redemption codes made");
    Ok(HttpResponse::Created().json(CreatedCodes {
        codes: shown,
        batch_id,
        amount_usd: amount,
        expires_at: input.expires_at,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/v1/redemption-codes",
    operation_id = "admin_list_redemption_codes",
    tag = "admin: payments",
    summary = "Redemption codes, newest first, with who redeemed each",
    params(("before" = Option<DateTime<Utc>>, Query, description = "The `next_cursor` of the previous page")),
    responses(
        (status = 200, description = "At most 500 codes (their prefixes, never the codes)", body = CodeList),
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
    let rows = state
        .store
        .codes(query.before, PAGE)
        .await
        .map_err(ApiError::internal)?;
    let next_cursor = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|row| row.created_at))
        .flatten();
    let data = rows
        .into_iter()
        .map(|row| CodeAnswer {
            id: row.id,
            prefix: row.prefix,
            amount_usd: row.amount_usd.normalize(),
            batch_id: row.batch_id,
            expires_at: row.expires_at,
            created_at: row.created_at,
            redeemed_by: row.redeemed_by,
            redeemed_at: row.redeemed_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(CodeList { data, next_cursor }))
}
