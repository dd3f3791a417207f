//! The streaming body of `POST /v1/messages` with `"stream": true`.
//!
//! A hand-written `Stream` rather than an async generator: it yields each SSE event as its own
//! chunk, sleeps between token chunks on one reused timer, and records on drop whether the
//! client went away early, which is what lets tests see a relay cancel or drain its upstream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use crate::plan::{FailureKind, Plan};
use crate::render;
use crate::routes::Shared;
use crate::stats::Counters;

/// Records how a stream ended. Created before the time to first token, so that a client
/// giving up while waiting for the first byte is counted as a cancellation too.
pub(crate) struct StreamTally {
    shared: Arc<Shared>,
    settled: bool,
}

impl StreamTally {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            settled: false,
        }
    }

    fn completed(&mut self) {
        self.settled = true;
        Counters::bump(&self.shared.counters.streams_completed);
    }

    fn failed(&mut self, kind: FailureKind) {
        self.settled = true;
        let counters = &self.shared.counters;
        Counters::bump(&counters.streams_failed);
        Counters::bump(match kind {
            FailureKind::ErrorEvent => &counters.injected_stream_errors,
            FailureKind::Reset => &counters.injected_resets,
        });
    }
}

impl Drop for StreamTally {
    fn drop(&mut self) {
        // actix drops the response body when the connection goes away; if the stream had not
        // reached its end by then, the client left early.
        if !self.settled {
            Counters::bump(&self.shared.counters.streams_cancelled);
        }
    }
}

/// The error that makes actix cut the connection for `reset_after_tokens` or `reset_rate`.
#[derive(Debug)]
pub(crate) struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mock-anthropic: connection reset injected by reset_after_tokens or reset_rate")
    }
}

impl std::error::Error for InjectedReset {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    MessageStart,
    BlockStart,
    Ping,
    Tokens,
    /// An intermediate `message_delta` of `delta_every` is due.
    InterimDelta,
    ErrorEvent,
    /// Give the server one turn to write what it buffered before the body fails.
    ResetFlush,
    Reset,
    BlockStop,
    FinalDelta,
    MessageStop,
    Finished,
}

pub(crate) struct SseStream {
    plan: Plan,
    /// Taken when sent; rendered up front by the handler.
    message_start: Option<Bytes>,
    delta_usage_prefix: String,
    text_key: u64,
    request_id: String,
    phase: Phase,
    emitted: u64,
    /// A token chunk was sent, so the next one (or an injected failure) waits `inter_token`.
    pause_due: bool,
    /// One timer per stream, re-armed for each pause instead of allocated anew.
    timer: Option<Pin<Box<Sleep>>>,
    sleeping: bool,
    tally: StreamTally,
}

impl SseStream {
    pub fn new(
        plan: Plan,
        message_id: &str,
        model_json: &str,
        request_id: String,
        tally: StreamTally,
    ) -> Self {
        Self {
            message_start: Some(render::message_start(message_id, model_json, &plan)),
            delta_usage_prefix: render::delta_usage_prefix(&plan),
            text_key: plan.text_key,
            plan,
            request_id,
            phase: Phase::MessageStart,
            emitted: 0,
            pause_due: false,
            timer: None,
            sleeping: false,
            tally,
        }
    }

    /// What each `message_delta.usage` carries before `output_tokens`; `None` for no usage.
    fn usage_prefix(&self) -> Option<&str> {
        (!self.plan.omit_usage).then_some(self.delta_usage_prefix.as_str())
    }

    fn arm_timer(&mut self, pause: Duration) {
        let deadline = Instant::now() + pause;
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.sleeping = true;
    }

    /// Decides what the token phase does next: a chunk, a pause, a failure or the block's end.
    fn poll_tokens(&mut self) -> Option<Bytes> {
        let failure_due = self
            .plan
            .failure
            .filter(|failure| self.emitted >= failure.after_tokens);
        if failure_due.is_none() && self.emitted >= self.plan.output_tokens {
            self.phase = Phase::BlockStop;
            return None;
        }
        if self.pause_due {
            self.pause_due = false;
            if !self.plan.inter_token.is_zero() {
                self.arm_timer(self.plan.inter_token);
                return None;
            }
        }
        if let Some(failure) = failure_due {
            self.phase = match failure.kind {
                FailureKind::ErrorEvent => Phase::ErrorEvent,
                FailureKind::Reset => Phase::ResetFlush,
            };
            return None;
        }

        let len = self.plan.next_chunk_len(self.emitted);
        let chunk = render::text_delta(self.text_key, self.emitted, len);
        self.emitted += len;
        self.pause_due = true;
        if let Some(every) = self.plan.delta_every {
            if self.emitted.is_multiple_of(every) && self.emitted < self.plan.output_tokens {
                self.phase = Phase::InterimDelta;
            }
        }
        Some(chunk)
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, InjectedReset>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Every field is Unpin (the timer is boxed), so the stream can be handled by `&mut`.
        let this = self.get_mut();
        loop {
            if this.sleeping {
                if let Some(timer) = this.timer.as_mut() {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                this.sleeping = false;
            }

            let frame = match this.phase {
                Phase::MessageStart => {
                    // A failure before the first token follows `message_start` directly.
                    this.phase = match this.plan.failure {
                        Some(failure) if failure.after_tokens == 0 => match failure.kind {
                            FailureKind::ErrorEvent => Phase::ErrorEvent,
                            FailureKind::Reset => Phase::ResetFlush,
                        },
                        _ => Phase::BlockStart,
                    };
                    this.message_start.take()
                }
                Phase::BlockStart => {
                    this.phase = Phase::Ping;
                    Some(Bytes::from_static(render::CONTENT_BLOCK_START))
                }
                Phase::Ping => {
                    this.phase = Phase::Tokens;
                    Some(Bytes::from_static(render::PING))
                }
                Phase::Tokens => this.poll_tokens(),
                Phase::InterimDelta => {
                    this.phase = Phase::Tokens;
                    Some(render::message_delta(
                        this.usage_prefix(),
                        None,
                        i64::try_from(this.emitted).unwrap_or(i64::MAX),
                    ))
                }
                Phase::ErrorEvent => {
                    this.phase = Phase::Finished;
                    this.tally.failed(FailureKind::ErrorEvent);
                    Some(render::overloaded_event(
                        &this.request_id,
                        this.plan.error_message.as_deref(),
                    ))
                }
                Phase::ResetFlush => {
                    // actix drops its write buffer when the body fails, so return Pending once:
                    // the dispatcher flushes the tokens already produced, then polls again.
                    this.phase = Phase::Reset;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Phase::Reset => {
                    this.phase = Phase::Finished;
                    this.tally.failed(FailureKind::Reset);
                    return Poll::Ready(Some(Err(InjectedReset)));
                }
                Phase::BlockStop => {
                    this.phase = Phase::FinalDelta;
                    Some(Bytes::from_static(render::CONTENT_BLOCK_STOP))
                }
                Phase::FinalDelta => {
                    this.phase = Phase::MessageStop;
                    let output = this
                        .plan
                        .final_output_tokens
                        .unwrap_or_else(|| i64::try_from(this.emitted).unwrap_or(i64::MAX));
                    Some(render::message_delta(
                        this.usage_prefix(),
                        Some(this.plan.stop_reason()),
                        output,
                    ))
                }
                Phase::MessageStop => {
                    this.phase = Phase::Finished;
                    this.tally.completed();
                    Some(Bytes::from_static(render::MESSAGE_STOP))
                }
                Phase::Finished => return Poll::Ready(None),
            };
            if let Some(frame) = frame {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
    }
}
