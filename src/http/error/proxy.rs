//! Every way a request on the Anthropic-compatible surface can fail, and the one mapping of
//! each to an HTTP status, an error kind and retry advice. Rendering the body is the wire
//! format's job ([`super::anthropic`]), so that another format can render the same failures.

use std::time::Duration;

use actix_web::http::StatusCode;
use rust_decimal::Decimal;
use tollgate_actors::{AdmitError, EngineError, Refusal, SpendCap, Throttle};

use crate::http::request_id::RequestId;

/// What went wrong, in the domain's words.
#[derive(Debug)]
pub enum ProxyError {
    /// No key, a malformed, unknown or revoked one, or a key whose account is gone.
    InvalidKey,
    /// The key's `expires_at` has passed.
    KeyExpired,
    /// The client's address is outside the key's `allowed_ips`.
    AddressNotAllowed,
    /// The key's model allowlist does not name the requested model.
    ModelNotAllowed {
        model: String,
    },
    Suspended,
    /// The request's hold is larger than what the account can spend.
    InsufficientBalance {
        required: Decimal,
        available: Decimal,
    },
    /// The hold does not fit under one of the key's spend caps less what the key spent and
    /// holds.
    SpendCapReached {
        cap: SpendCap,
        limit: Decimal,
        required: Decimal,
        available: Decimal,
    },
    /// Found before the body was read: nothing of the balance is available (at or below zero,
    /// or all of it held by requests in flight).
    NothingAvailable,
    /// A limit is spent; it allows the next request after `retry_after`.
    Throttled {
        limit: Limit,
        retry_after: Duration,
    },
    /// The request is malformed. `field` names the offending part when there is one.
    BadRequest {
        field: Option<&'static str>,
        problem: String,
    },
    BodyTooLarge {
        limit: usize,
    },
    /// The client did not send its whole body within the read deadline.
    BodyReadTimeout {
        deadline: Duration,
    },
    /// The model is not on the rate card, so it cannot be billed.
    UnknownModel {
        model: String,
    },
    /// The model is on the rate card but no price version is in force yet.
    NoPriceInForce {
        model: String,
    },
    /// No such route or resource (`what` says which).
    NotFound {
        what: String,
    },
    /// The upstream could not be reached: connection refused, reset, DNS, TLS.
    UpstreamUnreachable,
    /// The upstream was silent for longer than its timeout before it answered.
    UpstreamTimedOut,
    /// The upstream refused the operator's credentials or account (its 401, 402 or 403):
    /// the customer's key and balance are fine.
    UpstreamRefusedCredentials {
        status: u16,
    },
    /// The upstream's response body broke off before it was complete.
    UpstreamCut,
    /// A successful upstream answer to a non-streaming request was not a Message (an HTML
    /// page, or a proxy's error object with a 200).
    UpstreamNotAMessage,
    /// The upstream's response body (an error or a whole Message) was larger than tollgate
    /// reads (`crate::upstream::MAX_ERROR_BODY_BYTES`, `MAX_MESSAGE_BODY_BYTES`).
    UpstreamTooLarge {
        limit: usize,
    },
    /// An account's mailbox is full, or the engine is stopping.
    Overloaded,
    /// The ledger cannot be written and too much usage is waiting for it.
    LedgerUnavailable,
    /// The usage journal cannot take more settles (failed, hung, full or behind): new
    /// requests are refused until it can (docs/adr/0019-write-ahead-journal.md).
    JournalUnavailable,
    /// Shutdown interrupted the request before anything billable was seen.
    ShuttingDown,
    /// A failure of tollgate's own; its cause was logged where it happened.
    Internal,
}

/// Which limit a throttled request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// One of the account's throttles (requests or tokens per minute, concurrency).
    Account(Throttle),
    /// One of the key's own throttles, set tighter than the account's.
    Key(Throttle),
    /// Too many failed key checks from the client's address.
    FailedAuthentication,
    /// The key's `count_tokens` calls per minute.
    CountTokens,
    /// The key's request bodies being uploaded at once (`server.max_uploads_per_key`).
    UploadsInProgress,
}

/// The class of a failure, independent of any wire format's spelling of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Billing,
    Permission,
    NotFound,
    RequestTooLarge,
    RateLimit,
    Api,
    Timeout,
    Overloaded,
}

impl ErrorKind {
    /// The kind an HTTP status stands for, for bodies that did not say (an upstream's HTML
    /// error page).
    pub fn of_status(status: StatusCode) -> ErrorKind {
        match status.as_u16() {
            400 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            402 => ErrorKind::Billing,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimit,
            504 => ErrorKind::Timeout,
            529 => ErrorKind::Overloaded,
            _ => ErrorKind::Api,
        }
    }

    /// The kind Anthropic's `error.type` names, if it is one of its types.
    pub fn of_type(error_type: &str) -> Option<ErrorKind> {
        Some(match error_type {
            "invalid_request_error" => ErrorKind::InvalidRequest,
            "authentication_error" => ErrorKind::Authentication,
            "billing_error" => ErrorKind::Billing,
            "permission_error" => ErrorKind::Permission,
            "not_found_error" => ErrorKind::NotFound,
            "request_too_large" => ErrorKind::RequestTooLarge,
            "rate_limit_error" => ErrorKind::RateLimit,
            "api_error" => ErrorKind::Api,
            "timeout_error" => ErrorKind::Timeout,
            "overloaded_error" => ErrorKind::Overloaded,
            _ => return None,
        })
    }
}

/// What a client is told about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Retrying cannot help (a bad key, an empty balance): `x-should-retry: false`.
    Never,
    /// Retry after this long: `retry-after`, in whole seconds rounded up.
    After(Duration),
    /// Nothing is said.
    Unspecified,
}

/// How a failure is answered, before any wire format renders it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub retry: Retry,
}

/// `retry-after` when a throttle or overload gives no better figure.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The ledger takes a few flush attempts to come back; retrying sooner only adds load.
const LEDGER_RETRY_AFTER: Duration = Duration::from_secs(5);

impl ProxyError {
    /// The one mapping from a failure to its status, kind and retry advice.
    pub fn failure(&self) -> Failure {
        use ErrorKind as K;
        let (status, kind, retry) = match self {
            ProxyError::InvalidKey | ProxyError::KeyExpired => {
                (401, K::Authentication, Retry::Never)
            }
            ProxyError::AddressNotAllowed | ProxyError::ModelNotAllowed { .. } => {
                (403, K::Permission, Retry::Never)
            }
            ProxyError::InsufficientBalance { .. }
            | ProxyError::NothingAvailable
            | ProxyError::SpendCapReached { .. } => (402, K::Billing, Retry::Never),
            ProxyError::Suspended => (403, K::Permission, Retry::Never),
            ProxyError::Throttled { retry_after, .. } => {
                (429, K::RateLimit, Retry::After(*retry_after))
            }
            ProxyError::BadRequest { .. }
            | ProxyError::UnknownModel { .. }
            | ProxyError::NoPriceInForce { .. } => (400, K::InvalidRequest, Retry::Unspecified),
            ProxyError::BodyTooLarge { .. } => (413, K::RequestTooLarge, Retry::Unspecified),
            ProxyError::BodyReadTimeout { .. } => (408, K::Timeout, Retry::Unspecified),
            ProxyError::NotFound { .. } => (404, K::NotFound, Retry::Unspecified),
            ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamTimedOut
            | ProxyError::UpstreamRefusedCredentials { .. }
            | ProxyError::UpstreamCut
            | ProxyError::UpstreamNotAMessage
            | ProxyError::UpstreamTooLarge { .. } => (502, K::Api, Retry::Unspecified),
            ProxyError::Overloaded | ProxyError::ShuttingDown => {
                (529, K::Overloaded, Retry::After(DEFAULT_RETRY_AFTER))
            }
            ProxyError::LedgerUnavailable | ProxyError::JournalUnavailable => {
                (529, K::Overloaded, Retry::After(LEDGER_RETRY_AFTER))
            }
            ProxyError::Internal => (500, K::Api, Retry::Unspecified),
        };
        Failure {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind,
            retry,
        }
    }

    /// What the client reads: what happened and, where it helps, what to do.
    pub fn message(&self) -> String {
        match self {
            ProxyError::InvalidKey => "invalid x-api-key".into(),
            ProxyError::KeyExpired => "this API key has expired".into(),
            ProxyError::AddressNotAllowed => {
                "this API key may not be used from this address (see its allowed_ips)".into()
            }
            ProxyError::ModelNotAllowed { model } => {
                format!("model: this API key may not use {model} (see its models allowlist)")
            }
            ProxyError::Suspended => "this account is suspended".into(),
            ProxyError::InsufficientBalance {
                required,
                available,
            } => format!(
                "insufficient balance: this request reserves up to {} USD (its prompt estimate plus max_tokens of output) and {} USD is available; lower max_tokens or recharge",
                required.normalize(),
                available.normalize()
            ),
            ProxyError::SpendCapReached {
                cap,
                limit,
                required,
                available,
            } => format!(
                "this API key's spend cap {} of {} USD is reached: this request reserves up to {} USD and {} USD is left under the cap; lower max_tokens or raise the cap",
                cap.as_str(),
                limit.normalize(),
                required.normalize(),
                available.normalize()
            ),
            ProxyError::NothingAvailable => {
                "insufficient balance: nothing is available to spend on this account (its balance is used up, or held by requests in progress); recharge".into()
            }
            ProxyError::Throttled { limit, .. } => match limit {
                Limit::Account(which) => {
                    format!("rate limit exceeded: {} for this account", which.as_str())
                }
                Limit::Key(which) => {
                    format!("rate limit exceeded: {} for this API key", which.as_str())
                }
                Limit::FailedAuthentication => {
                    "too many failed authentication attempts from this address".into()
                }
                Limit::CountTokens => "rate limit exceeded: count_tokens calls for this key".into(),
                Limit::UploadsInProgress => {
                    "rate limit exceeded: too many request bodies uploading at once for this key"
                        .into()
                }
            },
            ProxyError::BadRequest {
                field: Some(field),
                problem,
            } => format!("{field}: {problem}"),
            ProxyError::BadRequest {
                field: None,
                problem,
            } => problem.clone(),
            ProxyError::BodyTooLarge { limit } => {
                format!("request body is larger than the {limit}-byte limit")
            }
            ProxyError::BodyReadTimeout { deadline } => format!(
                "the request body was not received within {} seconds",
                deadline.as_secs_f64()
            ),
            ProxyError::UnknownModel { model } => {
                format!("model: {model} is not a model this service offers")
            }
            ProxyError::NoPriceInForce { model } => format!("model: {model} has no price in force"),
            ProxyError::NotFound { what } => what.clone(),
            ProxyError::UpstreamUnreachable => {
                "the upstream provider could not be reached (connection failed)".into()
            }
            ProxyError::UpstreamTimedOut => {
                "the upstream provider could not be reached (timed out)".into()
            }
            ProxyError::UpstreamRefusedCredentials { status } => format!(
                "the upstream provider refused this service's request (HTTP {status}); the operator must check the upstream account"
            ),
            ProxyError::UpstreamCut => "the upstream provider's response was cut".into(),
            ProxyError::UpstreamNotAMessage => {
                "the upstream provider's response was not a message".into()
            }
            ProxyError::UpstreamTooLarge { limit } => format!(
                "the upstream provider's response was larger than the {limit} bytes tollgate reads"
            ),
            ProxyError::Overloaded => "tollgate is overloaded; retry shortly".into(),
            ProxyError::LedgerUnavailable => {
                "the billing ledger is temporarily unavailable; retry shortly".into()
            }
            ProxyError::JournalUnavailable => {
                "usage cannot be recorded right now (tollgate's usage journal cannot be written); retry shortly".into()
            }
            ProxyError::ShuttingDown => "tollgate is shutting down; retry".into(),
            ProxyError::Internal => "internal error".into(),
        }
    }

    /// A malformed request blamed on one field.
    pub fn field(field: &'static str, problem: impl Into<String>) -> ProxyError {
        ProxyError::BadRequest {
            field: Some(field),
            problem: problem.into(),
        }
    }

    /// A malformed request as a whole (a body that is not JSON).
    pub fn bad_request(problem: impl Into<String>) -> ProxyError {
        ProxyError::BadRequest {
            field: None,
            problem: problem.into(),
        }
    }
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> ProxyError {
        match refusal {
            Refusal::Suspended => ProxyError::Suspended,
            Refusal::NothingAvailable => ProxyError::NothingAvailable,
            Refusal::InsufficientBalance {
                required,
                available,
            } => ProxyError::InsufficientBalance {
                required,
                available,
            },
            Refusal::SpendCapReached {
                cap,
                limit,
                required,
                available,
            } => ProxyError::SpendCapReached {
                cap,
                limit,
                required,
                available,
            },
            Refusal::Throttled { which, retry_after } => ProxyError::Throttled {
                limit: Limit::Account(which),
                retry_after,
            },
            Refusal::KeyThrottled { which, retry_after } => ProxyError::Throttled {
                limit: Limit::Key(which),
                retry_after,
            },
        }
    }
}

impl ProxyError {
    /// The engine's failure to admit request `rid`, or to show its account. A store failure is
    /// logged here, with the request id, since the client is told only "internal error".
    pub fn engine(error: impl Into<AdmitError>, rid: RequestId) -> ProxyError {
        match error.into() {
            AdmitError::Refused(refusal) => refusal.into(),
            // The key was found but its account was not: as good as an unknown key.
            AdmitError::Engine(EngineError::AccountNotFound) => ProxyError::InvalidKey,
            AdmitError::Engine(EngineError::Overloaded | EngineError::Stopped) => {
                ProxyError::Overloaded
            }
            AdmitError::Engine(EngineError::LedgerUnavailable) => ProxyError::LedgerUnavailable,
            AdmitError::Engine(EngineError::JournalUnavailable(health)) => {
                // The journal's state changes are logged where they are watched (startup).
                tracing::debug!(%rid, ?health, "refused: the usage journal cannot be written");
                ProxyError::JournalUnavailable
            }
            AdmitError::Engine(EngineError::Store(error)) => {
                tracing::error!(%rid, %error, "account could not be loaded");
                ProxyError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_retrying_cannot_fix_say_so() {
        for error in [
            ProxyError::InvalidKey,
            ProxyError::Suspended,
            ProxyError::InsufficientBalance {
                required: Decimal::ONE,
                available: Decimal::ZERO,
            },
        ] {
            assert_eq!(error.failure().retry, Retry::Never, "{error:?}");
        }
    }

    #[test]
    fn throttles_and_overload_say_when_to_retry() {
        let throttled = ProxyError::Throttled {
            limit: Limit::Account(Throttle::Tokens),
            retry_after: Duration::from_millis(2500),
        };
        let failure = throttled.failure();
        assert_eq!(failure.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(failure.retry, Retry::After(Duration::from_millis(2500)));
        assert_eq!(
            throttled.message(),
            "rate limit exceeded: tokens per minute for this account"
        );
        assert_eq!(ProxyError::Overloaded.failure().status.as_u16(), 529);
        assert_eq!(
            ProxyError::LedgerUnavailable.failure().retry,
            Retry::After(LEDGER_RETRY_AFTER)
        );
    }

    #[test]
    fn upstream_failures_are_bad_gateways_that_name_no_customer_fault() {
        for error in [
            ProxyError::UpstreamUnreachable,
            ProxyError::UpstreamTimedOut,
            ProxyError::UpstreamRefusedCredentials { status: 401 },
            ProxyError::UpstreamCut,
            ProxyError::UpstreamTooLarge { limit: 1 },
        ] {
            let failure = error.failure();
            assert_eq!(failure.status, StatusCode::BAD_GATEWAY, "{error:?}");
            assert_eq!(failure.kind, ErrorKind::Api);
        }
    }

    #[test]
    fn engine_failures_map_to_what_the_client_can_act_on() {
        let rid = RequestId(uuid::Uuid::nil());
        assert!(matches!(
            ProxyError::engine(EngineError::AccountNotFound, rid),
            ProxyError::InvalidKey
        ));
        assert!(matches!(
            ProxyError::engine(EngineError::Stopped, rid),
            ProxyError::Overloaded
        ));
        let store = EngineError::Store(tollgate_actors::store::StoreError("down".into()));
        assert!(matches!(
            ProxyError::engine(store, rid),
            ProxyError::Internal
        ));
        assert!(matches!(
            ProxyError::engine(AdmitError::Refused(Refusal::Suspended), rid),
            ProxyError::Suspended
        ));
    }

    #[test]
    fn a_field_error_names_its_field_first() {
        assert_eq!(
            ProxyError::field("max_tokens", "field required").message(),
            "max_tokens: field required"
        );
        assert_eq!(ProxyError::bad_request("oops").message(), "oops");
    }
}
