//! `mock-anthropic`: a simulated Anthropic Messages API upstream.
//!
//! tollgate's integration tests start it in-process on a loopback port, `tollgate demo` runs it
//! next to the proxy, and benchmarks run it as the `mock-anthropic` binary. It speaks the wire
//! format of `shared/reference/anthropic-api.md` over real HTTP (actix-web), so a relay in front
//! of it is exercised exactly as it would be against the real API: SSE events arrive one by one
//! with real delays, usage is reported cumulatively, errors come in Anthropic's shape.
//!
//! Map of the crate:
//! - [`config`]: [`MockConfig`], the server-wide defaults, and the per-request `"mock"` body
//!   field that overrides them so that a test can steer one request through a relay.
//! - `plan`: resolves config and overrides into what one request will produce.
//! - `render`: the JSON and SSE bytes, written by hand from pre-rendered fragments because
//!   benchmarks push thousands of requests per second through the mock.
//! - `text`: deterministic hashing and the pseudo-words that make up the output.
//! - `sse`: the streaming body, a small state machine that also counts how streams ended.
//! - `routes`: the HTTP endpoints, including the `/mock/stats` and `/mock/last` test hooks.
//! - [`server`]: [`MockServer`], which runs all of this on its own thread and runtime.
//! - [`stats`]: [`MockStats`], the counters tests read back.

//!
//! # Endpoints
//! - `POST /v1/messages` (query strings ignored): SSE when `"stream": true`, else one Message.
//!   400 `invalid_request_error` when the body is not a JSON object with `model` and a positive
//!   `max_tokens`. Input tokens default to `ceil(body_len / 4)` ([`derived_input_tokens`]).
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N resolved like the above.
//! - `GET /v1/models`, `GET /v1/models/{id}`: a fixed list in the reference's shape.
//! - `HEAD /`: 200, as Claude Code probes it.
//! - `GET /mock/stats`: [`MockStats`] as JSON. `GET /mock/last`: the last `/v1/messages`
//!   request as `{"headers": {name: value}, "body": "<raw body>", "query": "<query string>"}`.
//!
//! When [`MockConfig::api_key`] is set, `/v1/*` answers 401 `authentication_error` unless
//! `x-api-key` or `Authorization: Bearer` carries it (checked before validation, after the
//! request was counted and recorded for `/mock/last`).
//!
//! # Per-request overrides
//! A top-level `"mock": {...}` object in the body steers one request (unknown keys are a 400):
//!
//! | key | effect |
//! |---|---|
//! | `output_tokens`, `input_tokens`, `cache_read_tokens`, `cache_write_5m_tokens`, `cache_write_1h_tokens`, `tokens_per_chunk`, `ttft_ms`, `inter_token_ms` | replace the [`MockConfig`] value |
//! | `omit_cache_breakdown: bool` | report `cache_creation_input_tokens` without the `cache_creation` object |
//! | `web_search_requests: n` | add `server_tool_use.web_search_requests` to usage |
//! | `status: code` | answer that 4xx/5xx with the matching Anthropic error (429 and 529 carry `retry-after: 1`; 401, 402 and 403 `x-should-retry: false`); 200 means normal |
//! | `error_after_tokens: n` | stream: after n output tokens send `event: error` (overloaded_error) and end the body |
//! | `reset_after_tokens: n` | stream: after n output tokens fail the body, cutting the connection |
//! | `usage_in_delta: bool` | default true: `message_delta.usage` repeats input and cache counts |
//! | `delta_every: n` | stream: an extra cumulative `message_delta` (stop_reason null) every n output tokens |
//!
//! Failure thresholds beyond the output length fire right after the last token.

pub mod config;
pub mod loadgen;
mod plan;
mod render;
mod routes;
pub mod server;
mod sse;
pub mod stats;
mod text;

pub use config::MockConfig;
pub use plan::derived_input_tokens;
pub use server::MockServer;
pub use stats::MockStats;
