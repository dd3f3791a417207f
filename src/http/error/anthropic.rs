//! Anthropic's wire shape for errors, so that SDKs and Claude Code understand them:
//! `{"type":"error","error":{"type","message"},"request_id"}`.

use std::fmt;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::proxy::{ErrorKind, ProxyError, Retry};
use crate::http::request_id::RequestId;

pub static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// A [`ProxyError`] of one request, answered in Anthropic's shape.
#[derive(Debug)]
pub struct AnthropicError {
    pub error: ProxyError,
    pub request_id: RequestId,
}

impl ProxyError {
    /// This failure, as the answer to request `request_id`.
    pub fn at(self, request_id: RequestId) -> AnthropicError {
        AnthropicError {
            error: self,
            request_id,
        }
    }
}

/// Anthropic's `error.type` for a kind of failure.
pub fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request_error",
        ErrorKind::Authentication => "authentication_error",
        ErrorKind::Billing => "billing_error",
        ErrorKind::Permission => "permission_error",
        ErrorKind::NotFound => "not_found_error",
        ErrorKind::RequestTooLarge => "request_too_large",
        ErrorKind::RateLimit => "rate_limit_error",
        ErrorKind::Api => "api_error",
        ErrorKind::Timeout => "timeout_error",
        ErrorKind::Overloaded => "overloaded_error",
    }
}

/// Whole seconds for `retry-after`, rounded up so a client never retries too early.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl fmt::Display for AnthropicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = self.error.failure();
        write!(
            f,
            "{} ({}): {}",
            error_type(failure.kind),
            failure.status,
            self.error.message()
        )
    }
}

impl ResponseError for AnthropicError {
    fn status_code(&self) -> StatusCode {
        self.error.failure().status
    }

    fn error_response(&self) -> HttpResponse {
        let failure = self.error.failure();
        let mut response = HttpResponse::build(failure.status);
        match failure.retry {
            Retry::Never => {
                response.insert_header((X_SHOULD_RETRY.clone(), HeaderValue::from_static("false")));
            }
            Retry::After(wait) => {
                response.insert_header(("retry-after", retry_after_secs(wait).to_string()));
            }
            Retry::Unspecified => {}
        }
        response.json(json!({
            "type": "error",
            "error": { "type": error_type(failure.kind), "message": self.error.message() },
            "request_id": self.request_id.to_string(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;
    use uuid::Uuid;

    fn rid() -> RequestId {
        RequestId(Uuid::nil())
    }

    #[actix_web::test]
    async fn a_refusal_renders_in_anthropics_shape_with_its_retry_header() {
        let response = ProxyError::Suspended.at(rid()).error_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers().get("x-should-retry").unwrap(), "false");
        let body: serde_json::Value =
            serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "permission_error");
        assert_eq!(body["request_id"], rid().to_string());
        let response = ProxyError::LedgerUnavailable.at(rid()).error_response();
        assert_eq!(response.headers().get("retry-after").unwrap(), "5");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
