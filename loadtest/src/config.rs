//! Server-wide behaviour of the mock, and the per-request overrides a test sends in the body.

use serde::{Deserialize, Serialize};

/// How the mock behaves when a request does not say otherwise.
///
/// Every field has a serde default, so a YAML or JSON fragment only names what it changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MockConfig {
    /// Delay before the first byte of a stream, or before a whole non-streaming response.
    pub ttft_ms: u64,
    /// Delay between two output-token chunks of a stream.
    pub inter_token_ms: u64,
    /// Output length when the request does not override it; capped by the request's
    /// `max_tokens`, in which case the stop reason is `max_tokens`.
    pub output_tokens: u64,
    /// Output tokens carried by one `content_block_delta` (0 is treated as 1).
    pub tokens_per_chunk: u64,
    /// Cache reads reported in usage.
    pub cache_read_tokens: u64,
    /// Cache writes with the 5-minute TTL reported in usage.
    pub cache_write_5m_tokens: u64,
    /// Cache writes with the 1-hour TTL reported in usage.
    pub cache_write_1h_tokens: u64,
    /// Uncached input tokens reported in usage. `None` derives them from the request body as
    /// `ceil(body_len / 4)`, so that bigger prompts cost more, deterministically.
    pub input_tokens: Option<u64>,
    /// When set, `/v1/*` requests must present this key in `x-api-key` or as a Bearer token.
    pub api_key: Option<String>,
    /// Seeds the generated text and the ids, so a run can be replayed byte for byte.
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
            tokens_per_chunk: 1,
            cache_read_tokens: 0,
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            input_tokens: None,
            api_key: None,
            seed: 0,
            workers: 1,
        }
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
    pub ttft_ms: Option<u64>,
    pub inter_token_ms: Option<u64>,
    pub tokens_per_chunk: Option<u64>,
    /// Answer with this HTTP status and the matching Anthropic error instead (>= 400).
    pub status: Option<u16>,
    /// Streaming: after this many output tokens, send `event: error` (overloaded) and end.
    pub error_after_tokens: Option<u64>,
    /// Streaming: after this many output tokens, cut the connection mid-body.
    pub reset_after_tokens: Option<u64>,
    /// Whether `message_delta.usage` repeats the input and cache counts (default true).
    pub usage_in_delta: Option<bool>,
    /// Streaming: emit an extra cumulative `message_delta` every this many output tokens.
    pub delta_every: Option<u64>,
}
