//! Server-wide behaviour of the mock, and the per-request overrides a test sends in the body.

use serde::{Deserialize, Serialize};

/// How the mock behaves when a request does not say otherwise.
///
/// Every field has a serde default, so a YAML or JSON fragment only names what it changes;
/// unknown keys are refused so that a typo in a scenario file fails instead of being ignored.
/// Call [`MockConfig::validate`] after building one by hand ([`crate::MockServer::start`]
/// does).
///
/// # Per-request draws
/// The knobs that act on a share of requests (`output_tokens_max`, the cache rates and the
/// error rates) decide each request's fate from a hash of `seed` and the raw request body,
/// not from a counter: the same body always gets the same length, cache mix and fate, whatever
/// the arrival order or concurrency, and [`crate::planned_usage`] predicts it exactly. A load
/// generator must therefore vary its bodies (a nonce in a message, or `metadata.user_id`) to
/// see the rates; sending one body N times gives that one fate N times.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockConfig {
    /// Delay before the first byte of a stream, or before a whole non-streaming response.
    pub ttft_ms: u64,
    /// Delay between two output-token chunks of a stream.
    pub inter_token_ms: u64,
    /// Output length when the request does not override it; capped by the request's
    /// `max_tokens`, in which case the stop reason is `max_tokens`.
    pub output_tokens: u64,
    /// When set (at least `output_tokens`), each request's output length is drawn uniformly in
    /// `[output_tokens, output_tokens_max]` instead (still capped by `max_tokens`).
    pub output_tokens_max: Option<u64>,
    /// Output tokens carried by one `content_block_delta` (0 is treated as 1).
    pub tokens_per_chunk: u64,
    /// Cache reads reported in usage.
    pub cache_read_tokens: u64,
    /// Cache writes with the 5-minute TTL reported in usage.
    pub cache_write_5m_tokens: u64,
    /// Cache writes with the 1-hour TTL reported in usage.
    pub cache_write_1h_tokens: u64,
    /// Probability in [0, 1] that a request reports its `cache_read_tokens` (else 0 reads).
    pub cache_hit_rate: f64,
    /// Probability in [0, 1] that a request reports its cache writes, both TTLs together
    /// (else 0 writes of either TTL).
    pub cache_write_rate: f64,
    /// Probability that a request is answered 429 `rate_limit_error` (with `retry-after: 1`),
    /// after the time to first token.
    pub error_rate_429: f64,
    /// Probability that a request is answered 529 `overloaded_error` (with `retry-after: 1`).
    pub error_rate_529: f64,
    /// Probability that a request is answered 500 `api_error`.
    pub error_rate_500: f64,
    /// Probability that a streaming request sends `event: error` (overloaded_error) after a
    /// drawn number of output tokens and ends. No effect on non-streaming requests.
    pub stream_error_rate: f64,
    /// Probability that a streaming request's connection is cut after a drawn number of output
    /// tokens. No effect on non-streaming requests.
    pub reset_rate: f64,
    /// Uncached input tokens reported in usage. `None` derives them from the request body as
    /// `ceil(body_len / 4)`, so that bigger prompts cost more, deterministically.
    pub input_tokens: Option<u64>,
    /// Input tokens each `document` block with a `url` or `file` source adds to the reported
    /// input, as if the upstream had fetched a document of that size (a 100-page PDF is
    /// about 150,000 to 300,000). Added to whatever `input_tokens` resolves to; 0 adds none.
    pub document_input_tokens: u64,
    /// When set, `/v1/*` requests must present this key in `x-api-key` or as a Bearer token.
    pub api_key: Option<String>,
    /// Seeds the generated text, the ids and the per-request draws, so a run can be replayed
    /// byte for byte.
    pub seed: u64,
    /// actix-web worker threads (0 is treated as 1).
    pub workers: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            ttft_ms: 0,
            inter_token_ms: 0,
            output_tokens: 16,
            output_tokens_max: None,
            tokens_per_chunk: 1,
            cache_read_tokens: 0,
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            cache_hit_rate: 1.0,
            cache_write_rate: 1.0,
            error_rate_429: 0.0,
            error_rate_529: 0.0,
            error_rate_500: 0.0,
            stream_error_rate: 0.0,
            reset_rate: 0.0,
            input_tokens: None,
            document_input_tokens: 0,
            api_key: None,
            seed: 0,
            workers: 1,
        }
    }
}

impl MockConfig {
    /// The fault rates, named, in the order a request's fate is drawn.
    pub(crate) fn fault_rates(&self) -> [(&'static str, f64); 5] {
        [
            ("error_rate_429", self.error_rate_429),
            ("error_rate_529", self.error_rate_529),
            ("error_rate_500", self.error_rate_500),
            ("stream_error_rate", self.stream_error_rate),
            ("reset_rate", self.reset_rate),
        ]
    }

    /// Checks the knobs that can be out of range, naming the offending field: every rate must
    /// be a probability in [0, 1], the fault rates together at most 1, and `output_tokens_max`
    /// at least `output_tokens`.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("cache_hit_rate", self.cache_hit_rate),
            ("cache_write_rate", self.cache_write_rate),
        ];
        for (name, rate) in rates.into_iter().chain(self.fault_rates()) {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "{name}: must be a probability in [0, 1], got {rate}"
                ));
            }
        }
        let faults = self.fault_rates();
        let total: f64 = faults.iter().map(|(_, rate)| rate).sum();
        // A little slack so that rates such as 0.1 + 0.2 + 0.7 are not refused for rounding.
        if total > 1.0 + 1e-9 {
            let names: Vec<&str> = faults.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "{}: the fault rates sum to {total}, more than 1",
                names.join(" + ")
            ));
        }
        if let Some(max) = self.output_tokens_max {
            if max < self.output_tokens {
                return Err(format!(
                    "output_tokens_max: {max} is less than output_tokens ({})",
                    self.output_tokens
                ));
            }
        }
        Ok(())
    }
}

/// The optional top-level `"mock"` object of a request body.
///
/// tollgate forwards bodies unchanged, unknown fields included, so a test reaches through the
/// relay and tells the upstream what to do with this one request. Unknown keys are refused
/// with a 400 so that a typo in a test fails loudly instead of silently doing nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Overrides {
    pub output_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_5m_tokens: Option<u64>,
    pub cache_write_1h_tokens: Option<u64>,
    /// Report only `cache_creation_input_tokens`, without the `cache_creation` 5m/1h object,
    /// as older upstreams do.
    pub omit_cache_breakdown: bool,
    /// Reported as `usage.server_tool_use.web_search_requests` when non-zero.
    pub web_search_requests: u64,
    /// Delay before the answer starts (count_tokens waits it too).
    pub ttft_ms: Option<u64>,
    pub inter_token_ms: Option<u64>,
    pub tokens_per_chunk: Option<u64>,
    /// Answer with this HTTP status and the matching Anthropic error instead (>= 400).
    pub status: Option<u16>,
    /// The `error.message` of the error `status` (or `error_after_tokens`) asks for, in place
    /// of the mock's stock message: to see what a relay does with an upstream's own words (an organization id,
    /// a credit balance, a very long body).
    pub error_message: Option<String>,
    /// Streaming: after this many output tokens, send `event: error` (overloaded) and end.
    pub error_after_tokens: Option<u64>,
    /// Streaming: after this many output tokens, cut the connection mid-body.
    pub reset_after_tokens: Option<u64>,
    /// Whether `message_delta.usage` repeats the input and cache counts (default true).
    pub usage_in_delta: Option<bool>,
    /// Streaming: emit an extra cumulative `message_delta` every this many output tokens.
    pub delta_every: Option<u64>,
    /// Report no usage at all: no `usage` in `message_start`, `message_delta` or the Message,
    /// as a faulty upstream might.
    pub omit_usage: bool,
    /// Streaming: every `message_delta.usage` reports this `input_tokens` instead (a smaller
    /// later count, a negative or an absurd one).
    pub delta_input_tokens: Option<i64>,
    /// Streaming: the final `message_delta` reports this `output_tokens` instead.
    pub final_output_tokens: Option<i64>,
    /// Non-streaming: the Message's `usage` names the prompt but no `output_tokens`.
    pub omit_output_usage: bool,
    /// Non-streaming: answer 200 with an error object instead of a Message, as a broken proxy
    /// in front of the upstream might.
    pub error_body_with_200: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(config: MockConfig) -> String {
        match config.validate() {
            Ok(()) => panic!("{config:?} should be refused"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_default_config_is_valid() {
        assert_eq!(MockConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rates_out_of_range_are_refused_by_name() {
        for (name, config) in [
            (
                "cache_hit_rate",
                MockConfig {
                    cache_hit_rate: 1.5,
                    ..MockConfig::default()
                },
            ),
            (
                "cache_write_rate",
                MockConfig {
                    cache_write_rate: -0.1,
                    ..MockConfig::default()
                },
            ),
            (
                "error_rate_429",
                MockConfig {
                    error_rate_429: 2.0,
                    ..MockConfig::default()
                },
            ),
            (
                "error_rate_529",
                MockConfig {
                    error_rate_529: f64::NAN,
                    ..MockConfig::default()
                },
            ),
            (
                "error_rate_500",
                MockConfig {
                    error_rate_500: -1.0,
                    ..MockConfig::default()
                },
            ),
            (
                "stream_error_rate",
                MockConfig {
                    stream_error_rate: 1.01,
                    ..MockConfig::default()
                },
            ),
            (
                "reset_rate",
                MockConfig {
                    reset_rate: f64::INFINITY,
                    ..MockConfig::default()
                },
            ),
        ] {
            let error = error_of(config);
            assert!(error.starts_with(name), "{name}: {error}");
        }
    }

    #[test]
    fn fault_rates_summing_past_one_are_refused() {
        let error = error_of(MockConfig {
            error_rate_429: 0.5,
            stream_error_rate: 0.3,
            reset_rate: 0.3,
            ..MockConfig::default()
        });
        assert!(
            error.contains("reset_rate") && error.contains("sum"),
            "{error}"
        );
        let exact = MockConfig {
            error_rate_429: 0.1,
            error_rate_529: 0.2,
            reset_rate: 0.7,
            ..MockConfig::default()
        };
        assert_eq!(exact.validate(), Ok(()));
    }

    #[test]
    fn output_tokens_max_below_output_tokens_is_refused() {
        let error = error_of(MockConfig {
            output_tokens: 10,
            output_tokens_max: Some(9),
            ..MockConfig::default()
        });
        assert!(error.starts_with("output_tokens_max"), "{error}");
        let equal = MockConfig {
            output_tokens: 10,
            output_tokens_max: Some(10),
            ..MockConfig::default()
        };
        assert_eq!(equal.validate(), Ok(()));
    }

    #[test]
    fn yaml_fragments_name_only_what_they_change_and_typos_fail() {
        let config: MockConfig =
            match serde_norway::from_str("output_tokens_max: 64\nreset_rate: 0.25\n") {
                Ok(config) => config,
                Err(e) => panic!("{e}"),
            };
        assert_eq!(config.output_tokens_max, Some(64));
        assert_eq!(config.reset_rate, 0.25);
        assert_eq!(config.cache_hit_rate, 1.0);
        assert_eq!(config.output_tokens, MockConfig::default().output_tokens);

        let typo = serde_norway::from_str::<MockConfig>("reset_rat: 0.25\n");
        match typo {
            Ok(config) => panic!("accepted {config:?}"),
            Err(e) => assert!(e.to_string().contains("reset_rat"), "{e}"),
        }
    }
}
