//! Every response carries a `request-id`; the same id appears in error bodies and in the logs
//! and usage row of the request.

use std::fmt;
use std::future::{ready, Ready};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use uuid::Uuid;

static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// A request's id: a UUIDv7, shown as `req_` and 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(pub Uuid);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req_{}", self.0.simple())
    }
}

impl RequestId {
    /// The id [`assign`] gave this request; a fresh one where the middleware did not run.
    pub fn of(req: &HttpRequest) -> RequestId {
        req.extensions()
            .get::<RequestId>()
            .copied()
            .unwrap_or_else(|| RequestId(Uuid::now_v7()))
    }

    /// The id as a header value, formatted without a heap allocation.
    fn header_value(self) -> HeaderValue {
        let mut buf = [0u8; 4 + uuid::fmt::Simple::LENGTH];
        buf[..4].copy_from_slice(b"req_");
        self.0.simple().encode_lower(&mut buf[4..]);
        // ASCII letters, digits and an underscore: always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
    }
}

/// Status codes as static metric labels (no allocation per response).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        _ => "other",
    }
}

impl FromRequest for RequestId {
    type Error = actix_web::Error;
    type Future = Ready<Result<RequestId, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(Ok(RequestId::of(req)))
    }
}

/// Middleware: assigns the id and stamps it on the response.
pub async fn assign(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId(Uuid::now_v7());
    req.extensions_mut().insert(id);
    let mut response = next.call(req).await?;
    metrics::counter!("tollgate_http_responses_total", "status" => status_label(response.status().as_u16()))
        .increment(1);
    response
        .headers_mut()
        .insert(REQUEST_ID.clone(), id.header_value());
    Ok(response)
}
