//! Errors, one type per surface. `/v1/*` fails with a [`ProxyError`], mapped once to a status
//! and retry advice ([`ProxyError::failure`]) and rendered in Anthropic's shape
//! ([`AnthropicError`]). The admin API (and later the customer API) fails with an
//! [`ApiError`], `{"error":{"code","message","field"?}}`. An upstream's error answer is
//! reworded in tollgate's own terms before the customer sees it ([`rewrite_upstream_error`]).

mod anthropic;
mod api;
mod proxy;
mod upstream;

pub use anthropic::{error_type, retry_after_secs, AnthropicError};
pub use api::{payload_too_large, ApiError, ErrorBody, ErrorDetail};
pub use proxy::{ErrorKind, Failure, Limit, ProxyError, Retry};
pub use upstream::{rewrite_stream_error, rewrite_upstream_error};
