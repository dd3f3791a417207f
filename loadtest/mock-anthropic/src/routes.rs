//! The HTTP surface: the Messages API endpoints and the `/mock/*` test hooks.
//!
//! Order of work in `POST /v1/messages`, chosen so tests can always see what arrived:
//! count and record the request, then authenticate, then validate, then answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use serde::Deserialize;

use crate::config::{MockConfig, Overrides};
use crate::plan;
use crate::render;
use crate::sse::{SseStream, StreamTally};
use crate::stats::Counters;
use crate::text;

/// Request bodies up to this size are accepted. Claude Code sends hundreds of KB; the actix
/// default of 256 KiB would refuse them before the handler runs.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// State shared by every worker of one mock server.
pub(crate) struct Shared {
    pub config: MockConfig,
    pub counters: Counters,
    /// Numbers requests, to derive their ids.
    sequence: AtomicU64,
    /// The last `/v1/messages` request, for `GET /mock/last`. Stored raw and rendered only
    /// when asked for, to keep the request path cheap.
    last: Mutex<Option<LastRequest>>,
}

struct LastRequest {
    headers: HeaderMap,
    body: Bytes,
    query: String,
}

impl Shared {
    pub fn new(config: MockConfig) -> Self {
        Self {
            config,
            counters: Counters::default(),
            sequence: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    fn record_last(&self, req: &HttpRequest, body: &Bytes) {
        let last = LastRequest {
            headers: req.headers().clone(),
            body: body.clone(),
            query: req.query_string().to_owned(),
        };
        // A panic while holding this lock cannot leave a half-written value, so a poisoned
        // lock is still safe to use.
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
    }

    fn next_ids(&self) -> Ids {
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let hex = text::request_hex(self.config.seed, seq);
        Ids {
            request_id: format!("req_mock_{hex}"),
            message_id: format!("msg_mock_{hex}"),
        }
    }
}

/// The request id of responses outside the Messages API (test hooks, probes, unknown routes).
/// They take no sequence number, so polling `/mock/stats` does not shift the ids of a replay.
const UNSEQUENCED_REQUEST_ID: &str = "req_mock_local";

/// The ids of one request: its `request-id` header (repeated in error bodies) and the id of
/// the message it produces.
struct Ids {
    request_id: String,
    message_id: String,
}

/// Headers every response carries. A relay must not pass the organization and rate-limit
/// headers on to its customers, and tests check that it strips them. Fixed values keep the
/// responses reproducible under a seed.
const UPSTREAM_HEADERS: [(&str, &str); 7] = [
    ("anthropic-organization-id", "org-mock"),
    ("anthropic-ratelimit-requests-limit", "1000"),
    ("anthropic-ratelimit-requests-remaining", "999"),
    ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:00Z"),
    ("anthropic-ratelimit-tokens-limit", "400000"),
    ("anthropic-ratelimit-tokens-remaining", "399000"),
    ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:00Z"),
];

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .route("/v1/messages", web::post().to(messages))
        .route("/v1/messages/count_tokens", web::post().to(count_tokens))
        .route("/v1/models", web::get().to(list_models))
        .route("/v1/models/{id}", web::get().to(get_model))
        .route("/mock/stats", web::get().to(mock_stats))
        .route("/mock/last", web::get().to(mock_last))
        .route("/", web::head().to(probe))
        .default_service(web::to(not_found));
}

fn respond(status: StatusCode, request_id: &str) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder.insert_header(("request-id", request_id));
    for (name, value) in UPSTREAM_HEADERS {
        builder.insert_header((
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ));
    }
    builder
}

fn error_response(status: StatusCode, message: &str, request_id: &str) -> HttpResponse {
    let mut builder = respond(status, request_id);
    match status.as_u16() {
        // What the SDKs look at to decide whether and when to retry.
        429 | 529 => {
            builder.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        401..=403 => {
            builder.insert_header(("x-should-retry", "false"));
        }
        _ => {}
    }
    builder
        .content_type("application/json")
        .body(render::error_json(
            render::error_type(status),
            message,
            request_id,
        ))
}

fn invalid_request(message: &str, ids: &Ids) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, message, &ids.request_id)
}

/// The error `mock.status` asks for, with `mock.error_message` or a stock message.
fn injected_error(status: StatusCode, message: Option<&str>, ids: &Ids) -> HttpResponse {
    let message = message.unwrap_or_else(|| render::default_error_message(status));
    error_response(status, message, &ids.request_id)
}

/// `None` when the request may proceed, else the 401 to send.
fn refuse_unauthenticated(
    config: &MockConfig,
    req: &HttpRequest,
    ids: &Ids,
) -> Option<HttpResponse> {
    let expected = config.api_key.as_deref()?;
    let headers = req.headers();
    let by_api_key = headers
        .get("x-api-key")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let by_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == expected);
    if by_api_key || by_bearer {
        None
    } else {
        Some(error_response(
            StatusCode::UNAUTHORIZED,
            "invalid x-api-key",
            &ids.request_id,
        ))
    }
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

async fn messages(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let shared = shared.into_inner();
    Counters::bump(&shared.counters.messages);
    shared.record_last(&req, &body);
    let ids = shared.next_ids();
    if let Some(refusal) = refuse_unauthenticated(&shared.config, &req, &ids) {
        return refusal;
    }

    // The same planning as `planned_usage`, so a load generator's prediction always holds.
    let (model, plan) = match plan::plan_messages(&shared.config, &body) {
        Ok(planned) => planned,
        Err(message) => return invalid_request(&message, &ids),
    };
    let stream = plan.stream;
    tracing::debug!(request_id = %ids.request_id, %model, stream, "messages");

    if let Some(status) = plan.error_status {
        pause(plan.ttft).await;
        Counters::bump(&shared.counters.injected_status);
        return injected_error(status, plan.error_message.as_deref(), &ids);
    }

    // Encoding a String as JSON cannot fail; the fallback only keeps the output valid.
    let model_json = serde_json::to_string(&model).unwrap_or_else(|_| String::from("\"\""));

    if stream {
        let tally = StreamTally::new(Arc::clone(&shared));
        let ttft = plan.ttft;
        pause(ttft).await;
        let stream = SseStream::new(
            plan,
            &ids.message_id,
            &model_json,
            ids.request_id.clone(),
            tally,
        );
        respond(StatusCode::OK, &ids.request_id)
            .insert_header((header::CONTENT_TYPE, "text/event-stream"))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .streaming(stream)
    } else {
        pause(plan.ttft).await;
        respond(StatusCode::OK, &ids.request_id)
            .content_type("application/json")
            .body(render::message_json(&ids.message_id, &model_json, &plan))
    }
}

#[derive(Deserialize)]
struct CountTokensRequest {
    model: Option<String>,
    mock: Option<Overrides>,
}

async fn count_tokens(
    req: HttpRequest,
    body: web::Bytes,
    shared: web::Data<Shared>,
) -> HttpResponse {
    Counters::bump(&shared.counters.count_tokens);
    let ids = shared.next_ids();
    if let Some(refusal) = refuse_unauthenticated(&shared.config, &req, &ids) {
        return refusal;
    }
    let request: CountTokensRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return invalid_request(&format!("invalid request body: {e}"), &ids),
    };
    if request.model.is_none() {
        return invalid_request("model: Field required", &ids);
    }
    let overrides = request.mock.unwrap_or_default();
    // Only a per-request delay applies here: the configured time to first token is a model's.
    pause(Duration::from_millis(overrides.ttft_ms.unwrap_or(0))).await;
    match plan::error_status(&overrides) {
        Ok(Some(status)) => {
            return injected_error(status, overrides.error_message.as_deref(), &ids)
        }
        Ok(None) => {}
        Err(message) => return invalid_request(&message, &ids),
    }
    let input_tokens = plan::input_tokens(&shared.config, &overrides, body.len());
    respond(StatusCode::OK, &ids.request_id)
        .content_type("application/json")
        .body(format!("{{\"input_tokens\":{input_tokens}}}"))
}

/// The models the mock lists, newest first: `(id, display_name, created_at)`.
const MODELS: [(&str, &str, &str); 9] = [
    ("claude-opus-5-5", "Claude Opus 5.5", "2026-09-15T00:00:00Z"),
    (
        "claude-sonnet-5-5",
        "Claude Sonnet 5.5",
        "2026-09-01T00:00:00Z",
    ),
    (
        "claude-haiku-5-5",
        "Claude Haiku 5.5",
        "2026-08-20T00:00:00Z",
    ),
    (
        "claude-fable-5-2",
        "Claude Fable 5.2",
        "2026-07-10T00:00:00Z",
    ),
    ("claude-opus-5", "Claude Opus 5", "2026-05-01T00:00:00Z"),
    ("claude-sonnet-5", "Claude Sonnet 5", "2026-04-15T00:00:00Z"),
    (
        "claude-fable-5-1",
        "Claude Fable 5.1",
        "2026-03-01T00:00:00Z",
    ),
    (
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
];

fn model_info((id, display_name, created_at): (&str, &str, &str)) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": id,
        "display_name": display_name,
        "created_at": created_at,
    })
}

#[derive(Deserialize)]
struct ModelsQuery {
    after_id: Option<String>,
    before_id: Option<String>,
    limit: Option<usize>,
}

async fn list_models(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    Counters::bump(&shared.counters.models);
    let ids = shared.next_ids();
    if let Some(refusal) = refuse_unauthenticated(&shared.config, &req, &ids) {
        return refusal;
    }
    let query = match web::Query::<ModelsQuery>::from_query(req.query_string()) {
        Ok(query) => query.into_inner(),
        Err(e) => return invalid_request(&format!("invalid query: {e}"), &ids),
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    let position = |id: &str| MODELS.iter().position(|(m, _, _)| *m == id);

    // `after_id` pages forward from a model, `before_id` backward; unknown ids give an
    // empty page.
    let (page, has_more) = if let Some(after) = query.after_id.as_deref() {
        let start = position(after).map_or(MODELS.len(), |i| i + 1);
        let end = (start + limit).min(MODELS.len());
        (
            MODELS.get(start..end).unwrap_or_default(),
            end < MODELS.len(),
        )
    } else if let Some(before) = query.before_id.as_deref() {
        let end = position(before).unwrap_or(0);
        let start = end.saturating_sub(limit);
        (MODELS.get(start..end).unwrap_or_default(), start > 0)
    } else {
        let end = limit.min(MODELS.len());
        (MODELS.get(..end).unwrap_or_default(), end < MODELS.len())
    };

    let body = serde_json::json!({
        "data": page.iter().copied().map(model_info).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first().map(|m| m.0),
        "last_id": page.last().map(|m| m.0),
    });
    respond(StatusCode::OK, &ids.request_id).json(body)
}

async fn get_model(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    Counters::bump(&shared.counters.models);
    let ids = shared.next_ids();
    if let Some(refusal) = refuse_unauthenticated(&shared.config, &req, &ids) {
        return refusal;
    }
    let id = req.match_info().get("id").unwrap_or_default();
    match MODELS.iter().find(|(m, _, _)| *m == id) {
        Some(model) => respond(StatusCode::OK, &ids.request_id).json(model_info(*model)),
        None => error_response(
            StatusCode::NOT_FOUND,
            &format!("model: {id}"),
            &ids.request_id,
        ),
    }
}

async fn mock_stats(shared: web::Data<Shared>) -> HttpResponse {
    respond(StatusCode::OK, UNSEQUENCED_REQUEST_ID).json(shared.counters.snapshot())
}

async fn mock_last(shared: web::Data<Shared>) -> HttpResponse {
    let guard = shared.last.lock().unwrap_or_else(|e| e.into_inner());
    let Some(last) = guard.as_ref() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no /v1/messages request received yet",
            UNSEQUENCED_REQUEST_ID,
        );
    };
    let mut headers = serde_json::Map::new();
    for (name, value) in last.headers.iter() {
        let value = String::from_utf8_lossy(value.as_bytes());
        // A header sent several times is reported once, its values joined as HTTP allows.
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), value.into_owned().into());
            }
        }
    }
    let body = serde_json::json!({
        "headers": headers,
        "body": String::from_utf8_lossy(&last.body),
        "query": last.query,
    });
    drop(guard);
    respond(StatusCode::OK, UNSEQUENCED_REQUEST_ID).json(body)
}

/// Claude Code probes `HEAD /` before it starts.
async fn probe() -> HttpResponse {
    respond(StatusCode::OK, UNSEQUENCED_REQUEST_ID).finish()
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("Not found: {} {}", req.method(), req.path()),
        UNSEQUENCED_REQUEST_ID,
    )
}
