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
//! - `plan`: resolves config, overrides and seeded draws into what one request will produce;
//!   [`planned_usage`] exposes the result ([`PlannedUsage`], [`Fate`]) to load generators.
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
//! | `error_after_tokens: n` | stream: after n output tokens send `event: error` (overloaded_error, with `error_message` as its message if given) and end the body |
//! | `reset_after_tokens: n` | stream: after n output tokens fail the body, cutting the connection |
//! | `usage_in_delta: bool` | default true: `message_delta.usage` repeats input and cache counts |
//! | `delta_every: n` | stream: an extra cumulative `message_delta` (stop_reason null) every n output tokens |
//! | `omit_usage: bool` | report no usage at all (no `usage` in `message_start`, `message_delta` or the Message) |
//! | `delta_input_tokens: n` | stream: every `message_delta.usage` reports `input_tokens: n` (may be smaller, negative or absurd) |
//! | `final_output_tokens: n` | stream: the final `message_delta` reports `output_tokens: n` (may be negative or absurd) |
//! | `omit_output_usage: bool` | non-streaming: the Message's `usage` has `input_tokens` only |
//! | `error_body_with_200: bool` | non-streaming: answer 200 with an error object, not a Message |
//!
//! Failure thresholds beyond the output length fire right after the last token; a threshold of
//! 0 fires right after `message_start`. Naming any of `status`, `error_after_tokens` or
//! `reset_after_tokens` replaces the drawn fate below as a whole (`status: 200` included).
//!
//! # Server-wide draws
//! [`MockConfig`] can vary requests: `output_tokens_max` (length uniform in
//! `[output_tokens, output_tokens_max]`), `cache_hit_rate` and `cache_write_rate` (whether the
//! configured cache reads, and the 5m and 1h writes, are reported), and the fault rates
//! `error_rate_429`, `error_rate_529`, `error_rate_500` (that status, after the time to first
//! token), `stream_error_rate` and `reset_rate` (streaming only: `event: error` or a cut
//! connection after a drawn token count in `[1, output - 1]`, or right after `message_start`
//! for a one-token output). Overrides win over draws, field by field.
//!
//! Every draw is a pure function of `seed` and the raw request body, never of arrival order:
//! the same body always meets the same fate, and [`planned_usage`] (the very code the server
//! runs) tells a load generator the usage and fate in advance. Vary the bodies (a nonce in a
//! message, or `metadata.user_id`) to see the rates. `count_tokens` is not subject to draws.

pub mod config;
mod plan;
mod render;
mod routes;
pub mod server;
mod sse;
pub mod stats;
mod text;

pub use config::MockConfig;
pub use plan::{derived_input_tokens, planned_output_bytes, planned_usage, Fate, PlannedUsage};
pub use server::MockServer;
pub use stats::MockStats;
