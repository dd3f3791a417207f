//! loadgen's own price table and cost arithmetic, which reconciliation prices usage with.
//!
//! loadgen never uses tollgate's rate card or its cost function. If it did, a wrong price or
//! a wrong formula in tollgate would be billed and then "reconciled exactly" by the same
//! code. The table is data loadgen reads itself: by default the file shipped with it
//! (`loadtest/loadgen/prices.yaml`, embedded in the binary), or else a scenario's `prices:`,
//! its `prices_file:`, or `--prices FILE`. Once tollgate serves its public pricing API
//! (`GET /api/v1/pricing`, a later issue), the prices will come from the deployment under test
//! instead, and the arithmetic here stays loadgen's own.
//!
//! The cost of a request is the sum over the five token classes of tokens × price, divided
//! once by 1,000,000, plus the web searches at their per-use price. Nothing is rounded. A
//! price has at most [`MAX_PRICE_DECIMALS`] decimal places, so a cost has at most 18, and
//! `rust_decimal` holds it exactly for any bill below about 79 billion USD (its 96-bit
//! mantissa). Money is never a float: prices are read from their decimal text.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::usage::Usage;
use crate::yaml;

/// The price table shipped with loadgen.
const SHIPPED: &str = include_str!("../prices.yaml");

/// Prices have at most this many decimal places, so that a cost (a price × a count, divided
/// by 10^6) has at most 18, well within the 28 that `rust_decimal` keeps after the point.
pub const MAX_PRICE_DECIMALS: u32 = 12;

/// The divisor of prices per million tokens.
const PER_MILLION: i64 = 1_000_000;

/// A price read from its decimal text: `"2.50"`, or a plain YAML scalar `2.50`, which YAML
/// hands over as the same text. A JSON number is refused rather than read through a float.
fn money<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    struct Money;

    impl Visitor<'_> for Money {
        type Value = Decimal;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a decimal number of USD, such as \"2.50\"")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Decimal, E> {
            Decimal::from_str(text.trim())
                .map_err(|_| E::custom(format!("{text:?} is not a decimal number of USD")))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Decimal, E> {
            Ok(Decimal::from(n))
        }
    }

    deserializer.deserialize_str(Money)
}

/// USD per 1,000,000 tokens of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    /// Uncached input tokens.
    #[serde(deserialize_with = "money")]
    pub input: Decimal,
    /// Generated tokens.
    #[serde(deserialize_with = "money")]
    pub output: Decimal,
    /// Tokens read from the prompt cache.
    #[serde(deserialize_with = "money")]
    pub cache_read: Decimal,
    /// Tokens written to the 5-minute cache.
    #[serde(deserialize_with = "money")]
    pub cache_write_5m: Decimal,
    /// Tokens written to the 1-hour cache.
    #[serde(deserialize_with = "money")]
    pub cache_write_1h: Decimal,
}

impl TokenPrices {
    fn named(&self) -> [(&'static str, Decimal); 5] {
        [
            ("input", self.input),
            ("output", self.output),
            ("cache_read", self.cache_read),
            ("cache_write_5m", self.cache_write_5m),
            ("cache_write_1h", self.cache_write_1h),
        ]
    }

    /// The five classes of `usage` at these prices, in USD × 10^6 (`None` on overflow).
    fn micro_cost(&self, usage: &Usage) -> Option<Decimal> {
        [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_read_tokens, self.cache_read),
            (usage.cache_write_5m_tokens, self.cache_write_5m),
            (usage.cache_write_1h_tokens, self.cache_write_1h),
        ]
        .into_iter()
        .try_fold(Decimal::ZERO, |sum, (tokens, price)| {
            sum.checked_add(Decimal::from(tokens).checked_mul(price)?)
        })
    }
}

/// A higher price for requests with long prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongPrompt {
    /// A request whose prompt (input, cache reads and cache writes) is longer than this many
    /// tokens is priced at `usd_per_mtok` as a whole, output included.
    pub above_tokens: u64,
    pub usd_per_mtok: TokenPrices,
    /// The `anthropic-beta` flag without which the tier never applies. loadgen sends no beta
    /// flags, so it prices such a tier's requests at the base prices, as tollgate bills them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_beta: Option<String>,
}

/// The prices of one or more model ids that cost the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrices {
    /// The model ids as clients send them (`claude-haiku-4-5`, `claude-haiku-4-5-20251001`).
    pub ids: Vec<String>,
    pub usd_per_mtok: TokenPrices,
    /// USD per server-side web search (USD 10 per 1,000 searches is `0.01`).
    #[serde(deserialize_with = "money")]
    pub web_search_per_use: Decimal,
    /// An optional long-prompt tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_prompt: Option<LongPrompt>,
}

impl ModelPrices {
    /// The token prices of a request whose prompt is `prompt_tokens` long, sent without beta
    /// flags (a tier that requires one never applies).
    pub fn token_prices(&self, prompt_tokens: u64) -> &TokenPrices {
        match &self.long_prompt {
            Some(tier) if prompt_tokens > tier.above_tokens && tier.requires_beta.is_none() => {
                &tier.usd_per_mtok
            }
            _ => &self.usd_per_mtok,
        }
    }

    /// The exact cost of `usage` in USD, unrounded; `None` only if it overflows, which no
    /// count a response can report reaches at real prices.
    pub fn cost(&self, usage: &Usage) -> Option<Decimal> {
        let micro = self.token_prices(usage.prompt_tokens()).micro_cost(usage)?;
        let searches =
            Decimal::from(usage.web_search_requests).checked_mul(self.web_search_per_use)?;
        micro
            .checked_div(Decimal::from(PER_MILLION))?
            .checked_add(searches)
    }
}

/// A price table that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceError(pub String);

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PriceError {}

/// The prices of every model a run may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub models: Vec<ModelPrices>,
}

impl PriceTable {
    /// The table shipped with loadgen (`loadtest/loadgen/prices.yaml`).
    pub fn shipped() -> Result<PriceTable, PriceError> {
        PriceTable::from_yaml(SHIPPED).map_err(|e| PriceError(format!("shipped prices: {e}")))
    }

    /// Parses and checks a table from YAML text.
    pub fn from_yaml(text: &str) -> Result<PriceTable, PriceError> {
        let table: PriceTable = yaml::from_str(text).map_err(|e| {
            if e.path.is_empty() {
                PriceError(e.message)
            } else {
                PriceError(format!("{}: {}", e.path, e.message))
            }
        })?;
        table.check()?;
        Ok(table)
    }

    /// Reads, parses and checks a price file.
    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PriceError(format!("{}: {e}", path.display())))?;
        PriceTable::from_yaml(&text).map_err(|e| PriceError(format!("{}: {e}", path.display())))
    }

    /// Refuses a table that cannot price exactly: no models, an id twice, a negative price, or
    /// one with more than [`MAX_PRICE_DECIMALS`] decimal places.
    pub fn check(&self) -> Result<(), PriceError> {
        if self.models.is_empty() {
            return Err(PriceError("models: must list at least one model".into()));
        }
        let mut seen = HashMap::new();
        for (i, model) in self.models.iter().enumerate() {
            if model.ids.is_empty() {
                return Err(PriceError(format!("models[{i}].ids: must name a model")));
            }
            for id in &model.ids {
                if id.trim().is_empty() {
                    return Err(PriceError(format!("models[{i}].ids: an id is empty")));
                }
                if let Some(first) = seen.insert(id.as_str(), i) {
                    return Err(PriceError(format!(
                        "models[{i}].ids: {id:?} is priced twice (also in models[{first}])"
                    )));
                }
            }
            let mut prices: Vec<(String, Decimal)> = model
                .usd_per_mtok
                .named()
                .iter()
                .map(|(name, price)| (format!("usd_per_mtok.{name}"), *price))
                .collect();
            prices.push(("web_search_per_use".into(), model.web_search_per_use));
            if let Some(tier) = &model.long_prompt {
                prices.extend(
                    tier.usd_per_mtok
                        .named()
                        .iter()
                        .map(|(name, price)| (format!("long_prompt.usd_per_mtok.{name}"), *price)),
                );
            }
            for (field, price) in prices {
                if price.is_sign_negative() && !price.is_zero() {
                    return Err(PriceError(format!(
                        "models[{i}].{field}: must not be negative"
                    )));
                }
                if price.normalize().scale() > MAX_PRICE_DECIMALS {
                    return Err(PriceError(format!(
                        "models[{i}].{field}: at most {MAX_PRICE_DECIMALS} decimal places"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The prices of model `id`.
    pub fn model(&self, id: &str) -> Option<&ModelPrices> {
        self.models.iter().find(|m| m.ids.iter().any(|i| i == id))
    }

    /// The exact cost of `usage` on model `id`.
    pub fn cost(&self, id: &str, usage: &Usage) -> Result<Decimal, PriceError> {
        let model = self
            .model(id)
            .ok_or_else(|| PriceError(format!("model {id} is not in loadgen's price table")))?;
        model
            .cost(usage)
            .ok_or_else(|| PriceError(format!("the cost of {usage:?} on {id} overflows")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn shipped() -> PriceTable {
        PriceTable::shipped().unwrap()
    }

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn the_shipped_table_is_valid_and_prices_every_scenario_model() {
        let table = shipped();
        for id in [
            "claude-sonnet-5-5",
            "claude-haiku-4-5",
            "claude-haiku-4-5-20251001",
            "claude-opus-5-5",
            "claude-haiku-5-5",
            "claude-sonnet-4-5",
        ] {
            assert!(table.model(id).is_some(), "{id}");
        }
        assert!(table.model("claude-haiku-9").is_none());
    }

    #[test]
    fn every_class_at_its_own_price() {
        // claude-sonnet-5-5 on 2026-12-01: 2 input, 10 output, 0.10 cache read, 2.50 5-minute
        // and 4 1-hour cache writes, per million tokens.
        // 1000×2 + 500×10 + 300×0.10 + 120×2.50 + 40×4 = 2000 + 5000 + 30 + 300 + 160 = 7490
        // millionths of a dollar.
        let cost = shipped()
            .cost(
                "claude-sonnet-5-5",
                &Usage {
                    input_tokens: 1000,
                    output_tokens: 500,
                    cache_read_tokens: 300,
                    cache_write_5m_tokens: 120,
                    cache_write_1h_tokens: 40,
                    web_search_requests: 0,
                },
            )
            .unwrap();
        assert_eq!(cost, dec!(0.00749));
    }

    #[test]
    fn a_prompt_over_the_threshold_prices_the_whole_request_at_the_tier() {
        let table = shipped();
        // claude-haiku-5-5: 0.10 / 0.50 up to 100,000 prompt tokens, 0.50 / 2.50 above.
        // At the threshold: 100000×0.10 + 1000×0.50 = 10000 + 500 = 10500 millionths.
        let at = table
            .cost("claude-haiku-5-5", &usage(100_000, 1000))
            .unwrap();
        assert_eq!(at, dec!(0.0105));
        // One token over, via a cache read (0.05 in the tier): 100000×0.50 + 1×0.05 +
        // 1000×2.50 = 50000 + 0.05 + 2500 = 52500.05 millionths.
        let over = Usage {
            cache_read_tokens: 1,
            ..usage(100_000, 1000)
        };
        let over = table.cost("claude-haiku-5-5", &over).unwrap();
        assert_eq!(over, dec!(0.05250005));
    }

    #[test]
    fn web_searches_add_their_per_use_price() {
        // claude-opus-5-5: 10×4 + 20×20 = 440 millionths, plus 3 searches at 0.01.
        let cost = shipped()
            .cost(
                "claude-opus-5-5",
                &Usage {
                    web_search_requests: 3,
                    ..usage(10, 20)
                },
            )
            .unwrap();
        assert_eq!(cost, dec!(0.03044));
    }

    #[test]
    fn nothing_is_rounded() {
        let table = shipped();
        // One output token of claude-haiku-5-5 costs 0.50 / 10^6 = 0.0000005 USD.
        let one = table.cost("claude-haiku-5-5", &usage(0, 1)).unwrap();
        assert_eq!(one, dec!(0.0000005));
        let total: Decimal = (0..1_000_000).map(|_| one).sum();
        assert_eq!(total, dec!(0.5));
        assert_eq!(
            table.cost("claude-haiku-5-5", &Usage::default()).unwrap(),
            Decimal::ZERO
        );
        // The largest counts a response can report do not overflow at real prices.
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            ..Usage::default()
        };
        assert!(table.cost("claude-opus-4-1-20250805", &huge).is_ok());
    }

    #[test]
    fn an_unknown_model_is_an_error_not_a_zero() {
        let error = shipped().cost("claude-nope", &usage(1, 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "model claude-nope is not in loadgen's price table"
        );
    }

    #[test]
    fn a_tier_that_requires_a_beta_never_prices_loadgens_requests() {
        let table = shipped();
        let sonnet = table.model("claude-sonnet-4-5").unwrap();
        let tier = sonnet.long_prompt.as_ref().unwrap();
        assert_eq!(tier.requires_beta.as_deref(), Some("context-1m-2025-08-07"));
        // loadgen sends no beta: 250,000 * 3 + 16 * 15 at the base, as tollgate bills it.
        let cost = table
            .cost("claude-sonnet-4-5", &usage(250_000, 16))
            .unwrap();
        assert_eq!(cost, dec!(0.75024));
    }

    const ONE: &str = r#"
models:
  - ids: [m]
    usd_per_mtok: { input: "1", output: 2.5, cache_read: "0.1", cache_write_5m: "1.25", cache_write_1h: 2 }
    web_search_per_use: "0.01"
"#;

    #[test]
    fn prices_are_read_from_their_text() {
        let table = PriceTable::from_yaml(ONE).unwrap();
        let model = table.model("m").unwrap();
        assert_eq!(model.usd_per_mtok.output, dec!(2.5));
        assert_eq!(model.usd_per_mtok.cache_read, dec!(0.1));
        assert_eq!(model.usd_per_mtok.cache_write_1h, dec!(2));
        assert!(model.long_prompt.is_none());
    }

    #[test]
    fn a_table_that_cannot_price_exactly_is_refused_naming_the_field() {
        for (from, to, wanted) in [
            ("input: \"1\"", "input: \"-1\"", "models[0].usd_per_mtok.input: must not be negative"),
            (
                "output: 2.5",
                "output: 0.0000000000001",
                "models[0].usd_per_mtok.output: at most 12 decimal places",
            ),
            (
                "cache_read: \"0.1\"",
                "cache_read: \"cheap\"",
                "models[0].usd_per_mtok.cache_read: \"cheap\" is not a decimal number of USD",
            ),
            (
                "cache_read: \"0.1\"",
                "cache_read: \"0.1\", cache_reads: 1",
                "models[0].usd_per_mtok.cache_reads: unknown field `cache_reads`",
            ),
            ("ids: [m]", "ids: []", "models[0].ids: must name a model"),
            (
                "web_search_per_use: \"0.01\"",
                "web_search_per_use: \"0.01\"\n  - ids: [n, m]\n    usd_per_mtok: { input: 1, output: 1, cache_read: 1, cache_write_5m: 1, cache_write_1h: 1 }\n    web_search_per_use: 0",
                "models[1].ids: \"m\" is priced twice (also in models[0])",
            ),
        ] {
            let text = ONE.replace(from, to);
            assert_ne!(text, ONE, "{from}");
            let error = PriceTable::from_yaml(&text).unwrap_err().to_string();
            assert!(error.starts_with(wanted), "{to}: {error}");
        }
        let error = PriceTable::from_yaml("models: []").unwrap_err();
        assert_eq!(error.to_string(), "models: must list at least one model");
    }
}
