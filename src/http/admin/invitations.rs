//! Invitation codes an operator makes (docs/PAYMENTS.md, "Referrals"): a code with its own
//! reward (a fixed USD amount or a share of the first recharge), a maximum number of uses and
//! an expiry, rewarding the account it names for each invitee's first paid recharge.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{json_body, stored_account};
use crate::http::error::ApiError;
use crate::http::openapi::{
    AdminUnauthorized, AdminUnavailable, BadRequest, Conflict, NotFound, PayloadTooLarge,
};
use crate::http::AppState;
use crate::store::{DbError, InvitationRow};

/// Letters and digits a made-up code is drawn from (no 0/O or 1/I to misread).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
const GENERATED_CHARS: usize = 10;

#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardInput {
    /// A fixed USD amount per invitee.
    Fixed {
        #[schema(value_type = String, example = "2")]
        amount_usd: String,
    },
    /// A share of the invitee's first recharge in USD, more than 0 and at most 1.
    Ratio {
        #[schema(value_type = String, example = "0.1")]
        ratio: String,
    },
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// 4 to 32 of A-Z, 0-9, `_` and `-` (taken as upper case); made up when left out.
    code: Option<String>,
    reward: RewardInput,
    /// How many accounts may register with it; unlimited when left out.
    max_uses: Option<i32>,
    expires_at: Option<DateTime<Utc>>,
    /// The account rewarded; without one, the code lets people register and rewards no one.
    inviter_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationAnswer {
    pub code: String,
    pub inviter_id: Option<Uuid>,
    /// `{"kind":"fixed","amount_usd"}` or `{"kind":"ratio","ratio"}`.
    #[schema(value_type = Object)]
    pub reward: serde_json::Value,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationList {
    pub data: Vec<InvitationAnswer>,
}

fn answer(row: InvitationRow) -> InvitationAnswer {
    let value = row.reward_value.normalize().to_string();
    let reward = if row.reward_kind == "fixed" {
        serde_json::json!({"kind": "fixed", "amount_usd": value})
    } else {
        serde_json::json!({"kind": "ratio", "ratio": value})
    };
    InvitationAnswer {
        code: row.code,
        inviter_id: row.inviter_id,
        reward,
        max_uses: row.max_uses,
        uses: row.uses,
        expires_at: row.expires_at,
        created_at: row.created_at,
    }
}

fn positive_decimal(
    field: &'static str,
    text: &str,
    at_most: Decimal,
) -> Result<Decimal, ApiError> {
    let value = crate::payments::epay::plain_decimal(text)
        .ok_or_else(|| ApiError::field(field, "not a decimal number in plain notation"))?;
    if value <= Decimal::ZERO || value > at_most {
        return Err(ApiError::field(
            field,
            format!("must be more than 0 and at most {at_most}"),
        ));
    }
    if value.normalize().scale() > 6 {
        return Err(ApiError::field(field, "at most 6 fractional digits"));
    }
    Ok(value.normalize())
}

#[utoipa::path(
    post,
    path = "/admin/v1/invitations",
    operation_id = "admin_create_invitation",
    tag = "admin: payments",
    summary = "Make an invitation code with its own reward",
    request_body = CreateInvitation,
    responses(
        (status = 201, description = "The invitation", body = InvitationAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = AdminUnauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn create(raw: web::Bytes, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let input: CreateInvitation = json_body(&raw)?;
    let code = match input.code {
        Some(code) => {
            let code = code.trim().to_uppercase();
            let ok = (4..=32).contains(&code.len())
                && code.bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return Err(ApiError::field("code", "4 to 32 of A-Z, 0-9, _ and -"));
            }
            code
        }
        None => {
            let mut rng = rand::thread_rng();
            (0..GENERATED_CHARS)
                .filter_map(|_| CODE_ALPHABET.get(rng.gen_range(0..CODE_ALPHABET.len())))
                .map(|b| char::from(*b))
                .collect()
        }
    };
    let (kind, value) = match &input.reward {
        RewardInput::Fixed { amount_usd } => (
            "fixed",
            positive_decimal("reward.amount_usd", amount_usd, Decimal::from(10_000))?,
        ),
        RewardInput::Ratio { ratio } => (
            "ratio",
            positive_decimal("reward.ratio", ratio, Decimal::ONE)?,
        ),
    };
    if input.max_uses.is_some_and(|uses| uses <= 0) {
        return Err(ApiError::field("max_uses", "must be at least 1"));
    }
    if input.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ApiError::field("expires_at", "must be in the future"));
    }
    if let Some(inviter) = input.inviter_id {
        stored_account(&state, inviter).await?;
    }
    // An account's own code of the same letters would make the code mean two things.
    if state
        .store
        .inviter(&code)
        .await
        .map_err(ApiError::internal)?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "an account's invitation code is the same".into(),
        ));
    }
    let new = InvitationRow {
        code,
        inviter_id: input.inviter_id,
        reward_kind: kind.to_owned(),
        reward_value: value,
        max_uses: input.max_uses,
        uses: 0,
        expires_at: input.expires_at,
        created_at: Utc::now(),
    };
    let row = state
        .store
        .create_invitation(&new)
        .await
        .map_err(|error| match error {
            DbError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            other => ApiError::internal(other),
        })?;
    let created = answer(row);
    tracing::info!(code = %created.code, kind, "invitation code made");
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(
    get,
    path = "/admin/v1/invitations",
    operation_id = "admin_list_invitations",
    tag = "admin: payments",
    summary = "Invitation codes, newest first, with their uses",
    responses(
        (status = 200, description = "At most 500 codes", body = InvitationList),
        (status = 401, response = AdminUnauthorized),
        (status = 503, response = AdminUnavailable),
    ),
    security(("admin_token" = [])),
)]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rows = state
        .store
        .invitations()
        .await
        .map_err(ApiError::internal)?;
    let data = rows.into_iter().map(answer).collect();
    Ok(HttpResponse::Ok().json(InvitationList { data }))
}
