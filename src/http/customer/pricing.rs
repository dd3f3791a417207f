//! `GET /api/v1/pricing`: the rate card that bills, public. Each model's prices in force now,
//! per million tokens, in USD and in CNY at the current exchange rate (USD × rate, exact: the
//! product of two decimals needs no rounding to be shown).

use actix_web::{web, HttpResponse};
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_actors::pricing::Prices;
use utoipa::ToSchema;

use crate::http::error::ApiError;
use crate::http::AppState;
use crate::payments;

/// The five prices of a model or of one of its tiers, per million tokens, as decimal strings.
#[derive(Serialize, ToSchema)]
pub struct PerMtok {
    #[schema(value_type = String, example = "3")]
    pub input: String,
    #[schema(value_type = String, example = "15")]
    pub output: String,
    #[schema(value_type = String, example = "0.3")]
    pub cache_read: String,
    #[schema(value_type = String, example = "3.75")]
    pub cache_write_5m: String,
    #[schema(value_type = String, example = "6")]
    pub cache_write_1h: String,
}

impl PerMtok {
    fn of(prices: &Prices, factor: Decimal) -> PerMtok {
        let show = |usd: Decimal| (usd * factor).normalize().to_string();
        PerMtok {
            input: show(prices.input),
            output: show(prices.output),
            cache_read: show(prices.cache_read),
            cache_write_5m: show(prices.cache_write_5m),
            cache_write_1h: show(prices.cache_write_1h),
        }
    }
}

/// A prompt-length tier: a prompt longer than `above_input_tokens` is billed at these prices.
#[derive(Serialize, ToSchema)]
pub struct PricingTier {
    pub above_input_tokens: u64,
    pub usd_per_mtok: PerMtok,
    pub cny_per_mtok: PerMtok,
    /// The beta header that turns the tier on, if one must be sent.
    pub requires_beta: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PricedModel {
    pub id: String,
    pub display_name: String,
    pub usd_per_mtok: PerMtok,
    pub cny_per_mtok: PerMtok,
    pub tiers: Vec<PricingTier>,
}

#[derive(Serialize, ToSchema)]
pub struct Pricing {
    /// The rate new recharge orders lock, CNY per USD.
    #[schema(value_type = String, example = "7.2")]
    pub cny_per_usd: String,
    pub models: Vec<PricedModel>,
}

#[utoipa::path(
    get,
    path = "/api/v1/pricing",
    operation_id = "pricing",
    tag = "payments",
    summary = "The rate card that bills, in USD and CNY per million tokens",
    responses(
        (status = 200, description = "Every billable model with its prices in force now", body = Pricing),
    ),
)]
pub async fn pricing(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let rate = payments::current_rate(&state.store, &state.settings.payments)
        .await
        .map_err(ApiError::internal)?;
    let now = Utc::now();
    let models = state
        .card
        .models()
        .filter_map(|card| {
            let version = card.version_at(now)?;
            let tiers = version
                .long_prompt
                .iter()
                .map(|tier| PricingTier {
                    above_input_tokens: tier.threshold_tokens,
                    usd_per_mtok: PerMtok::of(&tier.prices, Decimal::ONE),
                    cny_per_mtok: PerMtok::of(&tier.prices, rate.cny_per_usd),
                    requires_beta: tier.requires_beta.clone(),
                })
                .collect();
            Some(PricedModel {
                id: card.id.clone(),
                display_name: card.display_name.clone(),
                usd_per_mtok: PerMtok::of(&version.base, Decimal::ONE),
                cny_per_mtok: PerMtok::of(&version.base, rate.cny_per_usd),
                tiers,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(Pricing {
        cny_per_usd: rate.cny_per_usd.to_string(),
        models,
    }))
}
