//! `POST /v1/messages`, the billed route. The handler reads as the request's life: the key
//! was authenticated (and its expiry and address allowlist checked) by the [`KeyOwner`]
//! extractor; then check in (before the body is read), read, parse and price, check the key's
//! model allowlist, take the hold (under the balance and the key's spend caps), and hand the
//! upstream half to a tracked task (`Exchange`) whose first reply is answered.

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_actors::hold::RequestShape;
use tollgate_actors::{Admission, Engine, HoldRequest, HoldTicket, SpendCaps};
use tracing::Instrument;

use super::exchange::{Exchange, Reply};
use super::request::{parse_and_price, Priced};
use crate::auth::KeyOwner;
use crate::http::error::{AnthropicError, ProxyError};
use crate::http::request_id::RequestId;
use crate::http::AppState;
use crate::upstream::{forwarded_headers, UpstreamPool};

/// `POST /v1/messages`
pub async fn messages(
    owner: KeyOwner,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    upstreams: web::Data<UpstreamPool>,
    rid: RequestId,
) -> Result<HttpResponse, AnthropicError> {
    let admission = check_in(&state.engine, &owner, rid)
        .await
        .map_err(|e| e.at(rid))?;
    let body = state
        .bodies
        .read(owner.key_id, &req, payload)
        .await
        .map_err(|e| e.at(rid))?;
    state
        .price_options
        .check_headers(req.headers())
        .map_err(|e| e.at(rid))?;
    let priced = parse_and_price(&state.card, &state.price_options, req.headers(), &body)
        .map_err(|e| e.at(rid))?;
    if !owner.allows_model(&priced.model) {
        return Err(ProxyError::ModelNotAllowed {
            model: priced.model,
        }
        .at(rid));
    }
    let shape = state.engine.hold_policy().shape(
        body.len(),
        priced.max_tokens,
        priced.media,
        &priced.server_tools,
    );
    let model = priced.model.clone();
    let span = tracing::debug_span!("messages", %rid, account_id = %owner.account_id);
    let ticket = admit(admission, owner, priced, shape, rid)
        .await
        .map_err(|e| e.at(rid))?;
    let exchange = Exchange {
        upstreams: upstreams.clone(),
        model,
        query: req.uri().query().map(str::to_string),
        headers: forwarded_headers(req.headers()),
        body,
        drain: state.stream_drain,
        rid,
        interrupt: state.engine.interrupted(),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    state
        .engine
        .spawn_tracked(exchange.run(ticket, reply_tx).instrument(span));
    let reply = reply_rx.await.map_err(|_| {
        tracing::error!(%rid, "the upstream exchange ended without a reply");
        ProxyError::Internal.at(rid)
    })?;
    respond(reply).map_err(|e| e.at(rid))
}

/// Lets the request in before its body is read: a suspended account (403), one with nothing
/// available (402) or with every concurrency slot taken (429) is answered at once, and the
/// request is tracked for shutdown from here on (docs/adr/0013-check-before-reading.md).
async fn check_in(
    engine: &Engine,
    owner: &KeyOwner,
    rid: RequestId,
) -> Result<Admission, ProxyError> {
    engine
        .check_in(owner.account_id)
        .await
        .map_err(|error| ProxyError::engine(error, rid))
}

/// Asks the account's actor for a hold that covers the request's worst case.
async fn admit(
    admission: Admission,
    owner: KeyOwner,
    priced: Priced,
    shape: RequestShape,
    rid: RequestId,
) -> Result<HoldTicket, ProxyError> {
    let request = HoldRequest {
        request_id: rid.0,
        account_id: owner.account_id,
        key_id: owner.key_id,
        model: priced.model,
        version: priced.version,
        shape,
        started_at: priced.started_at,
        spend_caps: owner
            .policy
            .as_ref()
            .and_then(|policy| SpendCaps::of(policy.daily_spend_usd, policy.total_spend_usd)),
        key_limits: owner.policy.as_ref().and_then(|policy| policy.limits()),
    };
    admission
        .pre_authorize(request)
        .await
        .map_err(|error| ProxyError::engine(error, rid))
}

/// The client's response: tollgate's own error, a whole body, or the relayed stream.
pub(super) fn respond(reply: Reply) -> Result<HttpResponse, ProxyError> {
    match reply {
        Reply::Failed(error) => Err(error),
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
