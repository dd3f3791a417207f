//! `POST /v1/messages/count_tokens`: forwarded, throttled per key, never billed. Like
//! `/v1/messages`, it is checked in before its body is read: a suspended account (403) or one
//! with nothing available (402) is answered at once, and the request is tracked for
//! shutdown; one still waiting on the upstream when shutdown's drain bound passes is answered
//! 529 then. It takes none of the account's concurrency slots
//! (docs/adr/0013-check-before-reading.md).

use actix_web::{web, HttpRequest, HttpResponse};
use governor::clock::{Clock, DefaultClock};
use tokio_util::sync::CancellationToken;
use tollgate_actors::probe::RequestProbe;

use super::exchange::{body_failed, relayed_headers, status_of, unreachable, Reply};
use super::messages::respond;
use crate::auth::KeyOwner;
use crate::http::error::{rewrite_upstream_error, AnthropicError, Limit, ProxyError};
use crate::http::request_id::RequestId;
use crate::http::AppState;
use crate::upstream::{
    forwarded_headers, Attempt, Endpoint, UpstreamPool, MAX_ERROR_BODY_BYTES,
    MAX_MESSAGE_BODY_BYTES,
};

/// `POST /v1/messages/count_tokens`
pub async fn count_tokens(
    owner: KeyOwner,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstreams: web::Data<UpstreamPool>,
    rid: RequestId,
) -> Result<HttpResponse, AnthropicError> {
    forward(owner, req, payload, &state, &upstreams, rid)
        .await
        .map_err(|e| e.at(rid))
}

/// A key with a model allowlist may count tokens only for its models, so the allowlist cannot
/// be probed through this unbilled route either. The body is parsed only for such a key; an
/// unparsable one is left for the upstream to refuse.
fn check_model_allowed(owner: &KeyOwner, body: &[u8]) -> Result<(), ProxyError> {
    if owner
        .policy
        .as_ref()
        .is_none_or(|policy| policy.models.is_none())
    {
        return Ok(());
    }
    let model = RequestProbe::read(body, &[])
        .ok()
        .and_then(|probe| probe.model)
        .unwrap_or_default();
    if owner.allows_model(&model) {
        Ok(())
    } else {
        Err(ProxyError::ModelNotAllowed {
            model: model.into_owned(),
        })
    }
}

async fn forward(
    owner: KeyOwner,
    req: HttpRequest,
    payload: web::Payload,
    state: &AppState,
    upstreams: &UpstreamPool,
    rid: RequestId,
) -> Result<HttpResponse, ProxyError> {
    // Held to the end: shutdown's drain waits for the answer.
    let _admission = state
        .engine
        .check_in_unbilled(owner.account_id)
        .await
        .map_err(|error| ProxyError::engine(error, rid))?;
    let upload = state.bodies.begin(owner.key_id, &req)?;
    // After the check-in and the body's declared size and upload slot, so that a call refused
    // for any of them spends none of the key's allowance; before the body is read, so that a
    // throttled key's bodies are not (docs/adr/0014-limiter-order.md).
    if let Some(limiter) = &state.count_tokens_limiter {
        limiter
            .check_key(&owner.key_id)
            .map_err(|not_until| ProxyError::Throttled {
                limit: Limit::CountTokens,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })?;
    }
    let body = upload.finish(payload).await?;
    check_model_allowed(&owner, &body)?;
    // count_tokens names a model too, but is not priced: any upstream that serves messages
    // serves it.
    let upstream = upstreams.pick("").ok_or(ProxyError::UpstreamUnreachable)?;
    let interrupt = state.engine.interrupted();
    let started = std::time::Instant::now();
    let sent = upstream.post(
        Endpoint::CountTokens,
        req.uri().query(),
        forwarded_headers(req.headers()),
        body,
    );
    let sent = unless_interrupted(&interrupt, sent).await?;
    let response = match sent {
        Ok(response) => {
            let (status, latency) = (response.status.as_u16(), started.elapsed());
            upstreams.report(upstream, Attempt::Answered { status, latency });
            response
        }
        Err(error) => {
            upstreams.report(upstream, Attempt::Failed);
            tracing::warn!(%rid, upstream = %upstream.name, %error, "upstream request failed");
            return Err(unreachable(&error));
        }
    };
    let status = status_of(response.status);
    let headers = relayed_headers(&response.headers);
    let limit = if status.is_success() {
        MAX_MESSAGE_BODY_BYTES
    } else {
        MAX_ERROR_BODY_BYTES
    };
    let body = unless_interrupted(&interrupt, response.bytes(limit))
        .await?
        .map_err(|error| body_failed(&error, rid, status))?;
    let body = if status.is_success() {
        body
    } else {
        rewrite_upstream_error(&body, status, rid, &upstreams.api_keys())?
    };
    respond(Reply::Full {
        status,
        headers,
        body,
    })
}

/// `work`, unless shutdown's drain bound passes first: then the call is answered 529 at once.
/// A count_tokens call is free and settles nothing, so abandoning it loses nothing, whereas
/// waiting for a hung upstream would keep the drain waiting out the whole interrupt grace.
async fn unless_interrupted<F: std::future::Future>(
    interrupt: &CancellationToken,
    work: F,
) -> Result<F::Output, ProxyError> {
    // The work first: an answer already there is taken without registering for the interrupt.
    tokio::select! {
        biased;
        output = work => Ok(output),
        () = interrupt.cancelled() => Err(ProxyError::ShuttingDown),
    }
}
