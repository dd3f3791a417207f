//! The rate card: per-model prices in USD per million tokens, with dated versions and
//! prompt-length tiers, and the exact cost of a request's usage.
//!
//! The same card bills requests, sizes holds and renders the public pricing page, so every
//! number here is stored as given by the upstream's price list and never derived (cache-read
//! multipliers differ between models).
//!
//! The built-in card's figures are data, not code: `rate-card.toml` beside this file, embedded
//! at build time and read by [`RateCard::builtin`] (see the `builtin` module).

mod builtin;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde::{Deserialize, Serialize};

use crate::Usage;

/// Prices are per million tokens; a request's cost divides by this once, at the end, so that
/// the only division in the whole computation is by a power of ten and therefore exact.
const PER_MILLION: Decimal = dec!(1_000_000);

/// The five token prices of one model (or one tier of it), in USD per 1,000,000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// Uncached input tokens.
    pub input: Decimal,
    /// Generated tokens.
    pub output: Decimal,
    /// Tokens read from the prompt cache.
    pub cache_read: Decimal,
    /// Tokens written to the 5-minute cache.
    pub cache_write_5m: Decimal,
    /// Tokens written to the 1-hour cache.
    pub cache_write_1h: Decimal,
}

impl Prices {
    /// The highest per-token price any prompt token can be billed at (max of input, cache_read,
    /// cache_write_5m, cache_write_1h).
    pub fn max_prompt_price(&self) -> Decimal {
        self.input
            .max(self.cache_read)
            .max(self.cache_write_5m)
            .max(self.cache_write_1h)
    }

    /// Exact cost in USD of the five token classes of `usage` at these prices. Server-tool uses
    /// are not token classes and are not included (see [`PriceVersion::cost`]).
    ///
    /// Never panics: absurd counts or prices saturate at `Decimal::MAX`, which only ever makes a
    /// hold refuse or a bill visibly wrong rather than crashing the account's actor.
    pub fn token_cost(&self, usage: &Usage) -> Decimal {
        let classes = [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_read_tokens, self.cache_read),
            (usage.cache_write_5m_tokens, self.cache_write_5m),
            (usage.cache_write_1h_tokens, self.cache_write_1h),
        ];
        let micro = classes.iter().fold(Decimal::ZERO, |sum, &(tokens, price)| {
            sum.saturating_add(Decimal::from(tokens).saturating_mul(price))
        });
        per_million(micro)
    }
}

/// `amount / 1_000_000`, exact for any value this module produces.
pub(crate) fn per_million(amount: Decimal) -> Decimal {
    // Dividing by a positive power of ten cannot overflow, so the fallback is unreachable in
    // practice; it exists only so that this path has no panic in it.
    amount.checked_div(PER_MILLION).unwrap_or(Decimal::MAX)
}

/// A higher price tier for requests with long prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongPromptTier {
    /// A request whose prompt ([`Usage::prompt_tokens`]) is strictly greater than this is billed
    /// entirely, output included, at [`LongPromptTier::prices`].
    pub threshold_tokens: u64,
    /// The prices of the whole request above the threshold.
    pub prices: Prices,
    /// The `anthropic-beta` flag without which the tier never applies (Sonnet 4 and 4.5's
    /// `context-1m-2025-08-07`): a request without it is billed at the base prices whatever
    /// its prompt. `None`: the tier applies to every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_beta: Option<String>,
}

impl LongPromptTier {
    /// Whether the tier can apply to a request that sent the `anthropic-beta` flags `sent`
    /// (each one flag of the header's comma-separated lists; compared trimmed and
    /// case-insensitively).
    pub fn applies_with<'a>(&self, mut sent: impl Iterator<Item = &'a str>) -> bool {
        match &self.requires_beta {
            None => true,
            Some(beta) => sent.any(|flag| flag.trim().eq_ignore_ascii_case(beta)),
        }
    }
}

/// The prices of one model from a moment on, until the next version takes over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceVersion {
    /// The first instant at which this version applies. Requests are priced by the version in
    /// force when they started.
    pub effective_from: DateTime<Utc>,
    /// Prices of requests whose prompt does not exceed the long-prompt threshold (or of every
    /// request when there is no tier).
    pub base: Prices,
    /// An optional tier for long prompts.
    pub long_prompt: Option<LongPromptTier>,
    /// USD per web search (USD 10 per 1,000 searches is `0.01`).
    pub web_search_per_use: Decimal,
}

impl PriceVersion {
    /// This version as it applies to one request that sent the `anthropic-beta` flags `sent`:
    /// without its long-prompt tier when the tier requires a beta the request did not send,
    /// so that its hold, its re-sized hold and its bill all see the same tiers.
    pub fn for_betas<'a>(&self, sent: impl Iterator<Item = &'a str>) -> PriceVersion {
        let mut version = self.clone();
        if version
            .long_prompt
            .as_ref()
            .is_some_and(|tier| !tier.applies_with(sent))
        {
            version.long_prompt = None;
        }
        version
    }

    /// Prices for a request whose prompt is `prompt_tokens` long (applies the tier rule).
    pub fn prices_for(&self, prompt_tokens: u64) -> &Prices {
        match &self.long_prompt {
            Some(tier) if prompt_tokens > tier.threshold_tokens => &tier.prices,
            _ => &self.base,
        }
    }

    /// Exact cost of a usage: sum over the five classes of tokens * price / 1_000_000, plus
    /// web_search_requests * web_search_per_use. No rounding.
    ///
    /// Web fetches are free beyond the tokens they add, so they cost nothing here.
    pub fn cost(&self, usage: &Usage) -> Decimal {
        let tokens = self.prices_for(usage.prompt_tokens()).token_cost(usage);
        let searches =
            Decimal::from(usage.web_search_requests).saturating_mul(self.web_search_per_use);
        tokens.saturating_add(searches)
    }
}

/// One model id as the API accepts it, with its price history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The model id clients send (`"claude-opus-5-5"`).
    pub id: String,
    /// A human name for listings (`"Claude Opus 5.5"`).
    pub display_name: String,
    /// When the model was released, for `GET /v1/models` ordering.
    pub created_at: DateTime<Utc>,
    /// Price versions sorted by `effective_from` ascending.
    pub versions: Vec<PriceVersion>,
}

impl ModelCard {
    /// The latest version with `effective_from <= at`, or `None` if `at` precedes them all.
    pub fn version_at(&self, at: DateTime<Utc>) -> Option<&PriceVersion> {
        let later = self.versions.partition_point(|v| v.effective_from <= at);
        later.checked_sub(1).and_then(|i| self.versions.get(i))
    }
}

/// Why a set of cards cannot form a [`RateCard`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateCardError {
    /// Two cards, or a card and an alias, claim the same id.
    #[error("model id {0:?} is defined twice")]
    DuplicateId(String),
    /// A card has no price version, so nothing could ever be billed for it.
    #[error("model {0:?} has no price version")]
    NoVersions(String),
    /// A card's versions are not strictly ascending by `effective_from`.
    #[error("price versions of model {0:?} are not sorted by effective_from")]
    UnsortedVersions(String),
    /// An alias points at an id that has no card.
    #[error("alias {alias:?} points at unknown model {target:?}")]
    UnknownAliasTarget {
        /// The alias.
        alias: String,
        /// The id it was meant to stand for.
        target: String,
    },
    /// The rate-card file is not TOML of the expected shape.
    #[error("the rate card file is malformed: {0}")]
    Malformed(String),
    /// A price in the rate-card file is not an exact, non-negative decimal string.
    #[error("model {model:?}: {value:?} is not a price (a non-negative decimal string)")]
    InvalidPrice {
        /// The model (its first id) whose entry holds the price.
        model: String,
        /// The price as written.
        value: String,
    },
    /// A date in the rate-card file is not a calendar date or a date-time with an offset.
    #[error("model {model:?}: {value} is not a date or a date-time with an offset")]
    InvalidDate {
        /// The model (its first id) whose entry holds the date.
        model: String,
        /// The date as written.
        value: String,
    },
}

/// Every model tollgate sells, looked up by id or alias.
///
/// Not `Clone`: it is built once and read by every request, so callers share it behind an
/// `Arc<RateCard>` rather than copying the map.
#[derive(Debug)]
pub struct RateCard {
    /// In listing order: newest `created_at` first, ties by id.
    cards: Vec<ModelCard>,
    /// Every accepted id and alias to its index in `cards`.
    index: HashMap<String, usize>,
}

impl RateCard {
    /// Builds a card from model cards plus aliases (`(alias, canonical id)`): ids accepted by
    /// lookup that resolve to another id's card and are not listed on their own.
    pub fn new(
        mut cards: Vec<ModelCard>,
        aliases: &[(&str, &str)],
    ) -> Result<RateCard, RateCardError> {
        for card in &cards {
            if card.versions.is_empty() {
                return Err(RateCardError::NoVersions(card.id.clone()));
            }
            let ascending = card
                .versions
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.effective_from < b.effective_from));
            if !ascending {
                return Err(RateCardError::UnsortedVersions(card.id.clone()));
            }
        }
        cards.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let mut index = HashMap::with_capacity(cards.len() + aliases.len());
        for (i, card) in cards.iter().enumerate() {
            if index.insert(card.id.clone(), i).is_some() {
                return Err(RateCardError::DuplicateId(card.id.clone()));
            }
        }
        for &(alias, target) in aliases {
            let Some(&i) = index.get(target) else {
                return Err(RateCardError::UnknownAliasTarget {
                    alias: alias.to_owned(),
                    target: target.to_owned(),
                });
            };
            if index.insert(alias.to_owned(), i).is_some() {
                return Err(RateCardError::DuplicateId(alias.to_owned()));
            }
        }
        Ok(RateCard { cards, index })
    }

    /// The built-in card: every model of the reference rate card at its official prices, read
    /// from the embedded `rate-card.toml` and checked like any other card.
    ///
    /// Each id the API accepts is its own card, including both the undated and the dated form
    /// of a model (`claude-haiku-4-5` and `claude-haiku-4-5-20251001`), because a client listing
    /// models expects to see every id it may send. The file gives such a pair one entry, so a
    /// price change cannot reach one spelling and miss the other.
    ///
    /// Fails only if the embedded file is malformed, which a unit test rules out for the file
    /// as built; startup reports the error rather than run without prices.
    pub fn builtin() -> Result<RateCard, RateCardError> {
        RateCard::new(builtin::cards()?, &[])
    }

    /// The card of an exact id or alias (e.g. `claude-haiku-4-5` or
    /// `claude-haiku-4-5-20251001`).
    pub fn model(&self, id: &str) -> Option<&ModelCard> {
        self.index.get(id).and_then(|&i| self.cards.get(i))
    }

    /// The price version of `model` in force at `at`.
    pub fn price_at(&self, model: &str, at: DateTime<Utc>) -> Option<&PriceVersion> {
        self.model(model)?.version_at(at)
    }

    /// Every listed model id once, newest first (ties by id), for `GET /v1/models` and the
    /// pricing page. Aliases are not listed.
    pub fn models(&self) -> impl Iterator<Item = &ModelCard> {
        self.cards.iter()
    }
}

#[cfg(test)]
mod tests;
