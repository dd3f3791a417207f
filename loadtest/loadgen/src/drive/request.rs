//! One request of a run: its body drawn from the mix, sent with its key, its answer read to
//! the end (or dropped on purpose), and its outcome and usage checked against what the
//! simulated upstream planned for that very body.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

use super::{KeySlot, Progress};
use crate::mix::{Mix, RequestSpec};
use crate::reconcile::RequestRecord;
use crate::record::{Group, Outcome, Sample};
use crate::usage::{message_usage, StreamReader, Usage};
use mock_anthropic::{planned_output_bytes, planned_usage, Fate, MockConfig};

/// What every request of one run shares.
pub(super) struct Ctx {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    pub(super) mix: Arc<Mix>,
    pub(super) mock: Arc<MockConfig>,
    pub(super) start: Instant,
    pub(super) timeout: Duration,
    pub(super) tx: mpsc::UnboundedSender<Done>,
    pub(super) progress: Arc<Progress>,
    /// Makes the bodies of this run distinct from another scenario's with the same seed.
    pub(super) nonce_prefix: String,
}

/// A finished request: its sample for the recorder and, when it billed an account, its record
/// for reconciliation.
pub(super) struct Done {
    pub(super) sample: Sample,
    pub(super) record: Option<RequestRecord>,
}

/// `error.type` of an Anthropic error body, or "".
fn error_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("type"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Whether `outcome` is the failure the mock planned (`fate`): the status it injects, the
/// `event: error` it ends a stream with, or the connection it cuts. Any other failure (one of
/// tollgate's own statuses, a timeout, an error where a cut was planned) is unexpected.
pub(super) fn is_planned_failure(outcome: &Outcome, fate: Fate) -> bool {
    match (outcome, fate) {
        (Outcome::Status { status, .. }, Fate::Status(planned)) => *status == planned,
        (Outcome::StreamError(_), Fate::ErrorAfter(_)) => true,
        (Outcome::Cut, Fate::ResetAfter(_)) => true,
        _ => false,
    }
}

/// Sends one request and reads its answer. `intended` is the offset the latency counts from.
pub(super) async fn execute(
    ctx: &Ctx,
    group: Group,
    key: &KeySlot,
    spec: RequestSpec,
    seq: u64,
    intended: Duration,
) -> Done {
    let body = ctx.mix.body(&spec, &format!("{}-{seq}", ctx.nonce_prefix));
    let plan = planned_usage(&ctx.mock, &body);
    let fate = plan.map_or(Fate::Complete, |p| p.fate);
    // Only requests the mock will complete are dropped on purpose: their whole usage is
    // then known in advance. A request fated to fail is read to its end instead.
    let disconnect_after = spec.disconnect_after.filter(|_| fate == Fate::Complete);

    let max_tokens = ctx.mix.max_tokens();
    let deadline = Instant::now() + ctx.timeout;
    let mut request = ctx
        .client
        .post(&ctx.url)
        .header(CONTENT_TYPE, "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body.clone());
    if let Some(header) = &key.header {
        request = request.header("x-api-key", header.clone());
    }

    let finish = |outcome: Outcome, first_byte: Option<Duration>, usage: Option<Usage>| {
        // A billed request that timed out with a fault planned: what tollgate billed is
        // unknown (it depends on where the upstream was when the client left).
        let unreconciled_timeout =
            outcome == Outcome::Timeout && fate != Fate::Complete && key.account_id.is_some();
        // A complete answer must report what the mock planned: checked here, with loadgen's
        // own reader, independently of tollgate's parser.
        let usage_mismatch = outcome == Outcome::Ok
            && fate == Fate::Complete
            && plan.as_ref().is_some_and(|p| usage != Some(Usage::from(p)));
        let upstream_fault = is_planned_failure(&outcome, fate);
        let record = match (&key.account_id, usage) {
            (Some(account_id), Some(usage)) => Some(RequestRecord {
                account_id: account_id.clone(),
                model: ctx.mix.model_name(spec.model).to_string(),
                usage,
            }),
            _ => None,
        };
        Done {
            sample: Sample {
                group,
                stream: spec.stream,
                intended,
                first_byte,
                done: ctx.start.elapsed(),
                outcome,
                upstream_fault,
                unreconciled_timeout,
                usage_mismatch,
            },
            record,
        }
    };

    // A response the client stopped reading (dropped on purpose, or timed out) is billed in
    // full by tollgate, which drains the upstream: the mock's plan says what that is. With a
    // fault planned, what was billed is unknown: no record (see `unreconciled_timeout`).
    let full = plan.as_ref().map(Usage::from);
    let timed_out = |first_byte: Option<Duration>| {
        let usage = (fate == Fate::Complete).then(|| full.unwrap_or_default());
        finish(Outcome::Timeout, first_byte, usage)
    };
    let mut response = match timeout_at(deadline, request.send()).await {
        Err(_) => return timed_out(None),
        Ok(Err(e)) if e.is_timeout() => return timed_out(None),
        Ok(Err(_)) => return finish(Outcome::Network, None, None),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if status != 200 {
        let text = match timeout_at(deadline, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            _ => Default::default(),
        };
        let outcome = Outcome::Status {
            status,
            error_type: error_type(&text),
        };
        return finish(outcome, None, None);
    }

    let mut reader = spec.stream.then(StreamReader::new);
    let mut whole = Vec::new();
    let mut first_byte = None;
    let mut chunks = 0u32;
    let ended = loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => break Err(Outcome::Timeout),
            Ok(Err(_)) => break Err(Outcome::Cut),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(chunk))) => {
                first_byte.get_or_insert_with(|| ctx.start.elapsed());
                chunks += 1;
                match &mut reader {
                    Some(reader) => {
                        reader.feed(&chunk);
                    }
                    None => whole.extend_from_slice(&chunk),
                }
                if disconnect_after.is_some_and(|k| chunks >= k) {
                    // A stream whose `message_stop` already arrived is complete: dropping it
                    // now changes nothing.
                    if reader.as_ref().is_some_and(|r| r.completed()) {
                        break Ok(());
                    }
                    break Err(Outcome::Disconnected);
                }
            }
        }
    };
    match (ended, reader) {
        // Only requests fated to complete are dropped on purpose.
        (Err(Outcome::Disconnected), _) => finish(
            Outcome::Disconnected,
            first_byte,
            Some(full.unwrap_or_default()),
        ),
        (Err(Outcome::Timeout), _) => timed_out(first_byte),
        (Err(outcome), Some(reader)) => {
            let mut usage = reader.billed_usage(max_tokens);
            if outcome == Outcome::Cut {
                // The cut may lose the last bytes on their way to this client; tollgate had
                // read, and bills, every token the mock sent before it.
                if let Fate::ResetAfter(tokens) = fate {
                    let sent = planned_output_bytes(&ctx.mock, &body, tokens).unwrap_or(0);
                    usage.output_tokens = usage.output_tokens.max(sent).min(max_tokens);
                }
            }
            finish(outcome, first_byte, Some(usage))
        }
        (Err(outcome), None) => finish(outcome, first_byte, message_usage(&whole)),
        (Ok(()), Some(reader)) => {
            let outcome = if reader.completed() {
                Outcome::Ok
            } else if reader.errored() {
                Outcome::StreamError(reader.error_type().unwrap_or_default().to_string())
            } else {
                Outcome::Cut
            };
            finish(outcome, first_byte, Some(reader.billed_usage(max_tokens)))
        }
        (Ok(()), None) => match message_usage(&whole) {
            Some(usage) => finish(Outcome::Ok, first_byte, Some(usage)),
            None => finish(Outcome::Cut, first_byte, None),
        },
    }
}

pub(super) fn note(ctx: &Ctx, done: Done) {
    ctx.progress.done.fetch_add(1, Ordering::Relaxed);
    if done.sample.outcome.is_failure() {
        ctx.progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    // The collector outlives every sender; a closed channel only means the run is over.
    let _ = ctx.tx.send(done);
}
