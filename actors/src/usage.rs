//! Token usage as the upstream reports it, split into the classes that are priced separately.

use serde::{Deserialize, Serialize};

/// What one request consumed. Every field is a count reported by the upstream; tollgate never
/// estimates usage it bills.
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

    /// True when the upstream reported no consumption at all.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }
}
