//! The upstream half of a Messages request: choose an upstream, forward, then relay the
//! stream or read the body, and settle the hold. It runs on a tracked task of its own, so that
//! a client going away does not stop tollgate from learning and billing what the upstream
//! produced, and a graceful shutdown waits for it.

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tollgate_actors::relay::{ClientChunk, Drain, RelayTask};
use tollgate_actors::sse::{report_from_message, usage_from_message};
use tollgate_actors::{HoldTicket, INTERRUPT_GRACE};
use tollgate_actors::{Outcome, UsageReport};

use super::metrics::record;
use crate::http::error::{rewrite_upstream_error, ProxyError};
use crate::http::request_id::RequestId;
use crate::upstream::{
    Attempt, Endpoint, UpstreamError, UpstreamPool, UpstreamResponse, MAX_ERROR_BODY_BYTES,
    MAX_MESSAGE_BODY_BYTES, RELAYED_RESPONSE_HEADERS,
};

/// What the upstream half hands back to the handler.
pub(super) enum Reply {
    Stream {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: mpsc::Receiver<ClientChunk>,
    },
    Full {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// tollgate's own answer: the upstream could not be asked, refused the operator's
    /// credentials, or shutdown came first.
    Failed(ProxyError),
}

/// Everything the upstream half needs, moved onto its task.
pub(super) struct Exchange {
    /// Shared, not copied: the worker's clients, routes and keys.
    pub upstreams: web::Data<UpstreamPool>,
    pub model: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub drain: Drain,
    pub rid: RequestId,
    /// Fired when shutdown's drain bound has passed.
    pub interrupt: CancellationToken,
}

/// After shutdown's interrupt, how long an upstream call under way may still take: a second
/// less than the engine waits for interrupted work, so that its settle (or its 529) comes
/// before the final flush.
const FINISH_AFTER_INTERRUPT: Duration = INTERRUPT_GRACE.saturating_sub(Duration::from_secs(1));

/// Shutdown's interrupt as one upstream call sees it, across its steps (headers, then body):
/// the grace after the interrupt is granted once, from when the interrupt is first seen, not
/// again for each step.
pub(super) struct Grace {
    interrupt: CancellationToken,
    /// Set when the interrupt is first seen: every step under way must end by then.
    finish_by: Option<tokio::time::Instant>,
}

impl Grace {
    pub(super) fn new(interrupt: CancellationToken) -> Grace {
        Grace {
            interrupt,
            finish_by: None,
        }
    }

    /// `work`, unless shutdown interrupts it and it does not finish within
    /// [`FINISH_AFTER_INTERRUPT`] of the interrupt. The upstream is already working on the
    /// request: abandoning it would answer 529 for work the upstream did, and bill none of it.
    pub(super) async fn unless_interrupted<F: std::future::Future>(
        &mut self,
        work: F,
    ) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        let finish_by = match self.finish_by {
            Some(finish_by) => finish_by,
            None => {
                tokio::select! {
                    biased;
                    output = &mut work => return Some(output),
                    _ = self.interrupt.cancelled() => {}
                }
                *self
                    .finish_by
                    .insert(tokio::time::Instant::now() + FINISH_AFTER_INTERRUPT)
            }
        };
        tokio::time::timeout_at(finish_by, work).await.ok()
    }
}

/// An upstream status in actix's type.
pub(super) fn status_of(upstream: http::StatusCode) -> StatusCode {
    StatusCode::from_u16(upstream.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
}

/// Upstream response headers worth relaying, converted to actix's types.
pub(super) fn relayed_headers(upstream: &http::HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut relayed = Vec::with_capacity(2);
    for name in RELAYED_RESPONSE_HEADERS {
        if let Some(value) = upstream.get(name) {
            if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                relayed.push((HeaderName::from_static(name), value));
            }
        }
    }
    relayed
}

/// The customer's view of an upstream that could not be asked.
pub(super) fn unreachable(error: &UpstreamError) -> ProxyError {
    if error.is_timeout() {
        ProxyError::UpstreamTimedOut
    } else {
        ProxyError::UpstreamUnreachable
    }
}

/// The customer's view of an upstream body that could not be read whole: cut, or over the
/// limit tollgate reads. Logged here, with the request id.
pub(super) fn body_failed(error: &UpstreamError, rid: RequestId, status: StatusCode) -> ProxyError {
    let status = status.as_u16();
    match error {
        UpstreamError::TooLarge(limit) => {
            tracing::warn!(%rid, status, limit, "upstream response body over the limit; answered 502");
            ProxyError::UpstreamTooLarge { limit: *limit }
        }
        _ => {
            tracing::warn!(%rid, status, %error, "upstream response body failed");
            ProxyError::UpstreamCut
        }
    }
}

impl Exchange {
    /// Runs the request's upstream half to its end. The ticket is held here, across every
    /// step, so that whatever happens upstream the hold is settled or released exactly once.
    pub(super) async fn run(mut self, ticket: HoldTicket, reply: oneshot::Sender<Reply>) {
        let mut grace = Grace::new(self.interrupt.clone());
        // Until the upstream answers, nothing has been seen that could be billed: an upstream
        // that does not answer within shutdown's grace after the interrupt releases the hold
        // and is answered 529.
        let response = match self.forward(&mut grace).await {
            Ok(response) => response,
            Err(error) => {
                ticket.release();
                let _ = reply.send(Reply::Failed(error));
                return;
            }
        };
        if !response.status.is_success() {
            self.answer_upstream_error(response, ticket, reply, grace)
                .await;
        } else if response.is_event_stream() && self.interrupt.is_cancelled() {
            // A stream that only began after shutdown's interrupt would be cut at once; the
            // client is better told to retry elsewhere.
            ticket.release();
            let _ = reply.send(Reply::Failed(ProxyError::ShuttingDown));
        } else if response.is_event_stream() {
            // Meter what the upstream sent, not what was asked for: an event stream is
            // relayed and parsed as one, a JSON answer to a streaming request as a message.
            self.relay(response, ticket, reply).await;
        } else {
            self.read_message(response, ticket, reply, grace).await;
        }
    }

    /// Picks an upstream and sends the request, reporting how the attempt went. The headers
    /// and body are moved into the one attempt made today, not copied; a retry policy that
    /// makes several must keep them.
    async fn forward(&mut self, grace: &mut Grace) -> Result<UpstreamResponse, ProxyError> {
        let upstream = self.upstreams.pick(&self.model).ok_or_else(|| {
            tracing::error!(rid = %self.rid, model = %self.model, "no upstream can take this model");
            ProxyError::UpstreamUnreachable
        })?;
        let started = Instant::now();
        let sent = upstream.post(
            Endpoint::Messages,
            self.query.as_deref(),
            std::mem::take(&mut self.headers),
            std::mem::take(&mut self.body),
        );
        match grace.unless_interrupted(sent).await {
            None => Err(ProxyError::ShuttingDown),
            Some(Ok(response)) => {
                let latency = started.elapsed();
                let status = response.status.as_u16();
                if matches!(status, 401..=403) {
                    tracing::error!(rid = %self.rid, upstream = %upstream.name, status, "the upstream refused tollgate's credentials or account");
                }
                self.upstreams
                    .report(upstream, Attempt::Answered { status, latency });
                Ok(response)
            }
            Some(Err(error)) => {
                self.upstreams.report(upstream, Attempt::Failed);
                tracing::warn!(rid = %self.rid, upstream = %upstream.name, %error, "upstream request failed");
                Err(unreachable(&error))
            }
        }
    }

    /// An upstream error: billed only for usage it reported (normally none), answered with its
    /// status and our request id, except that a refusal of the operator's credentials is not
    /// passed off as the customer's.
    async fn answer_upstream_error(
        self,
        response: UpstreamResponse,
        ticket: HoldTicket,
        reply: oneshot::Sender<Reply>,
        mut grace: Grace,
    ) {
        let status = status_of(response.status);
        let mut headers = relayed_headers(&response.headers);
        let read = response.bytes(MAX_ERROR_BODY_BYTES);
        let Some(body) = grace.unless_interrupted(read).await else {
            let _ = reply.send(Reply::Failed(ProxyError::ShuttingDown));
            return;
        };
        let body = match body {
            Ok(body) => body,
            Err(error @ UpstreamError::TooLarge(_)) => {
                ticket.release();
                let _ = reply.send(Reply::Failed(body_failed(&error, self.rid, status)));
                return;
            }
            // A cut error body still has its status to answer with.
            Err(error) => {
                tracing::warn!(rid = %self.rid, %error, "upstream error body failed");
                Bytes::new()
            }
        };
        match usage_from_message(&body).filter(|usage| !usage.is_zero()) {
            Some(usage) => {
                let (settlement, durability) =
                    ticket.settle_durably(UsageReport::reported(usage), Outcome::UpstreamCut);
                record(&settlement);
                durability.wait().await;
            }
            None => ticket.release(),
        }
        // The upstream's message is replaced by tollgate's, and an upstream refusal of the
        // operator's key or account is not passed off as the customer's (ADR 0015).
        let keys = self.upstreams.api_keys();
        let body = match rewrite_upstream_error(&body, status, self.rid, &keys) {
            Ok(body) => body,
            Err(ours) => {
                let _ = reply.send(Reply::Failed(ours));
                return;
            }
        };
        headers.retain(|(name, _)| name != "content-type");
        headers.push((
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ));
        let _ = reply.send(Reply::Full {
            status,
            headers,
            body,
        });
    }

    /// An event stream: relayed chunk by chunk while its usage is read; settled at its end.
    async fn relay(
        self,
        response: UpstreamResponse,
        ticket: HoldTicket,
        reply: oneshot::Sender<Reply>,
    ) {
        let status = status_of(response.status);
        let headers = relayed_headers(&response.headers);
        let (relay, body) = RelayTask::new(
            response.into_stream(),
            ticket,
            self.drain,
            self.interrupt,
            self.upstreams.error_words(),
        );
        // If the client is already gone, the relay finds out on its first send and drains.
        let _ = reply.send(Reply::Stream {
            status,
            headers,
            body,
        });
        if let Some(settlement) = relay.run().await {
            record(&settlement);
        }
    }

    /// A whole message: read, handed to the client, then settled at the usage it reports.
    async fn read_message(
        self,
        response: UpstreamResponse,
        ticket: HoldTicket,
        reply: oneshot::Sender<Reply>,
        mut grace: Grace,
    ) {
        let status = status_of(response.status);
        let headers = relayed_headers(&response.headers);
        let read = response.bytes(MAX_MESSAGE_BODY_BYTES);
        let Some(read) = grace.unless_interrupted(read).await else {
            let _ = reply.send(Reply::Failed(ProxyError::ShuttingDown));
            return;
        };
        let body = match read {
            Ok(body) => body,
            Err(error) => {
                ticket.release();
                let _ = reply.send(Reply::Failed(body_failed(&error, self.rid, status)));
                return;
            }
        };
        let Some(report) = report_from_message(&body) else {
            // A 2xx that is not a Message is no answer: nothing to bill, nothing to relay.
            tracing::warn!(rid = %self.rid, status = status.as_u16(), "upstream success body is not a Message; answered 502");
            ticket.release();
            let _ = reply.send(Reply::Failed(ProxyError::UpstreamNotAMessage));
            return;
        };
        // Settled first, and the body held until the journal has the settle, so that an
        // answer the client got is billed even if the process dies now (ADR 0019). Whether
        // the client is still there is known from its side of the channel.
        let outcome = if reply.is_closed() {
            Outcome::ClientDisconnected
        } else {
            Outcome::Completed
        };
        // An answer without usage is billed from the hold's estimate, as an upstream fault
        // (the ticket logs it; `record` counts it).
        let (settlement, durability) = ticket.settle_durably(report, outcome);
        record(&settlement);
        durability.wait().await;
        let _ = reply.send(Reply::Full {
            status,
            headers,
            body,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_grace_after_an_interrupt_is_granted_once_across_steps() {
        let interrupt = CancellationToken::new();
        let mut grace = Grace::new(interrupt.clone());
        let started = tokio::time::Instant::now();
        interrupt.cancel();
        // The headers come within the grace; the body, slower, would take it past.
        let headers = grace
            .unless_interrupted(tokio::time::sleep(
                FINISH_AFTER_INTERRUPT - Duration::from_secs(1),
            ))
            .await;
        assert!(headers.is_some());
        let body = grace
            .unless_interrupted(tokio::time::sleep(Duration::from_secs(2)))
            .await;
        assert!(body.is_none(), "the body got a second grace");
        assert!(started.elapsed() < FINISH_AFTER_INTERRUPT + Duration::from_millis(500));
    }
}
