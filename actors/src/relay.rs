//! The relay task: one per streaming request in flight. It relays the upstream's SSE bytes to
//! the client as they arrive (but for its error events, replaced by tollgate's own:
//! [`crate::sse::WholeEvents`]), reads usage from a view of the same bytes, and settles the
//! hold when the upstream is done.
//!
//! It is a plain task that owns its state, not an actor: relaying needs to `await` the
//! client's channel between chunks (that is the backpressure from a slow client), and an actix
//! handler cannot await without blocking its context. Its only messages go to the account
//! actor (resize, settle, release), through the [`HoldTicket`]. The caller runs it on a
//! tracked task ([`crate::Engine::spawn_tracked`]), so that shutdown waits for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::{HoldTicket, Resize, Settlement};
use crate::ledger::Outcome;
use crate::sse::WholeEvents;

/// Chunks waiting for a slow client, per stream. Small: SSE chunks are small and the point is
/// to relay, not to buffer.
pub const CLIENT_BUFFER_CHUNKS: usize = 16;

/// After `message_stop`, how long to wait for the upstream to end the body before giving up
/// on it (the usage is final either way).
pub const AFTER_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A client that accepts no bytes for this long is treated as gone: the relay drains the
/// upstream and settles instead of holding the hold, the concurrency slot and the upstream
/// connection for a reader that never reads.
pub const CLIENT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a stream is still read after its client went away, to learn what it produced.
///
/// The drain follows the upstream for as long as it keeps sending: it ends when the upstream
/// ends the stream, when the upstream falls silent for its idle timeout (`timeout_secs`, which
/// cuts the stream), or when the stream has run `max_stream` in all. Whatever it has not
/// learned by then is estimated from the output relayed ([`crate::bill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// The longest a stream may run, from its start, once no client reads it
    /// (`metering.max_stream_ms`).
    pub max_stream: Duration,
    /// The least time a drain is given after the client went away, even past `max_stream`
    /// (`metering.stream_drain_ms`): a client that leaves late still lets the usage arrive.
    pub at_least: Duration,
}

impl Drain {
    /// When the drain of a stream that started at `started` ends, if its client left `now`.
    ///
    /// A bound too far off for the clock to count to (an absurd setting) stands for "no
    /// bound": a far-off deadline, never a panic.
    fn deadline(&self, started: Instant, now: Instant) -> Instant {
        let far_off = || now + FAR_OFF;
        let by_max = started.checked_add(self.max_stream).unwrap_or_else(far_off);
        let by_least = now.checked_add(self.at_least).unwrap_or_else(far_off);
        by_max.max(by_least)
    }
}

/// A deadline no stream reaches (about 30 years), for bounds beyond what the clock can add.
const FAR_OFF: Duration = Duration::from_secs(86_400 * 365 * 30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drain_bound_beyond_the_clock_is_far_off_not_a_panic() {
        let now = Instant::now();
        let huge = Drain {
            max_stream: Duration::MAX,
            at_least: Duration::MAX,
        };
        assert!(huge.deadline(now, now) >= now + FAR_OFF);
        let usual = Drain {
            max_stream: Duration::from_secs(10),
            at_least: Duration::from_secs(1),
        };
        assert_eq!(usual.deadline(now, now), now + Duration::from_secs(10));
    }
}

/// The upstream connection failed after the response had started; the client's connection is
/// cut the same way, so it sees what the upstream did.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream stream was cut: {0}")]
pub struct StreamCut(pub String);

/// What the client's response body receives.
pub type ClientChunk = Result<Bytes, StreamCut>;

/// Words the event that takes the place of an upstream's `error` event, from its data and the
/// request's id (docs/adr/0015-upstream-error-messages-rewritten.md). The upstream's message
/// can describe the operator's upstream account; it never reaches the client.
pub type ErrorWords = Arc<dyn Fn(&[u8], Uuid) -> Bytes + Send + Sync>;

/// Relays one upstream stream to one client, then settles its hold. Run it with
/// [`RelayTask::run`].
pub struct RelayTask<S> {
    upstream: S,
    /// The client's response body; `None` once the client has everything (or is gone).
    client: Option<mpsc::Sender<ClientChunk>>,
    /// `None` once settled or released.
    ticket: Option<HoldTicket>,
    request_id: Uuid,
    /// The stream's usage, and the bytes of an event in progress not yet relayed.
    events: WholeEvents,
    /// Words the replacement of an upstream error event.
    error_words: ErrorWords,
    /// How long to keep reading the upstream after the client went away, to learn the usage.
    drain: Drain,
    /// Fired by a shutdown whose drain bound has passed.
    interrupt: CancellationToken,
}

impl<S, E> RelayTask<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    E: std::fmt::Display,
{
    /// A relay task and the receiving end its client's response body reads from.
    pub fn new(
        upstream: S,
        ticket: HoldTicket,
        drain: Drain,
        interrupt: CancellationToken,
        error_words: ErrorWords,
    ) -> (RelayTask<S>, mpsc::Receiver<ClientChunk>) {
        let (client, body) = mpsc::channel(CLIENT_BUFFER_CHUNKS);
        (
            RelayTask {
                upstream,
                client: Some(client),
                request_id: ticket.request_id(),
                ticket: Some(ticket),
                events: WholeEvents::new(),
                error_words,
                drain,
                interrupt,
            },
            body,
        )
    }

    /// Relays until the upstream ends, then settles. Returns the settlement, or `None` if the
    /// stream produced nothing at all (no usage, no output, no message) and the hold was
    /// released.
    ///
    /// The client's last bytes wait for the settle to be durable in the journal
    /// (docs/adr/0019-write-ahead-journal.md): a stream that completes is settled as soon as
    /// its `message_stop` arrives, before the chunk that carries it is relayed; any other is
    /// settled before its end (or its cut) reaches the client.
    pub async fn run(mut self) -> Option<Settlement> {
        let request_id = self.request_id;
        let started = Instant::now();
        // Set when the client goes away: from then on the upstream is read only to learn the
        // final usage, until this deadline.
        let mut drain_deadline: Option<Instant> = None;
        // Set at message_stop: the upstream's end of body normally follows at once, and reading
        // it lets the upstream connection be reused.
        let mut finish_deadline: Option<Instant> = None;
        let mut cut: Option<String> = None;
        let mut interrupted = false;
        let mut over_balance = false;
        // The bytes to send for the latest chunk: whole events, errors replaced.
        let mut pieces = Vec::new();
        // Set once the stream completed: its usage is final, and billed before the chunk
        // with `message_stop` goes out.
        let mut settled: Option<Settlement> = None;
        'relay: loop {
            let next = tokio::select! {
                biased;
                _ = self.interrupt.cancelled() => {
                    tracing::warn!(%request_id, "interrupted by shutdown; billing the output relayed");
                    interrupted = true;
                    break;
                }
                next = next_before(&mut self.upstream, drain_deadline.or(finish_deadline)) => match next {
                    Some(next) => next,
                    None => {
                        if !self.events.parser().completed() {
                            tracing::info!(%request_id, "drain time ran out; billing the output relayed");
                        }
                        break;
                    }
                },
            };
            match next {
                None => break,
                Some(Ok(chunk)) => {
                    let words = &self.error_words;
                    let mut replace = |data: &[u8]| words(data, request_id);
                    if self
                        .events
                        .feed(chunk, &mut replace, &mut pieces)
                        .message_started
                    {
                        let started = self.events.parser().usage();
                        let Some(ticket) = self.ticket.as_mut() else {
                            break;
                        };
                        if ticket.resize_to_prompt(&started).await == Resize::Uncovered {
                            tracing::warn!(%request_id, hold = %ticket.amount(), "the real prompt costs more than the balance covers; ending the stream");
                            // The prompt is billed, durably, before the client's stream ends.
                            settled = self.settle(Outcome::BalanceExceeded).await;
                            self.end_uncovered().await;
                            over_balance = true;
                            break;
                        }
                    }
                    if self.events.parser().completed() && settled.is_none() {
                        let outcome =
                            outcome_of(&self.events, false, false, drain_deadline.is_some(), false);
                        settled = self.settle(outcome).await;
                    }
                    for piece in pieces.drain(..) {
                        let Some(client) = &self.client else {
                            break;
                        };
                        // A client that stops reading must not hold the relay past shutdown's
                        // interrupt: its settle would come after the final flush.
                        let sent = tokio::select! {
                            biased;
                            _ = self.interrupt.cancelled() => {
                                tracing::warn!(%request_id, "interrupted by shutdown while the client stalled; billing the output relayed");
                                interrupted = true;
                                break 'relay;
                            }
                            sent = tokio::time::timeout(CLIENT_STALL_TIMEOUT, client.send(Ok(piece))) => sent,
                        };
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::info!(%request_id, "client disconnected or stalled mid-stream; draining the upstream");
                            self.client = None;
                            drain_deadline = Some(self.drain.deadline(started, Instant::now()));
                        }
                    }
                    if self.events.parser().completed() && finish_deadline.is_none() {
                        // The client has the whole message: end its response now rather than
                        // when the upstream closes the body.
                        self.client = None;
                        finish_deadline = Some(Instant::now() + AFTER_STOP_GRACE);
                    }
                }
                Some(Err(error)) => {
                    let reason = error.to_string();
                    tracing::warn!(%request_id, error = %reason, "upstream stream failed");
                    cut = Some(reason);
                    break;
                }
            }
        }
        if settled.is_some() {
            return settled;
        }
        let outcome = outcome_of(
            &self.events,
            over_balance,
            interrupted,
            drain_deadline.is_some(),
            cut.is_some(),
        );
        // An upstream that ended a stream without a word of usage still answered: that is
        // billed (from the hold's estimate). One that produced nothing, or only an error
        // event, did not.
        let parser = self.events.parser();
        let settled = if parser.report().is_empty() && !parser.completed() {
            if let Some(ticket) = self.ticket.take() {
                ticket.release();
            }
            None
        } else {
            self.settle(outcome).await
        };
        // The cut, if there was one, reaches the client as a cut, and closing the client
        // channel ends the response: both once the settle is durable.
        if let Some(client) = self.client.take() {
            if let (Some(reason), false) = (cut, over_balance) {
                send_last(&self.interrupt, &client, Err(StreamCut(reason))).await;
            }
        }
        settled
    }

    /// Settles the stream's usage as the parser has it, and waits (bounded) until the
    /// journal holds the settle, so that what the client is sent next is billed even if the
    /// process dies. `None` if it was settled already.
    async fn settle(&mut self, outcome: Outcome) -> Option<Settlement> {
        let ticket = self.ticket.take()?;
        let (settlement, durability) =
            ticket.settle_durably(self.events.parser().report(), outcome);
        durability.wait().await;
        Some(settlement)
    }
}

/// How a stream ended, for its usage row.
fn outcome_of(
    events: &WholeEvents,
    over_balance: bool,
    interrupted: bool,
    client_gone: bool,
    cut: bool,
) -> Outcome {
    let parser = events.parser();
    if over_balance {
        Outcome::BalanceExceeded
    } else if interrupted {
        Outcome::Interrupted
    } else if client_gone {
        Outcome::ClientDisconnected
    } else if cut || !parser.completed() || parser.error_type().is_some() {
        Outcome::UpstreamCut
    } else {
        Outcome::Completed
    }
}

/// Sends the client the stream's last chunk, unless shutdown's `interrupt` comes first or
/// the client has stopped reading: the settle must not wait on the client.
async fn send_last(
    interrupt: &CancellationToken,
    client: &mpsc::Sender<ClientChunk>,
    chunk: ClientChunk,
) {
    tokio::select! {
        biased;
        _ = interrupt.cancelled() => {}
        _ = tokio::time::timeout(CLIENT_STALL_TIMEOUT, client.send(chunk)) => {}
    }
}

impl<S> RelayTask<S> {
    /// Ends the client's stream with an Anthropic `error` event: the prompt `message_start`
    /// reported costs more than the account can cover, so no output may follow. The chunk
    /// that carried `message_start` is not relayed (it may carry output too); the upstream is
    /// dropped, which closes its connection.
    ///
    /// The type is `billing_error`, the type of tollgate's 402: it names the cause, and SDKs
    /// and Claude Code do not retry it, whereas `overloaded_error` or `api_error` would be
    /// retried and bill the prompt again each time.
    async fn end_uncovered(&mut self) {
        let request_id = self.request_id;
        if let Some(client) = self.client.take() {
            let event = format!(
                "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"billing_error\",\"message\":\"{UNCOVERED_MESSAGE}\"}},\"request_id\":\"req_{}\"}}\n\n",
                request_id.simple()
            );
            let _ = tokio::time::timeout(CLIENT_STALL_TIMEOUT, client.send(Ok(Bytes::from(event))))
                .await;
        }
    }
}

/// The message of the `error` event that ends a stream the balance cannot cover.
pub const UNCOVERED_MESSAGE: &str = "insufficient balance: the prompt costs more than the balance available, so the response was stopped before any output; the prompt was billed";

/// The upstream's next item, or `None` if `deadline` (when there is one) passes first.
async fn next_before<S: Stream + Unpin>(
    upstream: &mut S,
    deadline: Option<Instant>,
) -> Option<Option<S::Item>> {
    match deadline {
        None => Some(upstream.next().await),
        Some(deadline) => tokio::time::timeout_at(deadline, upstream.next())
            .await
            .ok(),
    }
}
