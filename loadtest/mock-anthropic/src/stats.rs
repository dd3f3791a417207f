//! Counters that let tests observe what reached the upstream and how streams ended.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the mock's counters, also served as JSON by `GET /mock/stats`.
///
/// Request counters count every request received on the route, including those refused for
/// authentication or validation: a test asserting that nothing reached the upstream wants them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MockStats {
    /// `POST /v1/messages` requests received.
    pub messages: u64,
    /// `POST /v1/messages/count_tokens` requests received.
    pub count_tokens: u64,
    /// `GET /v1/models` and `GET /v1/models/{id}` requests received.
    pub models: u64,
    /// Streams whose `message_stop` was sent.
    pub streams_completed: u64,
    /// Streams the client abandoned before the end (including during the time to first token).
    pub streams_cancelled: u64,
    /// Streams ended on purpose by `error_after_tokens` or `reset_after_tokens`, or by the
    /// `stream_error_rate` and `reset_rate` draws. Neither completed nor cancelled by the
    /// client, so they get their own counter: `injected_stream_errors + injected_resets`.
    pub streams_failed: u64,
    /// `/v1/messages` answered with an injected error status (the `status` override or the
    /// `error_rate_*` draws), counted when the error is sent.
    pub injected_status: u64,
    /// Streams ended by an injected `event: error` (override or `stream_error_rate`).
    pub injected_stream_errors: u64,
    /// Streams whose connection was cut on purpose (override or `reset_rate`).
    pub injected_resets: u64,
}

/// The live counters behind [`MockStats`]. Relaxed atomics: each counter is independent and
/// tests only read them after the requests they care about have been answered.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages: AtomicU64,
    pub count_tokens: AtomicU64,
    pub models: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cancelled: AtomicU64,
    pub streams_failed: AtomicU64,
    pub injected_status: AtomicU64,
    pub injected_stream_errors: AtomicU64,
    pub injected_resets: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MockStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        MockStats {
            messages: read(&self.messages),
            count_tokens: read(&self.count_tokens),
            models: read(&self.models),
            streams_completed: read(&self.streams_completed),
            streams_cancelled: read(&self.streams_cancelled),
            streams_failed: read(&self.streams_failed),
            injected_status: read(&self.injected_status),
            injected_stream_errors: read(&self.injected_stream_errors),
            injected_resets: read(&self.injected_resets),
        }
    }
}
