//! The upstreams a worker can forward to, behind the two calls a routing policy needs:
//! [`UpstreamPool::pick`] before a request goes out, [`UpstreamPool::report`] after it came
//! back. It holds one upstream today and picks it every time; weights, failover and cooldowns
//! are policy that a later issue adds here without touching the request path.

use std::sync::Arc;
use std::time::Duration;

use tollgate_actors::relay::ErrorWords;

use super::Upstream;
use crate::http::error::rewrite_stream_error;
use crate::http::request_id::RequestId;

/// How an attempt on an upstream went, as far as choosing upstreams is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The upstream answered (with any status) after `latency`.
    Answered { status: u16, latency: Duration },
    /// It could not be reached, or it stayed silent past its timeout.
    Failed,
}

/// One worker's upstreams. Each HTTP worker builds its own, so that connections are driven by
/// the worker that uses them.
pub struct UpstreamPool {
    upstreams: Vec<Upstream>,
    attempts: Vec<AttemptCounters>,
    /// Words the event that replaces an upstream's error event in a stream, with the
    /// upstreams' keys masked in what it logs. Built once: a stream takes a reference.
    error_words: ErrorWords,
}

/// Counter handles per upstream, looked up once rather than per request.
struct AttemptCounters {
    answered: metrics::Counter,
    failed: metrics::Counter,
}

impl AttemptCounters {
    fn new(upstream: &Upstream) -> AttemptCounters {
        let counter = |result: &'static str| metrics::counter!("tollgate_upstream_attempts_total", "upstream" => upstream.name.clone(), "result" => result);
        AttemptCounters {
            answered: counter("answered"),
            failed: counter("failed"),
        }
    }
}

impl UpstreamPool {
    pub fn new(upstreams: Vec<Upstream>) -> UpstreamPool {
        let attempts = upstreams.iter().map(AttemptCounters::new).collect();
        let keys: Vec<String> = upstreams
            .iter()
            .filter_map(|upstream| upstream.api_key.to_str().ok().map(str::to_owned))
            .collect();
        let error_words: ErrorWords = Arc::new(move |data, request_id| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            rewrite_stream_error(data, RequestId(request_id), &keys)
        });
        UpstreamPool {
            upstreams,
            attempts,
            error_words,
        }
    }

    /// Words the event that replaces an upstream's error event inside a stream.
    pub fn error_words(&self) -> ErrorWords {
        Arc::clone(&self.error_words)
    }

    /// The upstream to send a request for `model` to, or `None` when none can take it.
    pub fn pick(&self, _model: &str) -> Option<&Upstream> {
        self.upstreams.first()
    }

    /// The operators' keys of every upstream, for masking them wherever an upstream's words
    /// are logged (an upstream may echo the key it was sent).
    pub fn api_keys(&self) -> Vec<&str> {
        self.upstreams
            .iter()
            .filter_map(|upstream| upstream.api_key.to_str().ok())
            .collect()
    }

    /// Records how an attempt on `upstream` went.
    pub fn report(&self, upstream: &Upstream, attempt: Attempt) {
        let Some(counters) = self
            .upstreams
            .iter()
            .position(|candidate| std::ptr::eq(candidate, upstream))
            .and_then(|index| self.attempts.get(index))
        else {
            return;
        };
        match attempt {
            Attempt::Answered { .. } => counters.answered.increment(1),
            Attempt::Failed => counters.failed.increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamSettings;

    fn upstream(name: &str) -> Upstream {
        Upstream::new(&UpstreamSettings {
            name: name.into(),
            base_url: "http://127.0.0.1:9".into(),
            api_key: "key".into(),
            timeout_secs: 5,
            proxy: Some(String::new()),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_one_upstream_is_picked_for_every_model_and_an_empty_pool_picks_none() {
        let pool = UpstreamPool::new(vec![upstream("primary")]);
        for model in ["claude-opus-5-5", "claude-haiku-4-5", ""] {
            assert_eq!(pool.pick(model).map(|u| u.name.as_str()), Some("primary"));
        }
        assert!(UpstreamPool::new(Vec::new())
            .pick("claude-opus-5-5")
            .is_none());
        assert_eq!(pool.api_keys(), ["key"]);
    }
}
