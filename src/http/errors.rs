//! Error responses. `/v1/*` speaks Anthropic's shape, so SDKs and Claude Code understand it;
//! the admin API uses a plain `{"error":{"code","message"}}`.

use std::fmt;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use super::request_id::RequestId;

pub static X_SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// An error on the Anthropic-compatible surface.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Anthropic's `error.type`, e.g. `billing_error`.
    pub kind: &'static str,
    pub message: String,
    pub request_id: RequestId,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>, request_id: RequestId) -> ApiError {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            kind: error_type(status),
            message: message.into(),
            request_id,
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, wait: Duration) -> ApiError {
        self.retry_after = Some(wait);
        self
    }
}

/// Anthropic's `error.type` for an HTTP status.
pub fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Whole seconds for `retry-after`, rounded up so a client never retries too early.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.status, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        match self.status.as_u16() {
            // Retrying cannot fix a bad key or an empty balance.
            401..=403 => {
                response.insert_header((X_SHOULD_RETRY.clone(), HeaderValue::from_static("false")));
            }
            429 | 529 => {
                let wait = self.retry_after.unwrap_or(Duration::from_secs(1));
                response.insert_header(("retry-after", retry_after_secs(wait).to_string()));
            }
            _ => {}
        }
        response.json(json!({
            "type": "error",
            "error": { "type": self.kind, "message": self.message },
            "request_id": self.request_id.to_string(),
        }))
    }
}

/// An error on the admin API.
#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    pub fn bad_request(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> AdminError {
        AdminError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("{what} not found"),
        }
    }

    pub fn conflict(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
        }
    }

    pub fn unauthorized() -> AdminError {
        AdminError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid admin bearer token is required".into(),
        }
    }

    /// An unexpected failure: the cause is logged, the client gets a generic message.
    pub fn internal(error: impl fmt::Display) -> AdminError {
        tracing::error!(%error, "admin request failed");
        AdminError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the server log".into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> AdminError {
        AdminError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}
