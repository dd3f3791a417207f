//! Who is calling, checked once per surface rather than in every handler: the [`KeyOwner`]
//! extractor for the Anthropic-compatible routes, and [`require_admin`] middleware for the
//! admin scope.

use std::future::{ready, Ready};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, ResponseError};
use sha2::{Digest, Sha256};

use super::error::{AnthropicError, ApiError, Limit, ProxyError};
use super::forwarded::{client_address, Client, TrustedProxy};
use super::request_id::RequestId;
use super::AppState;
use crate::accounts::TokenHash;
use crate::auth::{AccessRefusal, AuthFailure, KeyOwner};

/// A customer's live login session, from `Authorization: Bearer <session token>`. Only
/// session tokens are looked up: an API key, the admin token or anything else is an unknown
/// session and gets 401, as an expired or revoked one does.
#[derive(Debug, Clone)]
pub struct Session {
    pub account_id: uuid::Uuid,
    /// The hash of the token presented, to revoke it or to spare it when others are revoked.
    pub token_hash: TokenHash,
}

const NO_SESSION: &str =
    "a valid session token is required (Authorization: Bearer <token from /api/v1/auth/login>)";

impl FromRequest for Session {
    type Error = ApiError;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Session, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = bearer_token(req.headers())
            .filter(|token| {
                token.starts_with(crate::accounts::SESSION_PREFIX) && token.len() <= 128
            })
            .map(TokenHash::of);
        let client = state
            .as_ref()
            .map(|state| client_ip(req, &state.settings.server.trusted_proxies));
        Box::pin(async move {
            let Some(state) = state else {
                return Err(ApiError::internal("the application state is missing"));
            };
            let found = match &presented {
                Some(hash) => state
                    .store
                    .session_account(hash)
                    .await
                    .map_err(ApiError::internal)?,
                None => None,
            };
            match (found, presented) {
                (Some(account_id), Some(token_hash)) => Ok(Session {
                    account_id,
                    token_hash,
                }),
                _ => {
                    // Guesses at sessions count against the address as guesses at keys do.
                    let client = client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    match state.keys.count_failure(client) {
                        AuthFailure::TooManyFailures(retry_after) => {
                            Err(ApiError::TooManyFailures { retry_after })
                        }
                        AuthFailure::InvalidKey => Err(ApiError::Unauthorized(NO_SESSION)),
                    }
                }
            }
        })
    }
}

/// The API key from `x-api-key` or `Authorization: Bearer`.
fn presented_key(req: &HttpRequest) -> Option<&str> {
    if let Some(key) = req.headers().get("x-api-key") {
        return key.to_str().ok().map(str::trim);
    }
    bearer_token(req.headers())
}

/// The token of an `Authorization: Bearer` header (the scheme in any case).
pub(super) fn bearer_token(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the peer's, or the one a trusted proxy forwarded
/// (`server.trusted_proxies`, [`client_address`]).
pub(super) fn client_addr(req: &HttpRequest, trusted: &[TrustedProxy]) -> Option<Client> {
    let peer = req.peer_addr()?.ip();
    Some(client_address(peer, req.headers(), trusted))
}

/// The address failed authentications are counted against.
pub(super) fn client_ip(req: &HttpRequest, trusted: &[TrustedProxy]) -> IpAddr {
    bucket_of(client_addr(req, trusted).map(|client| client.ip))
}

fn bucket_of(client: Option<IpAddr>) -> IpAddr {
    client
        .map(limiter_bucket)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The address as the per-address limiter buckets it. An IPv6 host is routinely given a whole
/// /64, so counting each of its addresses apart would hand one client 2^64 allowances; its
/// failures count against the /64. An IPv4 address mapped into IPv6 counts as itself.
fn limiter_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// A valid API key's owner. Extracting it authenticates the request; put it before any
/// extractor that reads the body, so that a bad key is refused before the body is read.
impl FromRequest for KeyOwner {
    type Error = AnthropicError;
    type Future = Ready<Result<KeyOwner, AnthropicError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let rid = RequestId::of(req);
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            tracing::error!(%rid, "the application state is missing");
            return ready(Err(ProxyError::Internal.at(rid)));
        };
        // The address the failure limiter counts against, before it is bucketed, is the one
        // a key's allowlist judges.
        let client = client_addr(req, &state.settings.server.trusted_proxies).map(|c| c.ip);
        let owner = state
            .keys
            .authenticate(presented_key(req), bucket_of(client))
            .map_err(|failure| match failure {
                AuthFailure::InvalidKey => ProxyError::InvalidKey,
                AuthFailure::TooManyFailures(retry_after) => ProxyError::Throttled {
                    limit: Limit::FailedAuthentication,
                    retry_after,
                },
            })
            .and_then(|owner| {
                owner.check_access(chrono::Utc::now(), client).map_err(
                    |refusal| match refusal {
                        AccessRefusal::Expired => ProxyError::KeyExpired,
                        AccessRefusal::Address => ProxyError::AddressNotAllowed,
                    },
                )?;
                Ok(owner)
            });
        ready(owner.map_err(|error| error.at(rid)))
    }
}

/// Whether a presented secret equals the expected one. Both sides are hashed first, so the
/// comparison takes the same time wherever they differ.
pub(super) fn tokens_match(presented: &str, expected: &str) -> bool {
    Sha256::digest(presented.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// Checks the admin bearer token. Both sides are hashed first, so the comparison takes the
/// same time wherever the tokens differ.
fn authorize_admin(req: &HttpRequest, expected: &str) -> Result<(), ApiError> {
    if expected.is_empty() {
        return Err(ApiError::Unavailable(
            "the admin API is disabled: admin.token is empty".into(),
        ));
    }
    let presented = bearer_token(req.headers()).unwrap_or("");
    if tokens_match(presented, expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "a valid admin bearer token is required",
        ))
    }
}

/// Middleware of the admin scope: a request without the admin token is answered before it
/// reaches a handler, so nothing of its body is read.
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => {
            authorize_admin(req.request(), &state.settings.admin.token).map_err(|error| match error
            {
                // A wrong token counts against the address as a wrong API key does, so that
                // the token cannot be guessed at the server's full speed.
                ApiError::Unauthorized(_) => {
                    let client = client_ip(req.request(), &state.settings.server.trusted_proxies);
                    match state.keys.count_failure(client) {
                        AuthFailure::TooManyFailures(retry_after) => {
                            ApiError::TooManyFailures { retry_after }
                        }
                        AuthFailure::InvalidKey => error,
                    }
                }
                other => other,
            })
        }
        None => Err(ApiError::internal("the application state is missing")),
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(error) => Ok(req
            .into_response(error.error_response())
            .map_into_right_body()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(ip: &str) -> String {
        limiter_bucket(ip.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_failures_count_per_64_and_ipv4_per_address() {
        assert_eq!(bucket("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(bucket("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(bucket("2001:db8:1:3::1"), bucket("2001:db8:1:2::1"));
        assert_eq!(bucket("203.0.113.7"), "203.0.113.7");
        assert_eq!(bucket("::ffff:203.0.113.7"), "203.0.113.7");
        assert_ne!(bucket("203.0.113.7"), bucket("203.0.113.8"));
    }
}
