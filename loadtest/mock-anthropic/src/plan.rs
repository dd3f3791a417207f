//! What one request will produce, resolved once from the config, the request's overrides and
//! the per-request draws.
//!
//! The server and [`planned_usage`] both go through [`plan_messages`], so what a load
//! generator predicts and what the mock sends can never disagree.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::{MockConfig, Overrides};
use crate::text;

/// How an injected stream failure ends the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// An `event: error` (overloaded_error) followed by a clean end of the body.
    ErrorEvent,
    /// The body fails, so the server cuts the connection without finishing the response.
    Reset,
}

/// An injected failure, firing once `after_tokens` output tokens have been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failure {
    pub after_tokens: u64,
    pub kind: FailureKind,
}

/// How a `/v1/messages` request ends, as planned by the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// A complete message (or stream up to `message_stop`).
    Complete,
    /// An error response with this HTTP status instead of a message.
    Status(u16),
    /// Streaming: `event: error` (overloaded_error) after this many output tokens, then the
    /// end of the body. With 0 the error directly follows `message_start`.
    ErrorAfter(u64),
    /// Streaming: the connection is cut after this many output tokens.
    ResetAfter(u64),
}

/// The usage the mock reports for a request, and how the request ends.
///
/// The counts are the final cumulative usage of a *complete* response (the last
/// `message_delta` of a stream, or the `usage` of a Message), whatever the [`Fate`]: a
/// request that fails or is abandoned would have reported exactly these.
/// `cache_write_5m_tokens + cache_write_1h_tokens` is the reported
/// `cache_creation_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub web_search_requests: u64,
    pub fate: Fate,
}

/// The usage and fate the mock plans for a `POST /v1/messages` body, exactly as the server
/// resolves it: same overrides, same seeded draws. `None` when the server would refuse the
/// body with a 400 (not a JSON object with `model` and a positive `max_tokens`, or a bad
/// `"mock"` object). Authentication is not considered.
pub fn planned_usage(config: &MockConfig, body: &[u8]) -> Option<PlannedUsage> {
    plan_messages(config, body)
        .ok()
        .map(|(_, plan)| plan.usage())
}

/// The bytes of text the first `tokens` output tokens of a `/v1/messages` body take, as the
/// mock streams them in its text deltas (plain ASCII words, so no JSON escaping). `None` when
/// the server would refuse the body. A load generator uses it to predict what a relay that
/// bills the output it relayed charges for a stream cut after `tokens` tokens.
pub fn planned_output_bytes(config: &MockConfig, body: &[u8], tokens: u64) -> Option<u64> {
    let (_, plan) = plan_messages(config, body).ok()?;
    let mut text = Vec::new();
    text::push_tokens(&mut text, plan.text_key, 0, tokens.min(plan.output_tokens));
    u64::try_from(text.len()).ok()
}

/// Everything about one response that does not depend on the wire format.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_5m_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub web_search_requests: u64,
    pub output_tokens: u64,
    /// The wanted output was longer than `max_tokens`, so the stop reason is `max_tokens`.
    pub capped: bool,
    pub omit_cache_breakdown: bool,
    pub usage_in_delta: bool,
    /// Report no usage anywhere.
    pub omit_usage: bool,
    /// Streaming: the `input_tokens` every `message_delta` reports instead of the real one.
    pub delta_input_tokens: Option<i64>,
    /// Streaming: the `output_tokens` the final `message_delta` reports instead.
    pub final_output_tokens: Option<i64>,
    /// Non-streaming: no `output_tokens` in the Message's usage.
    pub omit_output_usage: bool,
    /// Non-streaming: a 200 whose body is an error object, not a Message.
    pub error_body_with_200: bool,
    pub ttft: Duration,
    pub inter_token: Duration,
    pub tokens_per_chunk: u64,
    /// Streaming only: always `None` for a non-streaming request.
    pub failure: Option<Failure>,
    pub delta_every: Option<u64>,
    /// Answer with this error status instead of a message.
    pub error_status: Option<StatusCode>,
    /// The error's message, when the request chose one.
    pub error_message: Option<String>,
    /// Keys the generated text: a hash of the seed and the raw body.
    pub text_key: u64,
    /// The request asked for SSE.
    pub stream: bool,
}

/// The fields of a Messages request the mock acts on. Everything else is skipped unparsed
/// (but still checked to be JSON), so bodies of any shape pass.
#[derive(Deserialize)]
struct MessagesRequest {
    model: Option<String>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
    mock: Option<Overrides>,
}

/// Parses and plans a `/v1/messages` body: the model it names and what the mock will answer.
/// The error is the message of the 400 the server sends.
pub(crate) fn plan_messages(config: &MockConfig, body: &[u8]) -> Result<(String, Plan), String> {
    let request: MessagesRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    let model = request
        .model
        .ok_or_else(|| String::from("model: Field required"))?;
    let max_tokens = match request.max_tokens {
        None => return Err(String::from("max_tokens: Field required")),
        Some(0) => {
            return Err(String::from(
                "max_tokens: must be greater than or equal to 1",
            ))
        }
        Some(n) => n,
    };
    let overrides = request.mock.unwrap_or_default();
    let fetched_documents = if config.document_input_tokens > 0 {
        fetched_documents(body)
    } else {
        0
    };
    let request = RequestFacts {
        fetched_documents,
        body_len: body.len(),
        body_key: text::hash_bytes(config.seed, body),
        max_tokens,
        stream: request.stream.unwrap_or(false),
    };
    Ok((model, Plan::resolve(config, &overrides, &request)?))
}

/// What planning needs to know about a request besides its overrides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestFacts {
    /// `document` blocks with a `url` or `file` source, counted only when
    /// `document_input_tokens` asks for them.
    pub fetched_documents: u64,
    pub body_len: usize,
    /// A hash of the seed and the raw body: keys the text and every per-request draw.
    pub body_key: u64,
    /// Caps the output length.
    pub max_tokens: u64,
    pub stream: bool,
}

/// The independent per-request draws, each a pure function of the body key.
struct Draws {
    key: u64,
}

impl Draws {
    /// Separates the draws from the text, which uses the body key directly.
    const DOMAIN: u64 = 0x6D6F_636B_2D66_6174;
    const OUTPUT_LEN: u64 = 0;
    const CACHE_HIT: u64 = 1;
    const CACHE_WRITE: u64 = 2;
    const FATE: u64 = 3;
    const CUT_POINT: u64 = 4;

    fn new(body_key: u64) -> Self {
        Self {
            key: text::mix(body_key ^ Self::DOMAIN),
        }
    }

    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&self, stream: u64) -> f64 {
        (text::nth(self.key, stream) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high]` (the modulo bias is negligible at these ranges).
    fn between(&self, stream: u64, low: u64, high: u64) -> u64 {
        match (high - low).checked_add(1) {
            Some(span) => low + text::nth(self.key, stream) % span,
            None => text::nth(self.key, stream),
        }
    }
}

/// The input-token count the mock reports for a body it did not get a number for: roughly
/// four bytes per token, rounded up, so that a larger prompt always reports more. The body is
/// the raw request body, `"mock"` field included.
pub fn derived_input_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}

/// Resolves the input tokens a request reports: the override, then the config, then the body.
pub(crate) fn input_tokens(config: &MockConfig, overrides: &Overrides, body_len: usize) -> u64 {
    overrides
        .input_tokens
        .or(config.input_tokens)
        .unwrap_or_else(|| derived_input_tokens(body_len))
}

/// The `document` blocks with a `url` or `file` source anywhere in a body's `messages`: what
/// the upstream would fetch. Parsed apart from the plan's own fields, and only when a config
/// asks, so that load runs never pay for it.
fn fetched_documents(body: &[u8]) -> u64 {
    fn walk(value: &serde_json::Value) -> u64 {
        match value {
            serde_json::Value::Array(items) => items.iter().map(walk).sum(),
            serde_json::Value::Object(object) => {
                let fetched = object.get("type").and_then(|t| t.as_str()) == Some("document")
                    && matches!(
                        object
                            .get("source")
                            .and_then(|s| s.get("type"))
                            .and_then(|t| t.as_str()),
                        Some("url" | "file")
                    );
                u64::from(fetched) + object.values().map(walk).sum::<u64>()
            }
            _ => 0,
        }
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|request| request.get("messages").map(walk))
        .unwrap_or(0)
}

/// Validates `mock.status`: 200 means "answer normally", 400..=599 an error response.
pub(crate) fn error_status(overrides: &Overrides) -> Result<Option<StatusCode>, String> {
    match overrides.status {
        None | Some(200) => Ok(None),
        Some(code @ 400..=599) => StatusCode::from_u16(code)
            .map(Some)
            .map_err(|e| format!("mock.status: {e}")),
        Some(code) => Err(format!(
            "mock.status: {code} is neither 200 nor an error status (400..=599)"
        )),
    }
}

/// The stream failure a request's `error_after_tokens` and `reset_after_tokens` ask for.
fn requested_failure(overrides: &Overrides, output_tokens: u64) -> Option<Failure> {
    // The earliest injected failure wins; on a tie the error event, which is the milder.
    // A threshold beyond the output fires right after the last token instead of never,
    // since the test asked for a failure.
    let error = overrides.error_after_tokens.map(|after| Failure {
        after_tokens: after.min(output_tokens),
        kind: FailureKind::ErrorEvent,
    });
    let reset = overrides.reset_after_tokens.map(|after| Failure {
        after_tokens: after.min(output_tokens),
        kind: FailureKind::Reset,
    });
    match (error, reset) {
        (Some(e), Some(r)) if r.after_tokens < e.after_tokens => Some(r),
        (Some(e), _) => Some(e),
        (None, r) => r,
    }
}

/// A fault the config's rates can inject.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Status(u16),
    Stream(FailureKind),
}

/// Draws a request's fate from the config's fault rates: one uniform draw falls into the
/// 429, 529, 500, stream-error or reset band, or past them all (no fault). A stream failure
/// fires after a drawn number of tokens in `[1, output - 1]`, or before the first token when
/// there is at most one; the caller drops it for a non-streaming request.
fn drawn_fate(
    config: &MockConfig,
    draws: &Draws,
    output_tokens: u64,
) -> (Option<Failure>, Option<StatusCode>) {
    let roll = draws.unit(Draws::FATE);
    let cut = || {
        if output_tokens <= 1 {
            0
        } else {
            draws.between(Draws::CUT_POINT, 1, output_tokens - 1)
        }
    };
    let bands = [
        (config.error_rate_429, Fault::Status(429)),
        (config.error_rate_529, Fault::Status(529)),
        (config.error_rate_500, Fault::Status(500)),
        (
            config.stream_error_rate,
            Fault::Stream(FailureKind::ErrorEvent),
        ),
        (config.reset_rate, Fault::Stream(FailureKind::Reset)),
    ];
    let mut band_end = 0.0;
    for (rate, fault) in bands {
        band_end += rate;
        if roll < band_end {
            return match fault {
                Fault::Status(code) => (None, StatusCode::from_u16(code).ok()),
                Fault::Stream(kind) => (
                    Some(Failure {
                        after_tokens: cut(),
                        kind,
                    }),
                    None,
                ),
            };
        }
    }
    (None, None)
}

impl Plan {
    /// Resolves a `/v1/messages` request: an override wins over the config and over the
    /// drawn value it replaces.
    pub fn resolve(
        config: &MockConfig,
        overrides: &Overrides,
        request: &RequestFacts,
    ) -> Result<Plan, String> {
        let draws = Draws::new(request.body_key);
        let drawn_len = match config.output_tokens_max {
            Some(max) if max > config.output_tokens => {
                draws.between(Draws::OUTPUT_LEN, config.output_tokens, max)
            }
            _ => config.output_tokens,
        };
        let wanted = overrides.output_tokens.unwrap_or(drawn_len);
        let output_tokens = wanted.min(request.max_tokens);

        let cache_hit = draws.unit(Draws::CACHE_HIT) < config.cache_hit_rate;
        let cache_write = draws.unit(Draws::CACHE_WRITE) < config.cache_write_rate;
        let config_cache = |wanted: bool, tokens: u64| if wanted { tokens } else { 0 };

        // Any fault named in the request replaces the drawn fate as a whole, so a test that
        // asks for one outcome gets exactly that one.
        let steered = overrides.status.is_some()
            || overrides.error_after_tokens.is_some()
            || overrides.reset_after_tokens.is_some();
        let (failure, error_status) = if steered {
            (
                requested_failure(overrides, output_tokens),
                error_status(overrides)?,
            )
        } else {
            drawn_fate(config, &draws, output_tokens)
        };

        Ok(Plan {
            input_tokens: input_tokens(config, overrides, request.body_len).saturating_add(
                request
                    .fetched_documents
                    .saturating_mul(config.document_input_tokens),
            ),
            cache_read_tokens: overrides
                .cache_read_tokens
                .unwrap_or(config_cache(cache_hit, config.cache_read_tokens)),
            cache_write_5m_tokens: overrides
                .cache_write_5m_tokens
                .unwrap_or(config_cache(cache_write, config.cache_write_5m_tokens)),
            cache_write_1h_tokens: overrides
                .cache_write_1h_tokens
                .unwrap_or(config_cache(cache_write, config.cache_write_1h_tokens)),
            web_search_requests: overrides.web_search_requests,
            output_tokens,
            capped: wanted > request.max_tokens,
            omit_cache_breakdown: overrides.omit_cache_breakdown,
            usage_in_delta: overrides.usage_in_delta.unwrap_or(true),
            omit_usage: overrides.omit_usage,
            delta_input_tokens: overrides.delta_input_tokens,
            final_output_tokens: overrides.final_output_tokens,
            omit_output_usage: overrides.omit_output_usage,
            error_body_with_200: overrides.error_body_with_200,
            ttft: Duration::from_millis(overrides.ttft_ms.unwrap_or(config.ttft_ms)),
            inter_token: Duration::from_millis(
                overrides.inter_token_ms.unwrap_or(config.inter_token_ms),
            ),
            tokens_per_chunk: overrides
                .tokens_per_chunk
                .unwrap_or(config.tokens_per_chunk)
                .max(1),
            failure: failure.filter(|_| request.stream),
            delta_every: overrides.delta_every.filter(|every| *every > 0),
            error_status,
            error_message: overrides.error_message.clone(),
            text_key: request.body_key,
            stream: request.stream,
        })
    }

    /// The usage this plan reports once complete, and how the request ends.
    pub fn usage(&self) -> PlannedUsage {
        let fate = match (self.error_status, self.failure) {
            (Some(status), _) => Fate::Status(status.as_u16()),
            (None, Some(failure)) => match failure.kind {
                FailureKind::ErrorEvent => Fate::ErrorAfter(failure.after_tokens),
                FailureKind::Reset => Fate::ResetAfter(failure.after_tokens),
            },
            (None, None) => Fate::Complete,
        };
        PlannedUsage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_tokens,
            cache_write_5m_tokens: self.cache_write_5m_tokens,
            cache_write_1h_tokens: self.cache_write_1h_tokens,
            web_search_requests: self.web_search_requests,
            fate,
        }
    }

    pub fn stop_reason(&self) -> &'static str {
        if self.capped {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    /// Total cache writes, as `cache_creation_input_tokens` reports them.
    pub fn cache_creation_tokens(&self) -> u64 {
        self.cache_write_5m_tokens + self.cache_write_1h_tokens
    }

    /// How many tokens the next `content_block_delta` carries once `emitted` were sent: at most
    /// `tokens_per_chunk`, and never straddling a failure point or a `delta_every` boundary, so
    /// that those fire after exactly the number of tokens asked for.
    pub fn next_chunk_len(&self, emitted: u64) -> u64 {
        let mut len = self
            .tokens_per_chunk
            .min(self.output_tokens.saturating_sub(emitted));
        if let Some(failure) = self.failure {
            if failure.after_tokens > emitted {
                len = len.min(failure.after_tokens - emitted);
            }
        }
        if let Some(every) = self.delta_every {
            len = len.min(every - emitted % every);
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(overrides: Overrides, max_tokens: u64) -> Plan {
        let config = MockConfig {
            output_tokens: 10,
            tokens_per_chunk: 4,
            ..MockConfig::default()
        };
        let request = RequestFacts {
            fetched_documents: 0,
            body_len: 101,
            body_key: 5,
            max_tokens,
            stream: true,
        };
        match Plan::resolve(&config, &overrides, &request) {
            Ok(plan) => plan,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn max_tokens_caps_the_output_and_sets_the_stop_reason() {
        let capped = plan(Overrides::default(), 6);
        assert_eq!(
            (capped.output_tokens, capped.stop_reason()),
            (6, "max_tokens")
        );
        let exact = plan(Overrides::default(), 10);
        assert_eq!((exact.output_tokens, exact.stop_reason()), (10, "end_turn"));
    }

    #[test]
    fn input_tokens_come_from_the_body_length_unless_given() {
        assert_eq!(plan(Overrides::default(), 100).input_tokens, 26);
        let given = Overrides {
            input_tokens: Some(7),
            ..Overrides::default()
        };
        assert_eq!(plan(given, 100).input_tokens, 7);
    }

    #[test]
    fn url_and_file_documents_add_their_configured_input() {
        let config = MockConfig {
            input_tokens: Some(10),
            document_input_tokens: 100_000,
            ..MockConfig::default()
        };
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[
            {"type":"document","source":{"type":"url","url":"https://x/a.pdf"}},
            {"type":"document","source":{"type":"file","file_id":"f"}},
            {"type":"document","source":{"type":"text","data":"t"}},
            {"type":"image","source":{"type":"url","url":"https://x/a.png"}}]}]}"#;
        let usage = crate::planned_usage(&config, body).map(|u| u.input_tokens);
        assert_eq!(usage, Some(200_010));
        let off = MockConfig {
            input_tokens: Some(10),
            ..MockConfig::default()
        };
        assert_eq!(
            crate::planned_usage(&off, body).map(|u| u.input_tokens),
            Some(10)
        );
    }

    #[test]
    fn chunks_stop_at_failure_points_and_delta_boundaries() {
        let p = plan(
            Overrides {
                reset_after_tokens: Some(6),
                delta_every: Some(3),
                ..Overrides::default()
            },
            100,
        );
        let mut emitted = 0;
        let mut lens = Vec::new();
        while emitted < p.output_tokens {
            let len = p.next_chunk_len(emitted);
            lens.push(len);
            emitted += len;
        }
        assert_eq!(lens, vec![3, 3, 3, 1]);
    }

    #[test]
    fn the_earliest_failure_wins_and_late_ones_fire_at_the_end() {
        let both = plan(
            Overrides {
                error_after_tokens: Some(5),
                reset_after_tokens: Some(2),
                ..Overrides::default()
            },
            100,
        );
        assert_eq!(
            both.failure,
            Some(Failure {
                after_tokens: 2,
                kind: FailureKind::Reset
            })
        );
        let late = plan(
            Overrides {
                error_after_tokens: Some(50),
                ..Overrides::default()
            },
            100,
        );
        assert_eq!(late.failure.map(|f| f.after_tokens), Some(10));
    }

    #[test]
    fn status_must_be_an_error_status() {
        let status = |code| Overrides {
            status: Some(code),
            ..Overrides::default()
        };
        assert_eq!(error_status(&status(200)), Ok(None));
        assert_eq!(
            error_status(&status(529)),
            Ok(StatusCode::from_u16(529).ok())
        );
        assert!(error_status(&status(302)).is_err());
    }
}
