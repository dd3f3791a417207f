//! What one request will produce, resolved once from the config and the request's overrides.

use std::time::Duration;

use actix_web::http::StatusCode;

use crate::config::{MockConfig, Overrides};

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
    pub ttft: Duration,
    pub inter_token: Duration,
    pub tokens_per_chunk: u64,
    pub failure: Option<Failure>,
    pub delta_every: Option<u64>,
    /// Answer with this error status instead of a message.
    pub error_status: Option<StatusCode>,
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

impl Plan {
    /// Resolves a `/v1/messages` request. `max_tokens` caps the output length.
    pub fn resolve(
        config: &MockConfig,
        overrides: &Overrides,
        body_len: usize,
        max_tokens: u64,
    ) -> Result<Plan, String> {
        let wanted = overrides.output_tokens.unwrap_or(config.output_tokens);
        let output_tokens = wanted.min(max_tokens);

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
        let failure = match (error, reset) {
            (Some(e), Some(r)) if r.after_tokens < e.after_tokens => Some(r),
            (Some(e), _) => Some(e),
            (None, r) => r,
        };

        Ok(Plan {
            input_tokens: input_tokens(config, overrides, body_len),
            cache_read_tokens: overrides
                .cache_read_tokens
                .unwrap_or(config.cache_read_tokens),
            cache_write_5m_tokens: overrides
                .cache_write_5m_tokens
                .unwrap_or(config.cache_write_5m_tokens),
            cache_write_1h_tokens: overrides
                .cache_write_1h_tokens
                .unwrap_or(config.cache_write_1h_tokens),
            web_search_requests: overrides.web_search_requests,
            output_tokens,
            capped: wanted > max_tokens,
            omit_cache_breakdown: overrides.omit_cache_breakdown,
            usage_in_delta: overrides.usage_in_delta.unwrap_or(true),
            ttft: Duration::from_millis(overrides.ttft_ms.unwrap_or(config.ttft_ms)),
            inter_token: Duration::from_millis(
                overrides.inter_token_ms.unwrap_or(config.inter_token_ms),
            ),
            tokens_per_chunk: overrides
                .tokens_per_chunk
                .unwrap_or(config.tokens_per_chunk)
                .max(1),
            failure,
            delta_every: overrides.delta_every.filter(|every| *every > 0),
            error_status: error_status(overrides)?,
        })
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
        match Plan::resolve(&config, &overrides, 101, max_tokens) {
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
