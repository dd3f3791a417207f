//! The Anthropic-compatible surface. A request's life: authenticate, read and check the body,
//! price it, pre-authorize a hold, forward upstream, relay, settle.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::Utc;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tollgate_actors::hold::RequestShape;
use tollgate_actors::relay::{ClientChunk, StreamActor};
use tollgate_actors::sse::usage_from_message;
use tollgate_actors::store::Outcome;
use tollgate_actors::{AdmitError, EngineError, HoldRequest, HoldTicket, Refusal, Settlement};
use tracing::Instrument;

use super::errors::ApiError;
use super::request_id::RequestId;
use super::AppState;
use crate::auth::{AuthFailure, KeyOwner};
use crate::upstream::{
    forwarded_headers, Endpoint, Upstream, UpstreamError, RELAYED_RESPONSE_HEADERS,
};

/// The fields of a Messages request that tollgate reads. Everything else passes through
/// unseen; the body is forwarded byte for byte.
#[derive(Deserialize)]
struct MessagesProbe<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    max_tokens: Option<serde_json::Number>,
    /// Read only to refuse a non-boolean early; whether a response streams is decided by what
    /// the upstream sends.
    #[allow(dead_code)]
    stream: Option<bool>,
}

/// What the upstream exchange hands back to the handler.
enum Reply {
    Stream {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: mpsc::Receiver<ClientChunk>,
    },
    Full {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// tollgate's own error for this request (upstream unreachable, upstream refused
    /// tollgate's credentials, shutdown).
    Failed { status: u16, message: String },
}

/// The API key from `x-api-key` or `Authorization: Bearer`.
fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(key) = req.headers().get("x-api-key") {
        return key.to_str().ok().map(str::trim);
    }
    let authorization = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|addr| addr.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub(super) fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    rid: RequestId,
) -> Result<KeyOwner, ApiError> {
    state
        .keys
        .authenticate(presented_key(req), client_ip(req))
        .map_err(|failure| match failure {
            AuthFailure::InvalidKey => ApiError::new(401, "invalid x-api-key", rid),
            AuthFailure::TooManyFailures(wait) => ApiError::new(
                429,
                "too many failed authentication attempts from this address",
                rid,
            )
            .retry_after(wait),
        })
}

async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    rid: RequestId,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            format!("request body is larger than the {limit}-byte limit"),
            rid,
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    match payload.to_bytes_limited(limit).await {
        Err(_) => Err(too_large()),
        Ok(Err(error)) => Err(ApiError::new(
            400,
            format!("could not read the request body: {error}"),
            rid,
        )),
        Ok(Ok(body)) => Ok(body),
    }
}

/// Parsed and checked: what the hold and the relay need to know.
#[derive(Debug)]
struct Checked {
    model: String,
    max_tokens: u64,
}

fn check_messages_body(body: &[u8], rid: RequestId) -> Result<Checked, ApiError> {
    let probe: MessagesProbe<'_> = serde_json::from_slice(body)
        .map_err(|error| ApiError::new(400, format!("invalid request body: {error}"), rid))?;
    let model = probe
        .model
        .ok_or_else(|| ApiError::new(400, "model: field required", rid))?;
    let max_tokens = probe
        .max_tokens
        .ok_or_else(|| ApiError::new(400, "max_tokens: field required", rid))?;
    let max_tokens = max_tokens
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| ApiError::new(400, "max_tokens: must be a positive integer", rid))?;
    Ok(Checked {
        model: model.into_owned(),
        max_tokens,
    })
}

fn admit_error(error: AdmitError, rid: RequestId) -> ApiError {
    match error {
        AdmitError::Refused(Refusal::Suspended) => {
            ApiError::new(403, "this account is suspended", rid)
        }
        AdmitError::Refused(Refusal::InsufficientBalance {
            required,
            available,
        }) => ApiError::new(
            402,
            format!(
                "insufficient balance: this request reserves up to {} USD (its prompt estimate plus max_tokens of output) and {} USD is available; lower max_tokens or recharge",
                required.normalize(),
                available.normalize()
            ),
            rid,
        ),
        AdmitError::Refused(Refusal::Throttled { which, retry_after }) => ApiError::new(
            429,
            format!("rate limit exceeded: {} for this account", which.as_str()),
            rid,
        )
        .retry_after(retry_after),
        AdmitError::Engine(EngineError::AccountNotFound) => {
            ApiError::new(401, "invalid x-api-key", rid)
        }
        AdmitError::Engine(EngineError::Overloaded | EngineError::Stopped) => {
            ApiError::new(529, "tollgate is overloaded; retry shortly", rid)
        }
        AdmitError::Engine(EngineError::LedgerUnavailable) => ApiError::new(
            529,
            "the billing ledger is temporarily unavailable; retry shortly",
            rid,
        )
        .retry_after(Duration::from_secs(5)),
        AdmitError::Engine(EngineError::Store(error)) => {
            tracing::error!(%rid, %error, "account could not be loaded");
            ApiError::new(500, "internal error", rid)
        }
    }
}

/// Upstream response headers worth relaying, converted to actix's types.
fn relayed_headers(upstream: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut relayed = Vec::with_capacity(2);
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = upstream.get(name) {
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                relayed.push((HeaderName::from_static(name), value));
            }
        }
    }
    relayed
}

/// What a client is told when the upstream could not be asked: too slow, or not reachable.
fn unreachable_message(error: &UpstreamError) -> String {
    let why = if error.is_timeout() {
        "timed out"
    } else {
        "connection failed"
    };
    format!("the upstream provider could not be reached ({why})")
}

fn status_of(upstream: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(upstream.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// An upstream error body, with our request id in place of the upstream's. A body that is not
/// Anthropic's error shape is wrapped in it.
fn rewrite_error_body(body: &[u8], status: StatusCode, rid: RequestId) -> Bytes {
    let mut value = serde_json::from_slice::<serde_json::Value>(body).ok();
    match value.as_mut().and_then(|v| v.as_object_mut()) {
        Some(object) if object.contains_key("error") => {
            object.insert("request_id".into(), rid.to_string().into());
        }
        _ => {
            value = Some(serde_json::json!({
                "type": "error",
                "error": {
                    "type": super::errors::error_type(status),
                    "message": format!("upstream returned HTTP {}", status.as_u16()),
                },
                "request_id": rid.to_string(),
            }));
        }
    }
    value
        .and_then(|v| serde_json::to_vec(&v).ok())
        .map(Bytes::from)
        .unwrap_or_default()
}

/// Counter handles for settled requests, looked up once rather than per request.
struct SettleCounters {
    tokens: [metrics::Counter; 5],
    completed: metrics::Counter,
    other: [(Outcome, metrics::Counter); 3],
}

fn settle_counters() -> &'static SettleCounters {
    static COUNTERS: std::sync::OnceLock<SettleCounters> = std::sync::OnceLock::new();
    COUNTERS.get_or_init(|| {
        let tokens = |class: &'static str| metrics::counter!("tollgate_billed_tokens_total", "class" => class);
        let settled = |outcome: Outcome| {
            metrics::counter!("tollgate_settled_requests_total", "outcome" => outcome.as_str())
        };
        SettleCounters {
            tokens: [
                tokens("input"),
                tokens("output"),
                tokens("cache_read"),
                tokens("cache_write_5m"),
                tokens("cache_write_1h"),
            ],
            completed: settled(Outcome::Completed),
            other: [
                (Outcome::ClientDisconnected, settled(Outcome::ClientDisconnected)),
                (Outcome::UpstreamCut, settled(Outcome::UpstreamCut)),
                (Outcome::Interrupted, settled(Outcome::Interrupted)),
            ],
        }
    })
}

/// Token and request counters for `/metrics`.
fn record(settlement: &Settlement) {
    let counters = settle_counters();
    let usage = &settlement.usage;
    for (counter, tokens) in counters.tokens.iter().zip([
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
    ]) {
        counter.increment(tokens);
    }
    if settlement.outcome == Outcome::Completed {
        counters.completed.increment(1);
    } else if let Some((_, counter)) = counters
        .other
        .iter()
        .find(|(o, _)| *o == settlement.outcome)
    {
        counter.increment(1);
    }
}

/// The upstream half of a request, run on its own tracked task so that a client going away
/// does not stop tollgate from learning and billing what the upstream produced.
struct Exchange {
    /// Shared, not copied: the worker's client, routes and key.
    upstream: web::Data<Upstream>,
    query: Option<String>,
    headers: http::HeaderMap,
    body: Bytes,
    drain: Duration,
    rid: RequestId,
    /// Fired when shutdown's drain bound has passed.
    interrupt: CancellationToken,
}

/// `work`, unless shutdown interrupts it first.
async fn unless_interrupted<F: std::future::Future>(
    interrupt: &CancellationToken,
    work: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = interrupt.cancelled() => None,
        output = work => Some(output),
    }
}

fn interrupted_reply() -> Reply {
    Reply::Failed {
        status: 529,
        message: "tollgate is shutting down; retry".into(),
    }
}

async fn exchange(exchange: Exchange, ticket: HoldTicket, reply: oneshot::Sender<Reply>) {
    let Exchange {
        upstream,
        query,
        headers,
        body,
        drain,
        rid,
        interrupt,
    } = exchange;
    // Until a response starts streaming, nothing has been seen that could be billed: an
    // interrupt releases the hold (dropping the ticket does) and answers 529.
    let sent = unless_interrupted(
        &interrupt,
        upstream.post(Endpoint::Messages, query.as_deref(), headers, body),
    );
    let response = match sent.await {
        None => {
            let _ = reply.send(interrupted_reply());
            return;
        }
        Some(Ok(response)) => response,
        Some(Err(error)) => {
            tracing::warn!(%rid, upstream = %upstream.name, %error, "upstream request failed");
            ticket.release();
            let _ = reply.send(Reply::Failed {
                status: 502,
                message: unreachable_message(&error),
            });
            return;
        }
    };
    let status = status_of(response.status);
    let headers = relayed_headers(&response.headers);
    if !status.is_success() {
        let Some(body) = unless_interrupted(&interrupt, response.bytes()).await else {
            let _ = reply.send(interrupted_reply());
            return;
        };
        let body = body.unwrap_or_default();
        // Bill only usage the upstream itself reported; an error normally reports none.
        match usage_from_message(&body).filter(|usage| !usage.is_zero()) {
            Some(usage) => record(&ticket.settle(usage, Outcome::UpstreamCut)),
            None => ticket.release(),
        }
        if matches!(status.as_u16(), 401..=403) {
            // The upstream refused the operator's key or account, not the customer's: telling
            // the customer their key is invalid or their balance short would mislead them.
            tracing::error!(%rid, upstream = %upstream.name, status = status.as_u16(), "the upstream refused tollgate's credentials or account");
            let _ = reply.send(Reply::Failed {
                status: 502,
                message: format!(
                    "the upstream provider refused this service's request (HTTP {}); the operator must check the upstream account",
                    status.as_u16()
                ),
            });
            return;
        }
        let body = rewrite_error_body(&body, status, rid);
        let mut headers = headers;
        headers.retain(|(name, _)| name != "content-type");
        headers.push((
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ));
        let _ = reply.send(Reply::Full {
            status,
            headers,
            body,
        });
        return;
    }
    // Meter what the upstream sent, not what was asked for: an event stream is relayed and
    // parsed as one, a JSON answer to a streaming request is metered as a message.
    if response.is_event_stream() {
        let (actor, body) = StreamActor::new(response.into_stream(), ticket, drain, interrupt);
        // If the client is already gone, the actor finds out on its first send and drains.
        let _ = reply.send(Reply::Stream {
            status,
            headers,
            body,
        });
        if let Some(settlement) = actor.run().await {
            record(&settlement);
        }
        return;
    }
    let Some(read) = unless_interrupted(&interrupt, response.bytes()).await else {
        let _ = reply.send(interrupted_reply());
        return;
    };
    match read {
        Ok(body) => {
            let usage = usage_from_message(&body);
            let delivered = reply
                .send(Reply::Full {
                    status,
                    headers,
                    body,
                })
                .is_ok();
            match usage {
                Some(usage) => {
                    let outcome = if delivered {
                        Outcome::Completed
                    } else {
                        Outcome::ClientDisconnected
                    };
                    record(&ticket.settle(usage, outcome));
                }
                None => {
                    tracing::warn!(%rid, "upstream response carried no usage; nothing billed");
                    ticket.release();
                }
            }
        }
        Err(error) => {
            tracing::warn!(%rid, %error, "upstream response body failed");
            ticket.release();
            let _ = reply.send(Reply::Failed {
                status: 502,
                message: "the upstream provider's response was cut".into(),
            });
        }
    }
}

/// `POST /v1/messages`
pub async fn messages(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let owner = authenticate(&req, &state, rid)?;
    let body = read_body(&req, payload, state.settings.server.max_body_bytes, rid).await?;
    let checked = check_messages_body(&body, rid)?;
    let started_at = Utc::now();
    let card = state.card.model(&checked.model).ok_or_else(|| {
        ApiError::new(
            400,
            format!(
                "model: {} is not a model this service offers",
                checked.model
            ),
            rid,
        )
    })?;
    let version = card.version_at(started_at).ok_or_else(|| {
        ApiError::new(
            400,
            format!("model: {} has no price in force", card.id),
            rid,
        )
    })?;
    let span = tracing::debug_span!("messages", %rid, account_id = %owner.account_id);
    let ticket = state
        .engine
        .pre_authorize(HoldRequest {
            request_id: rid.0,
            account_id: owner.account_id,
            key_id: owner.key_id,
            model: card.id.clone(),
            version: version.clone(),
            shape: RequestShape::of(&body, checked.max_tokens),
            started_at,
        })
        .await
        .map_err(|error| admit_error(error, rid))?;

    let (reply_tx, reply_rx) = oneshot::channel();
    let work = Exchange {
        upstream: upstream.clone(),
        query: req.uri().query().map(str::to_string),
        headers: forwarded_headers(req.headers()),
        body,
        drain: state.stream_drain,
        rid,
        interrupt: state.engine.interrupted(),
    };
    state
        .engine
        .spawn_tracked(exchange(work, ticket, reply_tx).instrument(span));
    let reply = reply_rx
        .await
        .map_err(|_| ApiError::new(500, "the upstream exchange ended unexpectedly", rid))?;
    respond(reply, rid)
}

fn respond(reply: Reply, rid: RequestId) -> Result<HttpResponse, ApiError> {
    match reply {
        Reply::Failed { status, message } => Err(ApiError::new(status, message, rid)),
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut response = HttpResponse::build(status);
            let has_retry_after = headers.iter().any(|(name, _)| name == "retry-after");
            for header in headers {
                response.insert_header(header);
            }
            if matches!(status.as_u16(), 429 | 529) && !has_retry_after {
                response.insert_header(("retry-after", "1"));
            }
            Ok(response.body(body))
        }
        Reply::Stream {
            status,
            headers,
            body,
        } => {
            let mut response = HttpResponse::build(status);
            for header in headers {
                response.insert_header(header);
            }
            response.insert_header(("cache-control", "no-cache"));
            Ok(response.streaming(
                ReceiverStream::new(body)
                    .map(|chunk| chunk.map_err(actix_web::error::ErrorBadGateway)),
            ))
        }
    }
}

/// `POST /v1/messages/count_tokens`: forwarded, throttled per key, never billed.
pub async fn count_tokens(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let owner = authenticate(&req, &state, rid)?;
    if let Some(limiter) = &state.count_tokens_limiter {
        limiter.check_key(&owner.key_id).map_err(|not_until| {
            ApiError::new(
                429,
                "rate limit exceeded: count_tokens calls for this key",
                rid,
            )
            .retry_after(not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            )))
        })?;
    }
    let view = state
        .engine
        .view(owner.account_id)
        .await
        .map_err(|error| admit_error(error.into(), rid))?;
    if view.status == tollgate_actors::store::AccountStatus::Suspended {
        return Err(ApiError::new(403, "this account is suspended", rid));
    }
    let body = read_body(&req, payload, state.settings.server.max_body_bytes, rid).await?;
    let response = upstream
        .post(
            Endpoint::CountTokens,
            req.uri().query(),
            forwarded_headers(req.headers()),
            body,
        )
        .await
        .map_err(|error| {
            tracing::warn!(%rid, upstream = %upstream.name, %error, "upstream request failed");
            ApiError::new(502, unreachable_message(&error), rid)
        })?;
    let status = status_of(response.status);
    let headers = relayed_headers(&response.headers);
    let body = response.bytes().await.map_err(|error| {
        tracing::warn!(%rid, %error, "upstream response body failed");
        ApiError::new(502, "the upstream provider's response was cut", rid)
    })?;
    let body = if status.is_success() {
        body
    } else {
        rewrite_error_body(&body, status, rid)
    };
    respond(
        Reply::Full {
            status,
            headers,
            body,
        },
        rid,
    )
}

#[derive(Deserialize)]
pub struct ModelsQuery {
    after_id: Option<String>,
    before_id: Option<String>,
    limit: Option<usize>,
}

fn model_info(card: &tollgate_actors::pricing::ModelCard) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": card.id,
        "display_name": card.display_name,
        "created_at": card.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// `GET /v1/models`, from the rate card: what is listed is what can be billed.
pub async fn list_models(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ModelsQuery>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state, rid)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(400, "limit: must be between 1 and 1000", rid));
    }
    let all: Vec<_> = state.card.models().collect();
    let position = |id: &str| all.iter().position(|card| card.id == id);
    let page: Vec<_> = if let Some(after) = &query.after_id {
        let start = position(after).map(|i| i + 1).unwrap_or(all.len());
        all[start..].iter().take(limit).collect()
    } else if let Some(before) = &query.before_id {
        let end = position(before).unwrap_or(0);
        all[end.saturating_sub(limit)..end].iter().collect()
    } else {
        all.iter().take(limit).collect()
    };
    let last_index = page
        .last()
        .and_then(|card| position(&card.id))
        .unwrap_or(all.len());
    let has_more = if query.before_id.is_some() {
        page.first()
            .and_then(|card| position(&card.id))
            .is_some_and(|i| i > 0)
    } else {
        last_index + 1 < all.len()
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "data": page.iter().map(|card| model_info(card)).collect::<Vec<_>>(),
        "has_more": has_more,
        "first_id": page.first().map(|card| card.id.clone()),
        "last_id": page.last().map(|card| card.id.clone()),
    })))
}

/// `GET /v1/models/{id}`
pub async fn get_model(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &state, rid)?;
    let card = state
        .card
        .model(&path)
        .ok_or_else(|| ApiError::new(404, format!("model: {path}"), rid))?;
    Ok(HttpResponse::Ok().json(model_info(card)))
}

/// `HEAD /` and `GET /`: Claude Code probes the base URL.
pub async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("tollgate: an Anthropic-compatible metering proxy\n")
}

/// `POST /api/event_logging/batch`: Claude Code's telemetry, accepted and dropped.
pub async fn event_logging() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "success": true }))
}

/// Anything else under `/v1`: Anthropic's 404.
pub async fn not_found(req: HttpRequest, rid: RequestId) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        404,
        format!("no route for {} {}", req.method(), req.path()),
        rid,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rid() -> RequestId {
        RequestId(Uuid::nil())
    }

    #[test]
    fn a_messages_body_needs_a_model_and_a_positive_max_tokens() {
        let ok = check_messages_body(
            br#"{"model":"m","max_tokens":5,"stream":true,"x":[1]}"#,
            rid(),
        )
        .unwrap();
        assert_eq!((ok.model.as_str(), ok.max_tokens), ("m", 5));
        for bad in [
            &br#"{"max_tokens":5}"#[..],
            br#"{"model":"m"}"#,
            br#"{"model":"m","max_tokens":0}"#,
            br#"{"model":"m","max_tokens":-3}"#,
            br#"{"model":"m","max_tokens":1.5}"#,
            br#"{"model":"m","max_tokens":5"#,
            br#"[1,2]"#,
            b"",
        ] {
            assert_eq!(
                check_messages_body(bad, rid()).unwrap_err().status.as_u16(),
                400
            );
        }
    }

    #[test]
    fn an_upstream_error_body_gets_our_request_id() {
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"},"request_id":"req_upstream"}"#;
        let out: serde_json::Value = serde_json::from_slice(&rewrite_error_body(
            body,
            StatusCode::from_u16(529).unwrap(),
            rid(),
        ))
        .unwrap();
        assert_eq!(out["request_id"], rid().to_string());
        assert_eq!(out["error"]["type"], "overloaded_error");
        let out: serde_json::Value = serde_json::from_slice(&rewrite_error_body(
            b"<html>",
            StatusCode::BAD_GATEWAY,
            rid(),
        ))
        .unwrap();
        assert_eq!(out["error"]["type"], "api_error");
    }
}
