//! The hold a request reserves from its account's balance before it goes upstream.
//!
//! A hold must bound what the request can cost, because an account admits a request only if
//! its available balance covers the hold, and only the excess of a cost over its own hold can
//! push a balance below zero. Before the upstream answers, nothing is known but the request
//! body, so the first hold is a worst case built from the body's size. As soon as the stream's
//! `message_start` reports the real prompt, the hold shrinks to that prompt's exact cost plus
//! the worst-case output ([`resized_hold`]).
//!
//! What the holds here do not bound, by design:
//! - **Web search uses.** Their number is chosen by the model during the turn and nothing in the
//!   request limits it (`max_uses` is optional), so their per-use price is not held. A turn that
//!   searches can cost more than its hold by exactly those uses.
//! - **Prompt growth after `message_start`.** Server tools (web search, web fetch) append their
//!   results to the prompt mid-turn, so the final cumulative input can exceed what
//!   `message_start` reported; [`resized_hold`] holds only what was reported.

use memchr::memmem;
use rust_decimal::Decimal;

use crate::pricing::{per_million, PriceVersion, Prices};
use crate::Usage;

/// How pessimistic the initial hold is about the prompt.
///
/// The trade-off is in `bytes_per_token`. Every token of text is at least one byte of the JSON
/// body, so a divisor of 1 can never under-estimate the text of a prompt and is strictly safe.
/// But a Claude Code request is hundreds of KB, mostly cache reads billed at a fraction of the
/// input price, and the hold prices every estimated token at the dearest prompt class: with a
/// divisor of 1 such a hold is often tens of times the real cost, and a small balance cannot
/// run requests in parallel. A divisor of 3 or 4 (typical English text and code average about
/// 3.5 to 4 bytes per token, and JSON escaping only adds bytes) admits far more parallel work,
/// at the risk that a pathological prompt (one token per byte, e.g. unusual Unicode or random
/// characters) costs more than its hold until `message_start` re-sizes it. The hold is
/// re-sized within the first event of the stream, so the exposure is the gap between the
/// estimate and the real prompt of requests in flight before their first byte, not their
/// whole duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    /// Body bytes counted as one prompt token. At least 1; 1 is strictly safe, and 0 is treated
    /// as 1.
    pub bytes_per_token: u32,
    /// Tokens allowed for each image or document block on top of the body's bytes.
    pub media_allowance_tokens: u64,
}

/// The default per-block media allowance.
///
/// An image costs about width × height / 750 tokens, and the API downsizes images beyond about
/// 1.15 megapixels, which caps one image at roughly 1,600 tokens: 10,000 leaves a margin of
/// more than 6× for images however they are sent (base64, URL or file id). A PDF document
/// costs per page (its text plus an image of the page, commonly 1,500 to 3,000 tokens a page),
/// so a multi-page document is only partly covered by the allowance. Sent inline, its base64
/// bytes are counted as tokens too, which covers a lot of it; sent by URL or file id, a long
/// document can exceed its hold by the pages beyond the allowance until `message_start`
/// re-sizes the hold to the real prompt.
pub const DEFAULT_MEDIA_ALLOWANCE_TOKENS: u64 = 10_000;

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            bytes_per_token: 1,
            media_allowance_tokens: DEFAULT_MEDIA_ALLOWANCE_TOKENS,
        }
    }
}

/// What the initial hold needs to know about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestShape {
    /// Length of the request body as sent upstream.
    pub body_bytes: usize,
    /// Image and document blocks found in the body (possibly over-counted).
    pub media_blocks: u32,
    /// The request's `max_tokens`: the most output it can produce.
    pub max_tokens: u64,
}

impl RequestShape {
    /// The shape of a request body with its `max_tokens`.
    ///
    /// Media blocks are counted by scanning for the JSON strings `"image"` and `"document"`
    /// rather than parsing: a block's `"type":"image"` always contains one, and other
    /// occurrences (a tool schema property named `image`, say) only make the hold larger,
    /// which is safe. Text mentioning the words cannot match, because the quotes inside a JSON
    /// string are escaped.
    pub fn of(body: &[u8], max_tokens: u64) -> RequestShape {
        let images = memmem::find_iter(body, b"\"image\"").count();
        let documents = memmem::find_iter(body, b"\"document\"").count();
        let media_blocks = u32::try_from(images.saturating_add(documents)).unwrap_or(u32::MAX);
        RequestShape {
            body_bytes: body.len(),
            media_blocks,
            max_tokens,
        }
    }
}

impl HoldPolicy {
    /// An upper bound on the prompt's tokens (exact bound only when `bytes_per_token` is 1):
    /// ceil(body_bytes / bytes_per_token) + media_blocks * media_allowance_tokens.
    pub fn estimate_prompt_tokens(&self, shape: &RequestShape) -> u64 {
        let per_token = u64::from(self.bytes_per_token.max(1));
        let bytes = u64::try_from(shape.body_bytes).unwrap_or(u64::MAX);
        let text = bytes.div_ceil(per_token);
        let media = u64::from(shape.media_blocks).saturating_mul(self.media_allowance_tokens);
        text.saturating_add(media)
    }

    /// Worst-case hold before anything is known: the prompt estimate times the highest prompt
    /// price, plus `max_tokens` times the output price, at the long-prompt tier's prices
    /// whenever the estimate could exceed its threshold.
    ///
    /// When the estimate crosses the threshold the real prompt may still fall on either side of
    /// it, so the hold is the larger of the two tiers' holds: the long tier is normally the
    /// dearer, but taking the maximum keeps the bound even for a card where it is not.
    ///
    /// Web search uses are not in the hold: nothing in the request bounds their number.
    pub fn initial_hold(&self, version: &PriceVersion, shape: &RequestShape) -> Decimal {
        let prompt = self.estimate_prompt_tokens(shape);
        let worst = |prices: &Prices| {
            per_million(
                Decimal::from(prompt)
                    .saturating_mul(prices.max_prompt_price())
                    .saturating_add(Decimal::from(shape.max_tokens).saturating_mul(prices.output)),
            )
        };
        let base = worst(&version.base);
        match &version.long_prompt {
            Some(tier) if prompt > tier.threshold_tokens => base.max(worst(&tier.prices)),
            _ => base,
        }
    }
}

/// The hold once message_start revealed the real prompt: the exact cost of the prompt classes
/// in `started` (its output_tokens ignored) at the tier the real prompt selects, plus
/// max_tokens * that tier's output price.
///
/// Server-tool uses in `started` are ignored like its output: web searches are never held (see
/// the module documentation).
pub fn resized_hold(version: &PriceVersion, started: &Usage, max_tokens: u64) -> Decimal {
    let worst = Usage {
        output_tokens: max_tokens,
        ..*started
    };
    version
        .prices_for(started.prompt_tokens())
        .token_cost(&worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::RateCard;
    use chrono::{DateTime, NaiveDate, Utc};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn version(model: &str) -> PriceVersion {
        RateCard::builtin()
            .unwrap()
            .price_at(model, at(2026, 11, 1))
            .unwrap()
            .clone()
    }

    fn shape(body_bytes: usize, media_blocks: u32, max_tokens: u64) -> RequestShape {
        RequestShape {
            body_bytes,
            media_blocks,
            max_tokens,
        }
    }

    #[test]
    fn shape_counts_media_blocks() {
        let body = br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":[
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},
            {"type":"document","source":{"type":"url","url":"https://x/y.pdf"}},
            {"type":"text","text":"describe the \"image\" and the image/png"}]}]}"#;
        let s = RequestShape::of(body, 10);
        assert_eq!(s.body_bytes, body.len());
        assert_eq!(s.media_blocks, 2);
        assert_eq!(s.max_tokens, 10);
        assert_eq!(RequestShape::of(b"", 0).media_blocks, 0);
        // A property named "image" over-counts, which only makes the hold larger.
        assert_eq!(RequestShape::of(br#"{"image":1}"#, 0).media_blocks, 1);
    }

    #[test]
    fn estimate_rounds_up_and_adds_media() {
        let strict = HoldPolicy::default();
        assert_eq!(strict.bytes_per_token, 1);
        assert_eq!(strict.media_allowance_tokens, 10_000);
        assert_eq!(strict.estimate_prompt_tokens(&shape(1234, 0, 0)), 1234);
        assert_eq!(strict.estimate_prompt_tokens(&shape(1234, 2, 0)), 21_234);
        let loose = HoldPolicy {
            bytes_per_token: 4,
            media_allowance_tokens: 100,
        };
        assert_eq!(loose.estimate_prompt_tokens(&shape(8, 0, 0)), 2);
        assert_eq!(loose.estimate_prompt_tokens(&shape(9, 0, 0)), 3);
        assert_eq!(loose.estimate_prompt_tokens(&shape(0, 3, 0)), 300);
        let zero = HoldPolicy {
            bytes_per_token: 0,
            media_allowance_tokens: 0,
        };
        assert_eq!(zero.estimate_prompt_tokens(&shape(7, 9, 0)), 7);
        let huge = HoldPolicy {
            bytes_per_token: 1,
            media_allowance_tokens: u64::MAX,
        };
        assert_eq!(
            huge.estimate_prompt_tokens(&shape(usize::MAX, u32::MAX, 0)),
            u64::MAX
        );
    }

    #[test]
    fn initial_hold_by_hand() {
        // Opus 5.5: 10,000 bytes at the 1h write price 8 = 80,000, plus 1,000 output at 20 =
        // 20,000: 100,000 / 1e6 = 0.1.
        let v = version("claude-opus-5-5");
        let hold = HoldPolicy::default().initial_hold(&v, &shape(10_000, 0, 1_000));
        assert_eq!(hold, dec!(0.1));
    }

    #[test]
    fn initial_hold_uses_long_tier_when_estimate_crosses_threshold() {
        let v = version("claude-haiku-5-5");
        let policy = HoldPolicy::default();
        // 100,000 tokens cannot cross the threshold: base tier, max prompt price 0.20, output
        // 0.50. 100,000 * 0.20 + 1,000 * 0.50 = 20,500.
        assert_eq!(
            policy.initial_hold(&v, &shape(100_000, 0, 1_000)),
            dec!(0.0205)
        );
        // One byte more could: long tier, max prompt price 1.00, output 2.50.
        // 100,001 * 1.00 + 1,000 * 2.50 = 102,501.
        assert_eq!(
            policy.initial_hold(&v, &shape(100_001, 0, 1_000)),
            dec!(0.102501)
        );
        // Media allowance alone pushes the estimate over: 90,000 + 2 * 10,000 = 110,000.
        // 110,000 * 1.00 + 0 output.
        assert_eq!(policy.initial_hold(&v, &shape(90_000, 2, 0)), dec!(0.11));
    }

    #[test]
    fn initial_hold_takes_the_dearer_tier_if_long_is_cheaper() {
        let mut v = version("claude-haiku-5-5");
        let tier = v.long_prompt.as_mut().unwrap();
        tier.prices = Prices {
            input: dec!(0.01),
            output: dec!(0.01),
            cache_read: dec!(0.01),
            cache_write_5m: dec!(0.01),
            cache_write_1h: dec!(0.01),
        };
        // Base tier: 200,000 * 0.20 + 10 * 0.50 = 40,005.
        assert_eq!(
            HoldPolicy::default().initial_hold(&v, &shape(200_000, 0, 10)),
            dec!(0.040005)
        );
    }

    #[test]
    fn resized_hold_by_hand() {
        // Opus 5.5 started with input 1000 (4), cache read 2000 (0.20), 5m 300 (5), 1h 400 (8):
        // 4000 + 400 + 1500 + 3200 = 9100; output ignored; plus max_tokens 500 * 20 = 10000.
        let v = version("claude-opus-5-5");
        let started = Usage {
            input_tokens: 1000,
            output_tokens: 7,
            cache_read_tokens: 2000,
            cache_write_5m_tokens: 300,
            cache_write_1h_tokens: 400,
            web_search_requests: 3,
            web_fetch_requests: 0,
        };
        assert_eq!(resized_hold(&v, &started, 500), dec!(0.0191));
    }

    #[test]
    fn resized_hold_follows_the_real_tier() {
        let v = version("claude-haiku-5-5");
        let base = Usage {
            cache_read_tokens: 100_000,
            ..Usage::default()
        };
        // 100,000 * 0.01 + 1,000 * 0.50 = 1,500.
        assert_eq!(resized_hold(&v, &base, 1_000), dec!(0.0015));
        let long = Usage {
            input_tokens: 1,
            ..base
        };
        // 100,000 * 0.05 + 1 * 0.50 + 1,000 * 2.50 = 7,500.5.
        assert_eq!(resized_hold(&v, &long, 1_000), dec!(0.0075005));
    }

    fn any_version() -> impl Strategy<Value = PriceVersion> {
        let card = RateCard::builtin().unwrap();
        let versions: Vec<PriceVersion> = card
            .models()
            .flat_map(|m| m.versions.iter().cloned())
            .collect();
        proptest::sample::select(versions)
    }

    /// Splits `total` prompt tokens over the four prompt classes by three cut points.
    fn split_prompt(total: u64, cuts: [u64; 3]) -> [u64; 4] {
        let mut c = cuts.map(|x| if total == 0 { 0 } else { x % (total + 1) });
        c.sort_unstable();
        [c[0], c[1] - c[0], c[2] - c[1], total - c[2]]
    }

    proptest! {
        #[test]
        fn initial_hold_bounds_any_cost_within_the_estimate(
            v in any_version(),
            body_bytes in 0usize..400_000,
            media_blocks in 0u32..4,
            bytes_per_token in 1u32..6,
            max_tokens in 0u64..200_000,
            prompt_fraction in 0u64..=1000,
            cuts in any::<[u64; 3]>(),
            output_fraction in 0u64..=1000,
            web_fetches in 0u64..5,
        ) {
            let policy = HoldPolicy { bytes_per_token, media_allowance_tokens: 10_000 };
            let shape = RequestShape { body_bytes, media_blocks, max_tokens };
            let estimate = policy.estimate_prompt_tokens(&shape);
            let prompt = estimate * prompt_fraction / 1000;
            let [input, read, w5, w1] = split_prompt(prompt, cuts);
            let usage = Usage {
                input_tokens: input,
                output_tokens: max_tokens * output_fraction / 1000,
                cache_read_tokens: read,
                cache_write_5m_tokens: w5,
                cache_write_1h_tokens: w1,
                web_search_requests: 0,
                web_fetch_requests: web_fetches,
            };
            prop_assert_eq!(usage.prompt_tokens(), prompt);
            let hold = policy.initial_hold(&v, &shape);
            let cost = v.cost(&usage);
            prop_assert!(hold >= cost, "hold {} < cost {} for {:?}", hold, cost, usage);
        }

        #[test]
        fn resized_hold_bounds_the_final_cost(
            v in any_version(),
            prompt in 0u64..300_000,
            cuts in any::<[u64; 3]>(),
            started_output in 0u64..10,
            max_tokens in 0u64..200_000,
            output_fraction in 0u64..=1000,
        ) {
            let [input, read, w5, w1] = split_prompt(prompt, cuts);
            let started = Usage {
                input_tokens: input,
                output_tokens: started_output,
                cache_read_tokens: read,
                cache_write_5m_tokens: w5,
                cache_write_1h_tokens: w1,
                ..Usage::default()
            };
            let last = Usage {
                output_tokens: max_tokens * output_fraction / 1000,
                ..started
            };
            let hold = resized_hold(&v, &started, max_tokens);
            prop_assert!(hold >= v.cost(&last));
            if output_fraction == 1000 {
                prop_assert_eq!(hold, v.cost(&last));
            }
        }
    }
}
