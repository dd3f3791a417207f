//! The built-in rate card, read from `rate-card.toml`, a data file embedded at build time.
//!
//! The file's figures are decimal strings, read exactly; its dates are TOML dates. Everything
//! in it is checked here or by [`RateCard::new`](super::RateCard::new), and a malformed file is
//! an error that startup reports, never a panic.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use toml::value::{Datetime, Offset};

use super::{LongPromptTier, ModelCard, PriceVersion, Prices, RateCardError};

/// The card as shipped. Editing it changes what the next build bills.
const RATE_CARD: &str = include_str!("rate-card.toml");

/// The model cards of the embedded file, one per accepted id.
pub(super) fn cards() -> Result<Vec<ModelCard>, RateCardError> {
    parse(RATE_CARD)
}

/// The model cards of a rate-card file's text.
fn parse(text: &str) -> Result<Vec<ModelCard>, RateCardError> {
    let file: File =
        toml::from_str(text).map_err(|error| RateCardError::Malformed(error.to_string()))?;
    let mut cards = Vec::new();
    for model in file.model {
        let Some(first) = model.ids.first() else {
            return Err(RateCardError::Malformed(format!(
                "the model {:?} lists no ids",
                model.display_name
            )));
        };
        let created_at = instant(first, &model.created_at)?;
        let versions = model
            .version
            .iter()
            .map(|version| version.read(first))
            .collect::<Result<Vec<_>, _>>()?;
        // Every id gets its own card with the same history, read once above.
        for id in &model.ids {
            cards.push(ModelCard {
                id: id.clone(),
                display_name: model.display_name.clone(),
                created_at,
                versions: versions.clone(),
            });
        }
    }
    Ok(cards)
}

// The file's shape. Unknown keys are refused, so that a misspelt optional key (a
// `long_promt`, say) is an error rather than a price silently left out.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: Vec<Model>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Model {
    ids: Vec<String>,
    display_name: String,
    created_at: Datetime,
    version: Vec<Version>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Version {
    effective_from: Datetime,
    prices: FilePrices,
    web_search_per_use: String,
    long_prompt: Option<Tier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tier {
    threshold_tokens: u64,
    prices: FilePrices,
    requires_beta: Option<String>,
}

/// Strings, not numbers: a TOML float would be read through `f64`, and `0.1` is not exact
/// there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrices {
    input: String,
    cache_write_5m: String,
    cache_write_1h: String,
    cache_read: String,
    output: String,
}

impl Version {
    fn read(&self, model: &str) -> Result<PriceVersion, RateCardError> {
        let long_prompt = match &self.long_prompt {
            None => None,
            Some(tier) => Some(LongPromptTier {
                threshold_tokens: tier.threshold_tokens,
                prices: tier.prices.read(model)?,
                requires_beta: tier.requires_beta.clone(),
            }),
        };
        Ok(PriceVersion {
            effective_from: instant(model, &self.effective_from)?,
            base: self.prices.read(model)?,
            long_prompt,
            web_search_per_use: price(model, &self.web_search_per_use)?,
        })
    }
}

impl FilePrices {
    fn read(&self, model: &str) -> Result<Prices, RateCardError> {
        Ok(Prices {
            input: price(model, &self.input)?,
            output: price(model, &self.output)?,
            cache_read: price(model, &self.cache_read)?,
            cache_write_5m: price(model, &self.cache_write_5m)?,
            cache_write_1h: price(model, &self.cache_write_1h)?,
        })
    }
}

/// A price as written: a non-negative decimal that fits a `Decimal` without rounding. The
/// scale is kept (`"2.50"` stays `2.50`), so listings show the figure as the card gives it.
fn price(model: &str, text: &str) -> Result<Decimal, RateCardError> {
    match Decimal::from_str_exact(text) {
        Ok(price) if !price.is_sign_negative() => Ok(price),
        _ => Err(RateCardError::InvalidPrice {
            model: model.to_owned(),
            value: text.to_owned(),
        }),
    }
}

/// A TOML date (midnight UTC) or offset date-time as an instant. A local date-time or a bare
/// time names no instant, so it is refused.
fn instant(model: &str, value: &Datetime) -> Result<DateTime<Utc>, RateCardError> {
    let invalid = || RateCardError::InvalidDate {
        model: model.to_owned(),
        value: value.to_string(),
    };
    let date = value.date.ok_or_else(invalid)?;
    let day = NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )
    .ok_or_else(invalid)?;
    match (value.time, value.offset) {
        (None, None) => Ok(day.and_time(NaiveTime::MIN).and_utc()),
        (Some(time), Some(offset)) => {
            let time = NaiveTime::from_hms_nano_opt(
                u32::from(time.hour),
                u32::from(time.minute),
                u32::from(time.second),
                time.nanosecond,
            )
            .ok_or_else(invalid)?;
            let minutes = match offset {
                Offset::Z => 0,
                Offset::Custom { minutes } => i32::from(minutes),
            };
            FixedOffset::east_opt(minutes * 60)
                .and_then(|zone| zone.from_local_datetime(&day.and_time(time)).single())
                .map(|at| at.with_timezone(&Utc))
                .ok_or_else(invalid)
        }
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::RateCard;
    use super::*;

    /// One model entry with one version, with `version` spliced into the version's keys.
    fn file(version: &str) -> String {
        format!(
            "[[model]]\nids = [\"m\"]\ndisplay_name = \"M\"\ncreated_at = 2026-01-01\n\
             [[model.version]]\n{version}\n"
        )
    }

    const PRICES: &str = "prices = { input = \"1\", cache_write_5m = \"1.25\", \
        cache_write_1h = \"2\", cache_read = \"0.10\", output = \"5\" }";

    fn version(effective_from: &str, web_search: &str) -> String {
        format!("effective_from = {effective_from}\n{PRICES}\nweb_search_per_use = {web_search}")
    }

    #[test]
    fn the_embedded_file_is_a_valid_card() {
        let card = RateCard::builtin().unwrap();
        assert_eq!(card.models().count(), cards().unwrap().len());
    }

    /// Figures copied from the rate card of shared/reference/anthropic-api.md, as written
    /// there: the data file must give them digit for digit.
    #[test]
    fn figures_equal_the_reference_rate_card() {
        let card = RateCard::builtin().unwrap();
        let written = |p: &Prices| {
            [
                p.input,
                p.cache_write_5m,
                p.cache_write_1h,
                p.cache_read,
                p.output,
            ]
            .map(|price| price.to_string())
        };
        // | model id | input | 5m cache write | 1h cache write | cache read | output |
        let rows = [
            ("claude-fable-5-1", ["10", "12.50", "20", "0.25", "50"]),
            ("claude-opus-5-5", ["4", "5", "8", "0.20", "20"]),
            ("claude-haiku-4-5-20251001", ["1", "1.25", "2", "0.10", "5"]),
            (
                "claude-opus-4-1-20250805",
                ["15", "18.75", "30", "1.50", "75"],
            ),
            (
                "claude-3-5-haiku-20241022",
                ["0.80", "1", "1.60", "0.08", "4"],
            ),
        ];
        for (id, figures) in rows {
            let model = card.model(id).unwrap();
            assert_eq!(model.versions.len(), 1, "{id}");
            assert_eq!(written(&model.versions[0].base), figures, "{id}");
        }

        // "0.20, then 0.10 from 2026-10-07": a dated price change.
        let sonnet = &card.model("claude-sonnet-5-5").unwrap().versions;
        assert_eq!(written(&sonnet[0].base), ["2", "2.50", "4", "0.20", "10"]);
        assert_eq!(written(&sonnet[1].base), ["2", "2.50", "4", "0.10", "10"]);
        assert_eq!(
            sonnet[1].effective_from.to_rfc3339(),
            "2026-10-07T00:00:00+00:00"
        );

        // "prompts up to 100,000 tokens", and "over 100,000 tokens: every token of the request".
        let haiku = &card.model("claude-haiku-5-5").unwrap().versions[0];
        assert_eq!(
            written(&haiku.base),
            ["0.10", "0.125", "0.20", "0.01", "0.50"]
        );
        let long = haiku.long_prompt.as_ref().unwrap();
        assert_eq!(long.threshold_tokens, 100_000);
        assert_eq!(
            written(&long.prices),
            ["0.50", "0.625", "1.00", "0.05", "2.50"]
        );

        // "web search: USD 10 per 1,000 requests".
        for model in card.models() {
            for version in &model.versions {
                assert_eq!(
                    version.web_search_per_use.to_string(),
                    "0.01",
                    "{}",
                    model.id
                );
            }
        }
    }

    #[test]
    fn dates_are_midnight_utc_or_carry_their_offset() {
        let cards = parse(&file(&version("2026-10-07T08:30:00+08:00", "\"0.01\""))).unwrap();
        assert_eq!(
            cards[0].versions[0].effective_from.to_rfc3339(),
            "2026-10-07T00:30:00+00:00"
        );
        assert_eq!(
            cards[0].created_at.to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        for local in ["2026-10-07T08:30:00", "08:30:00"] {
            assert!(
                matches!(
                    parse(&file(&version(local, "\"0.01\""))),
                    Err(RateCardError::InvalidDate { .. })
                ),
                "{local}"
            );
        }
    }

    #[test]
    fn a_malformed_file_is_an_error_not_a_panic() {
        let malformed = |text: &str| matches!(parse(text), Err(RateCardError::Malformed(_)));
        assert!(malformed("not toml ["));
        assert!(malformed(""));
        // A float would be read through f64; only strings are prices.
        assert!(malformed(&file(&version("2026-01-01", "0.01"))));
        // A misspelt optional key is refused, not ignored.
        assert!(malformed(&file(&format!(
            "{}\nlong_promt = {{ threshold_tokens = 1, {PRICES} }}",
            version("2026-01-01", "\"0.01\"")
        ))));
        assert!(malformed(
            &file(&version("2026-01-01", "\"0.01\"")).replace("ids = [\"m\"]", "ids = []")
        ));
        for bad in ["\"-0.01\"", "\"ten\"", "\"\"", "\"1e-2\"", "\"0.1.2\""] {
            assert_eq!(
                parse(&file(&version("2026-01-01", bad))).unwrap_err(),
                RateCardError::InvalidPrice {
                    model: "m".into(),
                    value: bad.trim_matches('"').into()
                },
                "{bad}"
            );
        }
    }

    #[test]
    fn the_card_checks_run_on_the_file() {
        let descending = format!(
            "{}\n[[model.version]]\n{}",
            file(&version("2026-02-01", "\"0.01\"")),
            version("2026-01-01", "\"0.01\"")
        );
        assert_eq!(
            RateCard::new(parse(&descending).unwrap(), &[]).unwrap_err(),
            RateCardError::UnsortedVersions("m".into())
        );
        let twice = format!("{0}{0}", file(&version("2026-01-01", "\"0.01\"")));
        assert_eq!(
            RateCard::new(parse(&twice).unwrap(), &[]).unwrap_err(),
            RateCardError::DuplicateId("m".into())
        );
    }
}
