//! The hold a request reserves from its account's balance before it goes upstream.
//!
//! A hold must bound what the request can cost, because an account admits a request only if
//! its available balance covers the hold, and only the excess of a cost over its own hold can
//! push a balance below zero. Before the upstream answers, nothing is known but the request
//! body, so the first hold is a worst case built from the body's size. As soon as the stream's
//! `message_start` reports the real prompt, the hold shrinks to that prompt's exact cost plus
//! the worst-case output ([`resized_hold`]).
//!
//! What the hold allows for beyond the body's bytes, per kind of content (counted from the
//! decoded body by [`crate::probe`]; docs/adr/0011-media-counted-from-the-decoded-body.md):
//! - **Images**, whatever their source: [`HoldPolicy::media_allowance_tokens`] each. The API
//!   downsizes an image to about 1,600 tokens at most.
//! - **Paged documents** (PDF by `base64`, and any `url` or `file` document, whose size the
//!   body does not show): [`HoldPolicy::document_pages`] × [`HoldPolicy::page_tokens`] each,
//!   by default 100 pages of 3,000 tokens, the API's page limit at the top of its per-page
//!   cost (text plus an image of the page).
//! - **Text documents** (`text` and `content` sources, whose text is in the body): the image
//!   allowance each, for what citations and framing add.
//! - **Server tools**: each use adds input after `message_start` (search results, a fetched
//!   page, code output), so its allowance stays in the hold when it is re-sized. A tool's
//!   uses are its `max_uses`, else [`HoldPolicy::server_tool_uses`]. A web fetch use holds a
//!   paged document's allowance (it may fetch a PDF); any other use
//!   [`HoldPolicy::server_tool_use_tokens`]. Web searches also hold their per-use price.
//!
//! What no hold here bounds: a tool used more often than its allowance assumes, a fetch
//! larger than a paged document's allowance, or a prompt whose real size `message_start`
//! reveals above the hold; the relay then ends the stream at once when the balance cannot
//! cover the re-sized hold (see [`crate::engine::HoldTicket::resize_to_prompt`]).

use rust_decimal::Decimal;

use crate::pricing::{per_million, PriceVersion, Prices};
use crate::probe::{MediaCount, ServerTool, ServerToolKind};
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
    /// Tokens allowed for each image and each text document on top of the body's bytes
    /// (`metering.hold_media_tokens`).
    pub media_allowance_tokens: u64,
    /// Pages assumed for each paged document (`metering.hold_document_pages`).
    pub document_pages: u64,
    /// Tokens assumed per page of a paged document (`metering.hold_page_tokens`).
    pub page_tokens: u64,
    /// Uses assumed for a server tool that declares no `max_uses`
    /// (`metering.hold_server_tool_uses`).
    pub server_tool_uses: u64,
    /// Input tokens one use of a server tool other than web fetch may add
    /// (`metering.hold_server_tool_use_tokens`).
    pub server_tool_use_tokens: u64,
}

/// The default per-image allowance.
///
/// An image costs about width × height / 750 tokens, and the API downsizes images beyond about
/// 1.15 megapixels, which caps one image at roughly 1,600 tokens: 10,000 leaves a margin of
/// more than 6× for images however they are sent (base64, URL or file id).
pub const DEFAULT_MEDIA_ALLOWANCE_TOKENS: u64 = 10_000;

/// The default pages of a paged document: the API's limit of pages per PDF.
pub const DEFAULT_DOCUMENT_PAGES: u64 = 100;

/// The default tokens per page: a PDF page costs its text plus an image of the page,
/// commonly 1,500 to 3,000 tokens; the top of that range.
pub const DEFAULT_PAGE_TOKENS: u64 = 3_000;

/// The default uses of a server tool without `max_uses`. Nothing bounds them; a turn rarely
/// searches or fetches more than a few times.
pub const DEFAULT_SERVER_TOOL_USES: u64 = 10;

/// The default input one server-tool use adds (a page of search results, a code run's
/// output).
pub const DEFAULT_SERVER_TOOL_USE_TOKENS: u64 = 20_000;

impl Default for HoldPolicy {
    fn default() -> Self {
        HoldPolicy {
            bytes_per_token: 1,
            media_allowance_tokens: DEFAULT_MEDIA_ALLOWANCE_TOKENS,
            document_pages: DEFAULT_DOCUMENT_PAGES,
            page_tokens: DEFAULT_PAGE_TOKENS,
            server_tool_uses: DEFAULT_SERVER_TOOL_USES,
            server_tool_use_tokens: DEFAULT_SERVER_TOOL_USE_TOKENS,
        }
    }
}

/// What the holds of a request need to know about it, with the policy's allowances already
/// applied ([`HoldPolicy::shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestShape {
    /// Length of the request body as sent upstream.
    pub body_bytes: usize,
    /// The request's `max_tokens`: the most output it can produce.
    pub max_tokens: u64,
    /// Prompt tokens allowed for media blocks beyond their bytes.
    pub media_tokens: u64,
    /// Input tokens server-tool uses may add, also after `message_start`.
    pub tool_tokens: u64,
    /// Web searches held at their per-use price.
    pub web_searches: u64,
}

impl HoldPolicy {
    /// Tokens allowed for one paged document.
    pub fn document_tokens(&self) -> u64 {
        self.document_pages.saturating_mul(self.page_tokens)
    }

    /// The shape of a request of `body_bytes` with its `max_tokens`, the media and the server
    /// tools the probe found in it.
    pub fn shape(
        &self,
        body_bytes: usize,
        max_tokens: u64,
        media: MediaCount,
        tools: &[ServerTool],
    ) -> RequestShape {
        let media_tokens = u64::from(media.images)
            .saturating_add(u64::from(media.text_documents))
            .saturating_mul(self.media_allowance_tokens)
            .saturating_add(
                u64::from(media.paged_documents).saturating_mul(self.document_tokens()),
            );
        let mut tool_tokens = 0u64;
        let mut web_searches = 0u64;
        for tool in tools {
            let uses = tool.max_uses.unwrap_or(self.server_tool_uses);
            let per_use = match tool.kind {
                ServerToolKind::WebFetch => self.document_tokens(),
                ServerToolKind::WebSearch | ServerToolKind::Other => self.server_tool_use_tokens,
            };
            tool_tokens = tool_tokens.saturating_add(uses.saturating_mul(per_use));
            if tool.kind == ServerToolKind::WebSearch {
                web_searches = web_searches.saturating_add(uses);
            }
        }
        RequestShape {
            body_bytes,
            max_tokens,
            media_tokens,
            tool_tokens,
            web_searches,
        }
    }

    /// An upper bound on the prompt's tokens (exact bound only when `bytes_per_token` is 1):
    /// ceil(body_bytes / bytes_per_token) + the media and server-tool allowances.
    pub fn estimate_prompt_tokens(&self, shape: &RequestShape) -> u64 {
        let per_token = u64::from(self.bytes_per_token.max(1));
        let bytes = u64::try_from(shape.body_bytes).unwrap_or(u64::MAX);
        bytes
            .div_ceil(per_token)
            .saturating_add(shape.media_tokens)
            .saturating_add(shape.tool_tokens)
    }

    /// Worst-case hold before anything is known: the prompt estimate times the highest prompt
    /// price, plus `max_tokens` times the output price, plus the held web searches at their
    /// per-use price, at the long-prompt tier's prices whenever the estimate could exceed its
    /// threshold.
    ///
    /// When the estimate crosses the threshold the real prompt may still fall on either side of
    /// it, so the hold is the larger of the two tiers' holds: the long tier is normally the
    /// dearer, but taking the maximum keeps the bound even for a card where it is not.
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
        let tokens = match &version.long_prompt {
            Some(tier) if prompt > tier.threshold_tokens => base.max(worst(&tier.prices)),
            _ => base,
        };
        tokens.saturating_add(searches_cost(version, shape))
    }
}

/// The held web searches at their per-use price.
fn searches_cost(version: &PriceVersion, shape: &RequestShape) -> Decimal {
    Decimal::from(shape.web_searches).saturating_mul(version.web_search_per_use)
}

/// The hold once message_start revealed the real prompt: the exact cost of the prompt classes
/// in `started` (its output_tokens ignored) plus max_tokens at the output price, plus what the
/// server tools may still add (their tokens at the dearest prompt price, and the held web
/// searches), at the dearer of the tiers the real prompt and the prompt grown by the tools
/// select.
///
/// Server-tool uses already reported in `started` are ignored like its output: their
/// allowance is in `shape`.
pub fn resized_hold(version: &PriceVersion, started: &Usage, shape: &RequestShape) -> Decimal {
    let worst = Usage {
        output_tokens: shape.max_tokens,
        web_search_requests: 0,
        web_fetch_requests: 0,
        ..*started
    };
    let real = started.prompt_tokens();
    let grown = real.saturating_add(shape.tool_tokens);
    let at = |prices: &Prices| {
        prices.token_cost(&worst).saturating_add(per_million(
            Decimal::from(shape.tool_tokens).saturating_mul(prices.max_prompt_price()),
        ))
    };
    let tokens = at(version.prices_for(real)).max(at(version.prices_for(grown)));
    tokens.saturating_add(searches_cost(version, shape))
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

    /// A shape of `body_bytes` with `media_blocks` images at the default allowance.
    fn shape(body_bytes: usize, media_blocks: u32, max_tokens: u64) -> RequestShape {
        let media = MediaCount {
            images: media_blocks,
            ..MediaCount::default()
        };
        HoldPolicy::default().shape(body_bytes, max_tokens, media, &[])
    }

    #[test]
    fn shape_applies_each_kinds_allowance() {
        let policy = HoldPolicy::default();
        let media = MediaCount {
            images: 2,
            paged_documents: 3,
            text_documents: 1,
        };
        let s = policy.shape(100, 7, media, &[]);
        assert_eq!((s.body_bytes, s.max_tokens), (100, 7));
        // 3 × 10,000 for the images and the text document, 3 × 100 pages × 3,000.
        assert_eq!(s.media_tokens, 30_000 + 900_000);
        assert_eq!((s.tool_tokens, s.web_searches), (0, 0));
        let tools = [
            ServerTool {
                kind: ServerToolKind::WebSearch,
                max_uses: Some(3),
            },
            ServerTool {
                kind: ServerToolKind::WebSearch,
                max_uses: None,
            },
            ServerTool {
                kind: ServerToolKind::WebFetch,
                max_uses: Some(2),
            },
            ServerTool {
                kind: ServerToolKind::Other,
                max_uses: None,
            },
        ];
        let s = policy.shape(0, 0, MediaCount::default(), &tools);
        // Searches: 3 + 10 uses of 20,000; fetches: 2 of 300,000; other: 10 of 20,000.
        assert_eq!(s.tool_tokens, 13 * 20_000 + 2 * 300_000 + 10 * 20_000);
        assert_eq!(s.web_searches, 13);
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
            ..HoldPolicy::default()
        };
        let images = |n| MediaCount {
            images: n,
            ..MediaCount::default()
        };
        let loose_shape = |bytes, n| loose.shape(bytes, 0, images(n), &[]);
        assert_eq!(loose.estimate_prompt_tokens(&loose_shape(8, 0)), 2);
        assert_eq!(loose.estimate_prompt_tokens(&loose_shape(9, 0)), 3);
        assert_eq!(loose.estimate_prompt_tokens(&loose_shape(0, 3)), 300);
        let zero = HoldPolicy {
            bytes_per_token: 0,
            media_allowance_tokens: 0,
            ..HoldPolicy::default()
        };
        assert_eq!(
            zero.estimate_prompt_tokens(&zero.shape(7, 0, images(9), &[])),
            7
        );
        let huge = HoldPolicy {
            bytes_per_token: 1,
            media_allowance_tokens: u64::MAX,
            ..HoldPolicy::default()
        };
        assert_eq!(
            huge.estimate_prompt_tokens(&huge.shape(usize::MAX, 0, images(u32::MAX), &[])),
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
    fn a_server_tool_of_absurd_max_uses_saturates_the_hold_without_panicking() {
        let tools = [ServerTool {
            kind: ServerToolKind::WebSearch,
            max_uses: Some(u64::MAX),
        }];
        let policy = HoldPolicy::default();
        let s = policy.shape(100, 1_000, MediaCount::default(), &tools);
        assert_eq!((s.tool_tokens, s.web_searches), (u64::MAX, u64::MAX));
        let v = version("claude-opus-5-5");
        // More than any balance: the request is refused, never admitted on a wrapped hold.
        let hold = policy.initial_hold(&v, &s);
        assert!(hold > dec!(1_000_000_000_000), "{hold}");
        let started = Usage {
            input_tokens: 10,
            ..Usage::default()
        };
        assert!(resized_hold(&v, &started, &s) >= hold / dec!(2));
    }

    #[test]
    fn a_sonnet_4_5_hold_takes_the_long_tier_only_under_the_1m_beta() {
        let card = version("claude-sonnet-4-5");
        let policy = HoldPolicy::default();
        let big = shape(300_000, 0, 1_000);
        let started = Usage {
            input_tokens: 250_000,
            ..Usage::default()
        };
        // Without the beta: base, max prompt price 6, output 15. 300,000 * 6 + 1,000 * 15 =
        // 1,815,000; re-sized: 250,000 * 3 + 1,000 * 15 = 765,000.
        let base = card.for_betas([].into_iter());
        assert_eq!(policy.initial_hold(&base, &big), dec!(1.815));
        assert_eq!(resized_hold(&base, &started, &big), dec!(0.765));
        // With it: long, max prompt price 12, output 22.50. 300,000 * 12 + 1,000 * 22.50 =
        // 3,622,500; re-sized: 250,000 * 6 + 1,000 * 22.50 = 1,522,500.
        let long = card.for_betas(["context-1m-2025-08-07"].into_iter());
        assert_eq!(policy.initial_hold(&long, &big), dec!(3.6225));
        assert_eq!(resized_hold(&long, &started, &big), dec!(1.5225));
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
        assert_eq!(resized_hold(&v, &started, &shape(0, 0, 500)), dec!(0.0191));
    }

    #[test]
    fn resized_hold_follows_the_real_tier() {
        let v = version("claude-haiku-5-5");
        let base = Usage {
            cache_read_tokens: 100_000,
            ..Usage::default()
        };
        // 100,000 * 0.01 + 1,000 * 0.50 = 1,500.
        assert_eq!(resized_hold(&v, &base, &shape(0, 0, 1_000)), dec!(0.0015));
        let long = Usage {
            input_tokens: 1,
            ..base
        };
        // 100,000 * 0.05 + 1 * 0.50 + 1,000 * 2.50 = 7,500.5.
        assert_eq!(
            resized_hold(&v, &long, &shape(0, 0, 1_000)),
            dec!(0.0075005)
        );
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
            let policy = HoldPolicy { bytes_per_token, ..HoldPolicy::default() };
            let media = MediaCount { images: media_blocks, ..MediaCount::default() };
            let shape = policy.shape(body_bytes, max_tokens, media, &[]);
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
            let hold = resized_hold(&v, &started, &shape(0, 0, max_tokens));
            prop_assert!(hold >= v.cost(&last));
            if output_fraction == 1000 {
                prop_assert_eq!(hold, v.cost(&last));
            }
        }

        #[test]
        fn server_tool_allowances_stay_in_the_resized_hold(
            v in any_version(),
            prompt in 0u64..300_000,
            cuts in any::<[u64; 3]>(),
            max_uses in 0u64..6,
            grown_fraction in 0u64..=1000,
            searched in 0u64..6,
            max_tokens in 0u64..100_000,
        ) {
            let policy = HoldPolicy::default();
            let tools = [ServerTool { kind: ServerToolKind::WebSearch, max_uses: Some(max_uses) }];
            let shape = policy.shape(0, max_tokens, MediaCount::default(), &tools);
            let [input, read, w5, w1] = split_prompt(prompt, cuts);
            let started = Usage {
                input_tokens: input,
                cache_read_tokens: read,
                cache_write_5m_tokens: w5,
                cache_write_1h_tokens: w1,
                ..Usage::default()
            };
            // The searches' results grow the input by at most their allowance.
            let last = Usage {
                input_tokens: input + shape.tool_tokens * grown_fraction / 1000,
                output_tokens: max_tokens,
                web_search_requests: searched.min(max_uses),
                ..started
            };
            let hold = resized_hold(&v, &started, &shape);
            prop_assert!(hold >= v.cost(&last), "hold {} < cost {}", hold, v.cost(&last));
        }
    }
}
