//! The small routes around the proxy: the base URL's probes, Claude Code's telemetry, and
//! Anthropic's 404 for anything else under `/v1`.

use actix_web::{HttpRequest, HttpResponse};

use crate::http::error::{AnthropicError, ProxyError};
use crate::http::request_id::RequestId;

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

/// Anything else under `/v1`.
pub async fn not_found(req: HttpRequest, rid: RequestId) -> Result<HttpResponse, AnthropicError> {
    Err(ProxyError::NotFound {
        what: format!("no route for {} {}", req.method(), req.path()),
    }
    .at(rid))
}
