//! Token usage as the upstream reports it, split into the classes that are priced separately,
//! and the report billing reads it from ([`UsageReport`]).

use serde::{Deserialize, Serialize};

/// The most one class may count in one request (tokens, or server-tool uses). No model's
/// context comes near it (50 times the longest today); a larger count is an upstream fault,
/// capped here so that it never reaches the books raw, and alerted.
pub const MAX_COUNT_PER_CLASS: u64 = 10_000_000;

/// The most server-tool uses (web searches, web fetches) one request may count. The request's
/// own `max_uses` is not known here; no real request comes near a thousand, and at the web
/// search price it bounds a lying upstream to $10 of searches
/// (docs/adr/0010-usage-faults-billed-from-the-hold.md).
pub const MAX_SERVER_TOOL_USES: u64 = 1_000;

/// What one request consumed, class by class. The counts are the upstream's, except when its
/// final usage never came: then `crate::bill` estimates what it must
/// (docs/adr/0009-estimate-unreported-output.md) and the usage row says so.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Uncached input tokens (`input_tokens`).
    pub input_tokens: u64,
    /// Generated tokens (`output_tokens`).
    pub output_tokens: u64,
    /// Tokens read from the prompt cache (`cache_read_input_tokens`).
    pub cache_read_tokens: u64,
    /// Tokens written to the 5-minute cache (`cache_creation.ephemeral_5m_input_tokens`, or all
    /// of `cache_creation_input_tokens` when the breakdown is missing).
    pub cache_write_5m_tokens: u64,
    /// Tokens written to the 1-hour cache (`cache_creation.ephemeral_1h_input_tokens`).
    pub cache_write_1h_tokens: u64,
    /// Server-side web searches (`server_tool_use.web_search_requests`), priced per use.
    pub web_search_requests: u64,
    /// Server-side web fetches (`server_tool_use.web_fetch_requests`); free beyond their tokens.
    pub web_fetch_requests: u64,
}

impl Usage {
    /// The prompt length that selects a prompt-length tier: input + cache reads + cache writes.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
    }

    /// Tokens that count against a tokens-per-minute limit. Cache reads are excluded, as the
    /// upstream excludes them from its own input-token limits.
    pub fn rate_limited_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
            .saturating_add(self.output_tokens)
    }

    /// Some server tool ran (a web search or fetch), whose results the prompt grew by.
    pub fn server_tools_ran(&self) -> bool {
        self.web_search_requests > 0 || self.web_fetch_requests > 0
    }

    /// True when the upstream reported no consumption at all.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}

/// What the upstream reported about one request's usage, and what tollgate saw of its output:
/// everything [`crate::bill::bill`] decides a bill from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// The counts reported: each class at the largest value seen, capped at
    /// [`MAX_COUNT_PER_CLASS`] (server-tool uses at [`MAX_SERVER_TOOL_USES`]).
    pub usage: Usage,
    /// Some prompt class (input, cache read, cache write) was counted.
    pub prompt_reported: bool,
    /// The upstream's final usage arrived: a whole message's `usage`, or a stream's
    /// `message_delta` with a stop reason and an output count.
    pub final_usage: bool,
    /// Bytes of output the stream's content deltas carried (text, thinking, tool input JSON,
    /// as relayed, JSON escapes included), beyond each event's envelope.
    pub relayed_output_bytes: u64,
    /// Some count was negative, beyond a `u64`, or above its cap: an upstream fault.
    pub absurd_count: bool,
    /// The upstream said the answer is complete (a whole Message, or a stream's
    /// `message_stop`): a final usage missing then is its fault, not a cut's.
    pub answer_complete: bool,
    /// A thinking block began: its output may be summarized, far shorter than what it is
    /// billed for, so relayed bytes say little about it.
    pub thinking_seen: bool,
}

impl UsageReport {
    /// A final usage that the caller read from the upstream (an error body's `usage`).
    pub fn reported(usage: Usage) -> UsageReport {
        UsageReport {
            usage,
            prompt_reported: true,
            final_usage: true,
            relayed_output_bytes: 0,
            absurd_count: false,
            answer_complete: true,
            thinking_seen: false,
        }
    }

    /// Nothing billable was seen: no count, no output relayed.
    pub fn is_empty(&self) -> bool {
        !self.prompt_reported && self.usage.is_zero() && self.relayed_output_bytes == 0
    }
}
