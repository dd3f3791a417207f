//! The JSON error of the admin and customer APIs: `{"error":{"code","message","field"?}}`.

use std::fmt;

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use super::anthropic::retry_after_secs;

/// What went wrong with an admin or customer API request. One [`ApiError::status`] maps every
/// variant to HTTP; the body always has the same shape.
#[derive(Debug)]
pub enum ApiError {
    /// The request is malformed or a value is out of range. `field` names the offending input
    /// (`amount_usd`, `limits.max_concurrent`) when there is one; the message names it too, so
    /// a person reading only the message still knows where to look.
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// No valid credentials; the text says which were expected (the admin bearer token, a
    /// session).
    Unauthorized(&'static str),
    /// The caller is known but may not do this; the text says what would be allowed.
    Forbidden(&'static str),
    /// Too many failed attempts from this client; it may try again after `retry_after`.
    TooManyFailures { retry_after: std::time::Duration },
    /// Too many attempts at something throttled regardless of success (the text says what,
    /// such as registrations from this network); retry after `retry_after`.
    RateLimited {
        what: &'static str,
        retry_after: std::time::Duration,
    },
    /// The thing named does not exist (or the caller may not know it does).
    NotFound(&'static str),
    /// The route exists but does not answer this method; `allow` lists those it does
    /// (`GET, POST`), as the `Allow` header says too.
    MethodNotAllowed { allow: String },
    /// The body is larger than the route reads (actix's payload limit, rendered here by
    /// [`payload_too_large`]).
    PayloadTooLarge,
    /// The write collides with existing state, such as a taken email.
    Conflict(String),
    /// An `Idempotency-Key` already used for a different request on the same route and
    /// account; the text names the key. Nothing was changed.
    IdempotencyKeyReused(String),
    /// The surface is switched off or a dependency is down; retrying later may work.
    Unavailable(String),
    /// An unexpected failure. Its cause was logged where it was built
    /// ([`ApiError::internal`]); the client gets a generic message.
    Internal,
}

impl ApiError {
    /// A bad value of one field: the message reads `"<field>: <problem>"`.
    pub fn field(field: impl Into<String>, problem: impl fmt::Display) -> ApiError {
        let field = field.into();
        ApiError::Invalid {
            message: format!("{field}: {problem}"),
            field: Some(field),
        }
    }

    /// A malformed request that no single field is to blame for (a body that is not JSON).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: None,
            message: message.into(),
        }
    }

    /// Logs an unexpected failure with its cause and returns the generic error for it.
    pub fn internal(error: impl fmt::Display) -> ApiError {
        tracing::error!(%error, "API request failed");
        ApiError::Internal
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyFailures { .. } | ApiError::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooManyFailures { .. } => "too_many_failures",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Invalid { message, .. }
            | ApiError::Conflict(message)
            | ApiError::Unavailable(message) => message.clone(),
            ApiError::Unauthorized(expected) | ApiError::Forbidden(expected) => (*expected).into(),
            ApiError::TooManyFailures { .. } => {
                "too many failed authentication attempts from this address; retry later".into()
            }
            ApiError::RateLimited { what, .. } => format!("too many {what}; retry later"),
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::MethodNotAllowed { allow } => {
                format!("this route answers only {allow}")
            }
            ApiError::PayloadTooLarge => "the body is larger than this route reads".into(),
            ApiError::IdempotencyKeyReused(key) => format!(
                "Idempotency-Key {key:?} was already used on this route for this account with a different body; nothing was changed. Send a new key for a new change"
            ),
            ApiError::Internal => "internal error; see the server log".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let field = match self {
            ApiError::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.message(),
                field,
            },
        };
        let mut response = HttpResponse::build(self.status());
        if let ApiError::TooManyFailures { retry_after }
        | ApiError::RateLimited { retry_after, .. } = self
        {
            response.insert_header(("retry-after", retry_after_secs(*retry_after).to_string()));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header(("allow", allow.as_str()));
        }
        response.json(body)
    }
}

/// Middleware hook (`ErrorHandlers`, on the API scopes) for a 413: actix's body extractor
/// answers an oversized body in plain text before any handler runs, and the API answers every
/// error in its own shape.
pub fn payload_too_large<B>(
    response: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (request, _) = response.into_parts();
    let answer = ApiError::PayloadTooLarge.error_response();
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, answer).map_into_right_body(),
    ))
}

/// The body of every customer and admin API error: `{"error":{"code","message","field"?}}`.
/// It is the type the error is rendered from, so the OpenAPI document shows what is sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_request`, `unauthorized`, `forbidden`,
    /// `too_many_failures`, `rate_limited`, `not_found`, `method_not_allowed`,
    /// `payload_too_large`, `conflict`, `idempotency_key_reused`, `unavailable` or `internal`.
    #[schema(example = "invalid_request")]
    pub code: &'static str,
    /// For a person; it names the field too when there is one.
    #[schema(example = "amount_usd: must be greater than 0")]
    pub message: String,
    /// The input to fix (`amount_usd`, `limits.max_concurrent`, a query parameter), present
    /// only when one input is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "amount_usd")]
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::to_bytes;

    async fn body_of(error: ApiError) -> serde_json::Value {
        let bytes = to_bytes(error.error_response().into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn a_field_error_names_the_field_in_both_places() {
        let body = body_of(ApiError::field("amount_usd", "must be greater than 0")).await;
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["field"], "amount_usd");
        assert_eq!(
            body["error"]["message"],
            "amount_usd: must be greater than 0"
        );
    }

    #[actix_web::test]
    async fn errors_without_a_field_leave_it_out() {
        let body = body_of(ApiError::NotFound("account")).await;
        assert_eq!(body["error"]["code"], "not_found");
        assert_eq!(body["error"]["message"], "account not found");
        assert!(body["error"].get("field").is_none());
        assert_eq!(
            ApiError::Unauthorized("a token").status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
