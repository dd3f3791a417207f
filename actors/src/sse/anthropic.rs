//! What Anthropic's stream events mean for billing: `message_start` and `message_delta` carry
//! cumulative usage, `message_stop` ends the message, `error` reports a failure. A
//! [`StreamReport`] folds the events it is given into the bill known so far.
//!
//! Usage counts are cumulative: a field a report omits keeps its value, and each class keeps
//! the largest value reported, so that a later, smaller count never lowers the bill (a
//! `message_delta` that repeats `input_tokens: 0` after a `message_start` of 50,000, say).
//! A count that is negative or above [`MAX_COUNT_PER_CLASS`] is an upstream fault: it is
//! ignored or capped, and the report says so.
//!
//! The data of `content_block_delta` events is not read, only measured: [`DELTA_ENVELOPE`]
//! bytes less than its length is the output it relayed, for the estimate of a stream whose
//! final usage never came (docs/adr/0009-estimate-unreported-output.md). A delta without an
//! `event:` line is read, as every untyped event must be to learn its type, and measured the
//! same way.

use serde::Deserialize;

use super::lenient::{parse_wire, Count, Loose, Obj};
use super::Feed;
use crate::usage::{UsageReport, MAX_COUNT_PER_CLASS, MAX_SERVER_TOOL_USES};
use crate::Usage;

/// The smallest JSON around a content delta's payload. Anthropic's other delta types
/// (`thinking_delta`, `input_json_delta`, `signature_delta`) and larger indexes have longer
/// envelopes, so taking this much off every event never under-counts the payload.
pub(super) const DELTA_ENVELOPE: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#;

/// The output in a content delta of `data_bytes` bytes of data (complete or not): all but
/// [`DELTA_ENVELOPE`].
pub(super) fn delta_payload(data_bytes: usize) -> u64 {
    u64::try_from(data_bytes.saturating_sub(DELTA_ENVELOPE.len())).unwrap_or(u64::MAX)
}

/// The event types billing reads; every other type is skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    MessageStart,
    /// Read for the blocks that carry output in it (`redacted_thinking`'s data), and to know
    /// a thinking block began. One per block, so rare beside the deltas.
    ContentBlockStart,
    MessageDelta,
    MessageStop,
    Error,
}

/// The one event type that is measured but not read: the output itself.
pub(super) const CONTENT_BLOCK_DELTA: &[u8] = b"content_block_delta";

impl EventKind {
    /// The type an event name (or a JSON `type`) stands for; `None` for the events billing
    /// does not read (content blocks, pings, and anything new).
    pub(super) fn from_name(name: &[u8]) -> Option<EventKind> {
        match name {
            b"message_start" => Some(EventKind::MessageStart),
            b"content_block_start" => Some(EventKind::ContentBlockStart),
            b"message_delta" => Some(EventKind::MessageDelta),
            b"message_stop" => Some(EventKind::MessageStop),
            b"error" => Some(EventKind::Error),
            _ => None,
        }
    }
}

/// What the stream's events have reported about the message so far.
#[derive(Debug, Clone, Default)]
pub(super) struct StreamReport {
    tally: Tally,
    saw_start: bool,
    /// A `message_delta` with a stop reason and an output count arrived: the usage is final.
    final_usage: bool,
    /// Payload bytes of the content deltas so far (each event's length less the envelope),
    /// and of redacted thinking blocks.
    relayed_output_bytes: u64,
    /// A thinking or redacted thinking block began.
    thinking_seen: bool,
    completed: bool,
    errored: bool,
    stop_reason: Option<String>,
    error_type: Option<String>,
    model: Option<String>,
}

impl StreamReport {
    /// Applies one complete event. `kind` is its `event:` line's type; without one, the JSON's
    /// own `type` decides. A `message_start` whose usage names the prompt is noted in `feed`.
    /// Returns the type the event was read as, if it was one billing reads.
    pub(super) fn event(
        &mut self,
        kind: Option<EventKind>,
        data: &[u8],
        feed: &mut Feed,
    ) -> Option<EventKind> {
        match kind {
            Some(kind) => {
                let event = match kind {
                    // Its data says nothing billing needs; the event itself is the news.
                    EventKind::MessageStop => None,
                    _ => parse_wire::<Obj<WireEvent>>(data).map(|event| event.0),
                };
                self.apply(kind, event, feed);
                Some(kind)
            }
            None => {
                // No `event:` line: the SDKs would drop this event, but the upstream still
                // reported what it reports, so the JSON's own type decides.
                let Obj(event) = parse_wire::<Obj<WireEvent>>(data)?;
                let Loose::Got(name) = &event.kind else {
                    return None;
                };
                match EventKind::from_name(name.as_bytes()) {
                    Some(kind) => {
                        self.apply(kind, Some(event), feed);
                        Some(kind)
                    }
                    // Output all the same: measured as if it had its `event:` line.
                    None if name.as_bytes() == CONTENT_BLOCK_DELTA => {
                        self.content_delta(data.len());
                        None
                    }
                    None => None,
                }
            }
        }
    }

    /// A complete `content_block_delta` event carried `data_bytes` bytes of data.
    pub(super) fn content_delta(&mut self, data_bytes: usize) {
        self.relayed_output_bytes = self
            .relayed_output_bytes
            .saturating_add(delta_payload(data_bytes));
    }

    /// Cumulative usage as of the last complete event.
    pub(super) fn usage(&self) -> Usage {
        self.tally.usage()
    }

    /// Everything billing needs to know about the stream so far.
    pub(super) fn report(&self) -> UsageReport {
        UsageReport {
            usage: self.tally.usage(),
            prompt_reported: self.tally.prompt_reported(),
            final_usage: self.final_usage,
            relayed_output_bytes: self.relayed_output_bytes,
            absurd_count: self.tally.absurd,
            answer_complete: self.completed,
            thinking_seen: self.thinking_seen,
        }
    }

    pub(super) fn saw_message_start(&self) -> bool {
        self.saw_start
    }

    pub(super) fn completed(&self) -> bool {
        self.completed
    }

    pub(super) fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    pub(super) fn error_type(&self) -> Option<&str> {
        self.error_type.as_deref()
    }

    pub(super) fn errored(&self) -> bool {
        self.errored
    }

    pub(super) fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn apply(&mut self, kind: EventKind, event: Option<WireEvent>, feed: &mut Feed) {
        match kind {
            EventKind::MessageStart => {
                let Some(WireEvent {
                    message: Loose::Got(Obj(message)),
                    ..
                }) = event
                else {
                    return;
                };
                if let Loose::Got(model) = message.model {
                    self.model = Some(model);
                }
                if let Loose::Got(Obj(usage)) = &message.usage {
                    let seen = self.tally.apply(usage);
                    if seen.prompt {
                        self.saw_start = true;
                        feed.message_started = true;
                    }
                }
            }
            EventKind::MessageDelta => {
                let Some(event) = event else {
                    return;
                };
                let seen = match &event.usage {
                    Loose::Got(Obj(usage)) => self.tally.apply(usage),
                    _ => Seen::default(),
                };
                if let Loose::Got(Obj(WireDelta {
                    stop_reason: Loose::Got(reason),
                })) = event.delta
                {
                    self.stop_reason = Some(reason);
                    self.final_usage |= seen.output;
                }
            }
            EventKind::ContentBlockStart => {
                let Some(WireEvent {
                    content_block: Loose::Got(Obj(block)),
                    ..
                }) = event
                else {
                    return;
                };
                if let Loose::Got(kind) = &block.kind {
                    self.thinking_seen |= kind == "thinking" || kind == "redacted_thinking";
                }
                if let Loose::Got(data) = &block.data {
                    // Redacted thinking comes whole here, with no delta after it.
                    self.relayed_output_bytes = self
                        .relayed_output_bytes
                        .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                }
            }
            EventKind::MessageStop => self.completed = true,
            EventKind::Error => {
                self.errored = true;
                if let Some(WireEvent {
                    error:
                        Loose::Got(Obj(WireError {
                            kind: Loose::Got(kind),
                        })),
                    ..
                }) = event
                {
                    self.error_type = Some(kind);
                }
            }
        }
    }
}

/// Usage of a non-streaming response body (a complete Message JSON, or an error body); None if
/// it has no usable `usage` object.
///
/// "Usable" means an object with at least one count in it; the counts follow the same rules
/// as in a stream (null is absent, a missing breakdown bills cache writes at the 5-minute
/// rate).
pub fn usage_from_message(body: &[u8]) -> Option<Usage> {
    let read = read_message(body)?;
    read.any.then_some(read.report.usage)
}

/// What a successful non-streaming response body reports, read in one pass; `None` when it is
/// not a Message (`"type":"message"`): an HTML page, or a proxy's error object sent with a
/// 200, is no answer to bill. The usage is final only with an output count; a Message without
/// one is an upstream fault, and its output is estimated from the body's length, which is
/// longer than any output it holds.
pub fn report_from_message(body: &[u8]) -> Option<UsageReport> {
    let read = read_message(body)?;
    if !read.message {
        return None;
    }
    let mut report = read.report;
    report.answer_complete = true;
    if !report.final_usage {
        report.relayed_output_bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
    }
    Some(report)
}

/// A response body read as a Message.
struct ReadMessage {
    report: UsageReport,
    /// Its `type` is `message`.
    message: bool,
    /// Its usage carried some count.
    any: bool,
}

fn read_message(body: &[u8]) -> Option<ReadMessage> {
    let Obj(message) = parse_wire::<Obj<WireMessage>>(body)?;
    let is_message = matches!(&message.kind, Loose::Got(kind) if kind == "message");
    let Loose::Got(Obj(usage)) = message.usage else {
        return Some(ReadMessage {
            report: UsageReport::default(),
            message: is_message,
            any: false,
        });
    };
    let mut tally = Tally::default();
    let seen = tally.apply(&usage);
    Some(ReadMessage {
        report: UsageReport {
            usage: tally.usage(),
            prompt_reported: tally.prompt_reported(),
            final_usage: seen.output,
            relayed_output_bytes: 0,
            absurd_count: tally.absurd,
            answer_complete: true,
            thinking_seen: false,
        },
        message: is_message,
        any: seen.any,
    })
}

/// The cumulative counts seen so far, each `None` until some event carried it.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    input: Option<u64>,
    output: Option<u64>,
    cache_read: Option<u64>,
    cache_creation_total: Option<u64>,
    breakdown_5m: Option<u64>,
    breakdown_1h: Option<u64>,
    /// The largest 5-minute plus 1-hour sum one usage object reported: the two classes keep
    /// their largest values separately, and together they never pass a total really reported.
    breakdown_sum: Option<u64>,
    web_search: Option<u64>,
    web_fetch: Option<u64>,
    /// Some count was negative, beyond a `u64`, or above [`MAX_COUNT_PER_CLASS`].
    absurd: bool,
}

/// Which counts one usage object carried.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Any count at all.
    any: bool,
    /// A count of some prompt class.
    prompt: bool,
    /// An output count.
    output: bool,
}

/// Folds one reported token count into its class: see [`fold_capped`].
fn fold(slot: &mut Option<u64>, count: Count, absurd: &mut bool) -> bool {
    fold_capped(slot, count, MAX_COUNT_PER_CLASS, absurd)
}

/// Folds one reported count into its class: the class keeps the largest value seen, capped at
/// `cap`. Returns whether a usable count was carried; an absurd one is not (it is ignored, or
/// capped) and marks the tally.
fn fold_capped(slot: &mut Option<u64>, count: Count, cap: u64, absurd: &mut bool) -> bool {
    match count {
        Count::Absent => false,
        Count::Absurd => {
            *absurd = true;
            false
        }
        Count::Got(n) => {
            if n > cap {
                *absurd = true;
            }
            let n = n.min(cap);
            *slot = Some(slot.map_or(n, |seen| seen.max(n)));
            true
        }
    }
}

/// A count's usable value, capped as [`fold`] caps it; 0 when absent or absurd.
fn capped(count: Count) -> u64 {
    match count {
        Count::Got(n) => n.min(MAX_COUNT_PER_CLASS),
        Count::Absent | Count::Absurd => 0,
    }
}

impl Tally {
    fn apply(&mut self, usage: &WireUsage) -> Seen {
        let absurd = &mut self.absurd;
        let mut prompt = false;
        prompt |= fold(&mut self.input, usage.input_tokens, absurd);
        prompt |= fold(&mut self.cache_read, usage.cache_read_input_tokens, absurd);
        prompt |= fold(
            &mut self.cache_creation_total,
            usage.cache_creation_input_tokens,
            absurd,
        );
        if let Loose::Got(Obj(breakdown)) = &usage.cache_creation {
            prompt |= fold(
                &mut self.breakdown_5m,
                breakdown.ephemeral_5m_input_tokens,
                absurd,
            );
            prompt |= fold(
                &mut self.breakdown_1h,
                breakdown.ephemeral_1h_input_tokens,
                absurd,
            );
            let sum = capped(breakdown.ephemeral_5m_input_tokens)
                .saturating_add(capped(breakdown.ephemeral_1h_input_tokens));
            self.breakdown_sum = Some(self.breakdown_sum.map_or(sum, |seen| seen.max(sum)));
        }
        let output = fold(&mut self.output, usage.output_tokens, absurd);
        let mut tools = false;
        if let Loose::Got(Obj(used)) = &usage.server_tool_use {
            let cap = MAX_SERVER_TOOL_USES;
            tools |= fold_capped(&mut self.web_search, used.web_search_requests, cap, absurd);
            tools |= fold_capped(&mut self.web_fetch, used.web_fetch_requests, cap, absurd);
        }
        Seen {
            any: prompt || output || tools,
            prompt,
            output,
        }
    }

    /// Some prompt class has been counted.
    fn prompt_reported(&self) -> bool {
        self.input.is_some()
            || self.cache_read.is_some()
            || self.cache_creation_total.is_some()
            || self.breakdown_5m.is_some()
            || self.breakdown_1h.is_some()
    }

    fn usage(&self) -> Usage {
        let (cache_write_5m_tokens, cache_write_1h_tokens) =
            match (self.breakdown_5m, self.breakdown_1h) {
                // Without a breakdown every cache write is billed at the 5-minute class.
                (None, None) => (self.cache_creation_total.unwrap_or(0), 0),
                (five, one) => {
                    let (five, one) = (five.unwrap_or(0), one.unwrap_or(0));
                    // The largest total actually reported, by a total or by one breakdown.
                    let reported = self
                        .cache_creation_total
                        .unwrap_or(0)
                        .max(self.breakdown_sum.unwrap_or(0));
                    // A larger total than the breakdown's sum wins, and a smaller one caps it
                    // (two reports' separate maxima, 5m from one and 1h from another, would
                    // bill writes nobody reported). Either way the 1-hour part is known, and
                    // the rest must be 5-minute writes.
                    if reported == five.saturating_add(one) {
                        (five, one)
                    } else {
                        (reported.saturating_sub(one), one.min(reported))
                    }
                }
            };
        Usage {
            input_tokens: self.input.unwrap_or(0),
            output_tokens: self.output.unwrap_or(0),
            cache_read_tokens: self.cache_read.unwrap_or(0),
            cache_write_5m_tokens,
            cache_write_1h_tokens,
            web_search_requests: self.web_search.unwrap_or(0),
            web_fetch_requests: self.web_fetch.unwrap_or(0),
        }
    }
}

// The wire types read only the fields billing needs, through the lenient reader: a value of
// an unexpected type counts as absent rather than failing the whole event.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: Loose<String>,
    message: Loose<Obj<WireMessage>>,
    delta: Loose<Obj<WireDelta>>,
    usage: Loose<Obj<WireUsage>>,
    error: Loose<Obj<WireError>>,
    content_block: Loose<Obj<WireBlock>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: Loose<String>,
    /// A `redacted_thinking` block's encrypted thinking.
    data: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
    #[serde(rename = "type")]
    kind: Loose<String>,
    model: Loose<String>,
    usage: Loose<Obj<WireUsage>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireDelta {
    stop_reason: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireError {
    #[serde(rename = "type")]
    kind: Loose<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    input_tokens: Count,
    output_tokens: Count,
    cache_creation_input_tokens: Count,
    cache_read_input_tokens: Count,
    cache_creation: Loose<Obj<WireCacheCreation>>,
    server_tool_use: Loose<Obj<WireServerToolUse>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireCacheCreation {
    ephemeral_5m_input_tokens: Count,
    ephemeral_1h_input_tokens: Count,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireServerToolUse {
    web_search_requests: Count,
    web_fetch_requests: Count,
}

#[cfg(test)]
mod tests {
    use super::super::testing::{delta, event, parse, start, MINIMAL};
    use super::super::UsageParser;
    use super::*;
    use serde_json::json;

    #[test]
    fn minimal_stream() {
        let mut p = UsageParser::new();
        let feed = p.feed(MINIMAL.as_bytes());
        assert!(feed.message_started);
        assert!(p.saw_message_start());
        assert!(p.completed());
        assert_eq!(p.stop_reason(), Some("end_turn"));
        assert_eq!(p.model(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(p.error_type(), None);
        assert!(!p.errored());
        assert_eq!(
            p.usage(),
            Usage {
                input_tokens: 25,
                output_tokens: 15,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn deltas_are_cumulative_field_by_field() {
        let stream = [
            start(
                json!({"input_tokens":100,"output_tokens":1,"cache_read_input_tokens":50,
                "cache_creation_input_tokens":0}),
            ),
            delta(json!({"output_tokens":10})),
            delta(json!({"output_tokens":30,"input_tokens":120})),
            delta(json!({"output_tokens":40,"cache_read_input_tokens":null})),
        ]
        .concat();
        let p = parse(stream.as_bytes());
        assert_eq!(
            p.usage(),
            Usage {
                input_tokens: 120,
                output_tokens: 40,
                cache_read_tokens: 50,
                ..Usage::default()
            }
        );
        assert!(!p.completed());
    }

    #[test]
    fn a_later_smaller_count_never_lowers_a_class() {
        let stream = start(json!({"input_tokens":50_000,"output_tokens":1,
            "cache_read_input_tokens":9000,"cache_creation_input_tokens":700,
            "cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":400},
            "server_tool_use":{"web_search_requests":3}}))
            + &delta(
                json!({"output_tokens":80,"input_tokens":0,"cache_read_input_tokens":0,
                "cache_creation_input_tokens":0,"server_tool_use":{"web_search_requests":1}}),
            )
            + &delta(json!({"output_tokens":40}));
        let p = parse(stream.as_bytes());
        assert_eq!(
            p.usage(),
            Usage {
                input_tokens: 50_000,
                output_tokens: 80,
                cache_read_tokens: 9000,
                cache_write_5m_tokens: 300,
                cache_write_1h_tokens: 400,
                web_search_requests: 3,
                web_fetch_requests: 0,
            }
        );
        assert!(!p.report().absurd_count);
    }

    #[test]
    fn absurd_counts_are_capped_or_ignored_and_flagged() {
        let stream = start(json!({"input_tokens":100,"output_tokens":1}))
            + &delta(json!({"output_tokens":10}));
        let sane = parse(stream.as_bytes()).report();
        assert!(!sane.absurd_count);
        for (usage, expected) in [
            (r#"{"output_tokens":-5}"#, (100, 10)),
            (r#"{"output_tokens":20,"input_tokens":-1}"#, (100, 20)),
            (r#"{"output_tokens":18446744073709551616}"#, (100, 10)),
            (
                r#"{"output_tokens":10000001,"input_tokens":4000000000}"#,
                (MAX_COUNT_PER_CLASS, MAX_COUNT_PER_CLASS),
            ),
            (
                r#"{"output_tokens":11,"server_tool_use":{"web_search_requests":18446744073709551615}}"#,
                (100, 11),
            ),
        ] {
            let last = format!(
                "event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{usage}}}\n\n"
            );
            let report = parse((stream.clone() + &last).as_bytes()).report();
            assert!(report.absurd_count, "{usage}");
            assert_eq!(
                (report.usage.input_tokens, report.usage.output_tokens),
                expected,
                "{usage}"
            );
            assert!(report.usage.web_search_requests <= MAX_SERVER_TOOL_USES);
        }
        // Server-tool uses have a cap of their own, far below the tokens'.
        let searches = stream.clone()
            + &delta(
                json!({"output_tokens":12,"server_tool_use":{"web_search_requests":9_999_999}}),
            );
        let report = parse(searches.as_bytes()).report();
        assert!(report.absurd_count);
        assert_eq!(report.usage.web_search_requests, MAX_SERVER_TOOL_USES);
        let message = report_from_message(
            br#"{"type":"message","usage":{"input_tokens":-3,"output_tokens":5}}"#,
        )
        .unwrap();
        assert!(message.absurd_count);
        assert!(!message.prompt_reported);
        assert_eq!(message.usage.output_tokens, 5);
    }

    #[test]
    fn the_usage_is_final_once_a_delta_brings_a_stop_reason_and_an_output_count() {
        let started = start(json!({"input_tokens":10,"output_tokens":1}));
        let p = parse(started.as_bytes());
        assert!(!p.report().final_usage);
        assert!(p.report().prompt_reported);
        // An interim delta without a stop reason is not the final usage.
        let interim = started.clone()
            + &event(
                "message_delta",
                &json!({"type":"message_delta","delta":{"stop_reason":null},"usage":{"output_tokens":5}}),
            );
        assert!(!parse(interim.as_bytes()).report().final_usage);
        // A stop reason without usage is not either.
        let bare = started.clone()
            + &event(
                "message_delta",
                &json!({"type":"message_delta","delta":{"stop_reason":"end_turn"}}),
            );
        assert!(!parse(bare.as_bytes()).report().final_usage);
        let done = started + &delta(json!({"output_tokens":7}));
        assert!(parse(done.as_bytes()).report().final_usage);
        assert!(parse(MINIMAL.as_bytes()).report().final_usage);
    }

    #[test]
    fn content_deltas_are_measured_beyond_their_envelope() {
        let content = |delta: serde_json::Value| {
            event(
                "content_block_delta",
                &json!({"type":"content_block_delta","index":0,"delta":delta}),
            )
        };
        assert_eq!(
            content(json!({"type":"text_delta","text":""}))
                .trim_end()
                .trim_start_matches("event: content_block_delta\ndata: ")
                .len(),
            DELTA_ENVELOPE.len(),
            "the envelope is the data of an empty text delta"
        );
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + &content(json!({"type":"text_delta","text":"Hello"}))
            + &content(json!({"type":"text_delta","text":""}))
            + &content(json!({"type":"thinking_delta","thinking":"hmm"}))
            + &content(json!({"type":"input_json_delta","partial_json":"{\"a\":1}"}));
        let report = parse(stream.as_bytes()).report();
        // "Hello" is 5 bytes. The other types' longer envelopes count as payload, which errs
        // towards billing: "hmm" is 3 + 8 ("thinking" is longer than "text", twice), the
        // escaped JSON 9 + 14 ("input_json" and "partial_json").
        assert_eq!(report.relayed_output_bytes, 5 + (3 + 8) + (9 + 14));
        // A delta cut before its blank line still reached a client that reads raw bytes:
        // its payload so far counts.
        let cut =
            stream.clone() + "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"";
        assert_eq!(
            parse(cut.as_bytes()).report().relayed_output_bytes,
            report.relayed_output_bytes,
            "nothing past the envelope yet"
        );
        let partial = cut + r#","index":0,"delta":{"type":"text_delta","text":"Half a sentence"#;
        assert_eq!(
            parse(partial.as_bytes()).report().relayed_output_bytes,
            report.relayed_output_bytes + "Half a sentence".len() as u64 - 3,
            "all but the envelope's closing bytes"
        );
    }

    #[test]
    fn redacted_thinking_is_measured_and_thinking_blocks_are_noted() {
        let block = |block: serde_json::Value| {
            event(
                "content_block_start",
                &json!({"type":"content_block_start","index":0,"content_block":block}),
            )
        };
        let text = start(json!({"input_tokens":10,"output_tokens":1}))
            + &block(json!({"type":"text","text":""}));
        let report = parse(text.as_bytes()).report();
        assert_eq!(report.relayed_output_bytes, 0);
        assert!(!report.thinking_seen);
        let redacted = text + &block(json!({"type":"redacted_thinking","data":"EmwKAhgBEgy3va"}));
        let report = parse(redacted.as_bytes()).report();
        assert_eq!(report.relayed_output_bytes, 14);
        assert!(report.thinking_seen);
        let thinking = start(json!({"input_tokens":10,"output_tokens":1}))
            + &block(json!({"type":"thinking","thinking":"","signature":""}));
        assert!(parse(thinking.as_bytes()).report().thinking_seen);
    }

    #[test]
    fn cache_breakdown_present() {
        let stream = start(json!({"input_tokens":5,"output_tokens":1,
            "cache_creation_input_tokens":700,"cache_read_input_tokens":9000,
            "cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":400}}))
            + &delta(json!({"output_tokens":12,"cache_creation_input_tokens":700}));
        let u = parse(stream.as_bytes()).usage();
        assert_eq!(
            (u.cache_write_5m_tokens, u.cache_write_1h_tokens),
            (300, 400)
        );
        assert_eq!(u.cache_read_tokens, 9000);
        assert_eq!(u.prompt_tokens(), 5 + 700 + 9000);
    }

    #[test]
    fn cache_breakdown_missing_bills_five_minutes() {
        let stream = start(json!({"input_tokens":5,"output_tokens":1,
            "cache_creation_input_tokens":700,"cache_creation":null}));
        let u = parse(stream.as_bytes()).usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (700, 0));
        let u = usage_from_message(
            br#"{"usage":{"input_tokens":1,"cache_creation_input_tokens":9,"cache_creation":{}}}"#,
        )
        .unwrap();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (9, 0));
    }

    #[test]
    fn later_cache_total_keeps_the_hour_and_moves_the_rest_to_five_minutes() {
        let base = start(json!({"input_tokens":5,"output_tokens":1,
            "cache_creation_input_tokens":700,
            "cache_creation":{"ephemeral_5m_input_tokens":300,"ephemeral_1h_input_tokens":400}}));
        let grown =
            base.clone() + &delta(json!({"output_tokens":2,"cache_creation_input_tokens":1000}));
        let u = parse(grown.as_bytes()).usage();
        assert_eq!(
            (u.cache_write_5m_tokens, u.cache_write_1h_tokens),
            (600, 400)
        );
        // A smaller later total never lowers the bill.
        let shrunk = base + &delta(json!({"output_tokens":2,"cache_creation_input_tokens":100}));
        let u = parse(shrunk.as_bytes()).usage();
        assert_eq!(
            (u.cache_write_5m_tokens, u.cache_write_1h_tokens),
            (300, 400)
        );
        // Two breakdowns' separate maxima never pass the largest total reported.
        let moved = start(json!({"input_tokens":5,"output_tokens":1,
            "cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":0}}))
            + &delta(json!({"output_tokens":2,
                "cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":1000}}));
        let u = parse(moved.as_bytes()).usage();
        assert_eq!(
            (u.cache_write_5m_tokens, u.cache_write_1h_tokens),
            (0, 1000)
        );
        // A breakdown without a total stands on its own.
        let only = start(json!({"input_tokens":1,"output_tokens":1,
            "cache_creation":{"ephemeral_1h_input_tokens":40}}));
        let u = parse(only.as_bytes()).usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (0, 40));
    }

    #[test]
    fn server_tool_use() {
        let stream = start(json!({"input_tokens":10,"output_tokens":1,
            "server_tool_use":{"web_search_requests":0}}))
            + &delta(json!({"output_tokens":50,"input_tokens":4000,
                "server_tool_use":{"web_search_requests":2,"web_fetch_requests":1}}))
            + &delta(json!({"output_tokens":80,"server_tool_use":{"web_fetch_requests":3}}));
        let u = parse(stream.as_bytes()).usage();
        assert_eq!(u.web_search_requests, 2);
        assert_eq!(u.web_fetch_requests, 3);
        assert_eq!(u.input_tokens, 4000);
        assert_eq!(u.output_tokens, 80);
    }

    #[test]
    fn error_event() {
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + &event(
                "error",
                &json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
            );
        let p = parse(stream.as_bytes());
        assert_eq!(p.error_type(), Some("overloaded_error"));
        assert!(p.errored());
        assert!(!p.completed());
        assert_eq!(p.usage().input_tokens, 10);

        let p = parse(b"event: error\ndata: not json\n\n");
        assert!(p.errored());
        assert_eq!(p.error_type(), None);
        let p = parse(b"data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n");
        assert_eq!(p.error_type(), Some("api_error"));
    }

    #[test]
    fn data_without_event_line_falls_back_to_type() {
        let stream = "data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n\
            data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n\
            data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":9}}\n\n\
            data: {\"type\":\"message_stop\"}\n\n";
        let mut p = UsageParser::new();
        assert!(p.feed(stream.as_bytes()).message_started);
        assert_eq!(p.usage().input_tokens, 7);
        assert_eq!(p.usage().output_tokens, 9);
        assert_eq!(p.stop_reason(), Some("max_tokens"));
        assert_eq!(p.model(), Some("m"));
        assert!(p.completed());
    }

    #[test]
    fn content_deltas_without_an_event_line_are_measured_wherever_the_stream_is_cut() {
        let text = |text: &str| {
            json!({"type":"content_block_delta","index":0,
                "delta":{"type":"text_delta","text":text}})
        };
        let typed = start(json!({"input_tokens":7,"output_tokens":1}))
            + &event("content_block_delta", &text("Hello"))
            + &event("content_block_delta", &text("world!"));
        let untyped = start(json!({"input_tokens":7,"output_tokens":1}))
            + &format!("data: {}\n\n", text("Hello"))
            + &format!("data: {}\n\n", text("world!"));
        let whole = parse(typed.as_bytes()).report().relayed_output_bytes;
        assert_eq!(whole, 11);
        let bytes = untyped.as_bytes();
        for cut in 0..=bytes.len() {
            let (head, tail) = bytes.split_at(cut);
            let mut p = UsageParser::new();
            p.feed(head);
            p.feed(tail);
            assert_eq!(p.report().relayed_output_bytes, whole, "cut at {cut}");
        }
    }

    #[test]
    fn message_start_without_prompt_counts_is_not_a_start() {
        let mut p = UsageParser::new();
        let feed = p.feed(
            b"event: message_start\ndata: {\"message\":{\"usage\":{\"output_tokens\":1}}}\n\n",
        );
        assert!(!feed.message_started);
        assert!(!p.saw_message_start());
        let feed = p.feed(b"event: message_start\ndata: {\"message\":{\"usage\":null}}\n\n");
        assert!(!feed.message_started);
        let feed = p.feed(
            b"event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":8}}}\n\n",
        );
        assert!(feed.message_started);
        assert_eq!(p.usage().input_tokens, 8);
        assert_eq!(p.usage().output_tokens, 1);
    }

    #[test]
    fn only_a_message_is_billed_and_its_usage_is_final_with_an_output_count() {
        let prompt_only = br#"{"type":"message","content":[],"usage":{"input_tokens":100}}"#;
        let report = report_from_message(prompt_only).unwrap();
        assert!(!report.final_usage);
        assert!(report.answer_complete && report.prompt_reported);
        assert_eq!(report.relayed_output_bytes, prompt_only.len() as u64);
        let whole = br#"{"type":"message","usage":{"input_tokens":100,"output_tokens":4}}"#;
        assert!(report_from_message(whole).unwrap().final_usage);
        for not_a_message in [
            &br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#[..],
            b"<html><body>502 Bad Gateway</body></html>",
            br#"{"usage":{"input_tokens":100,"output_tokens":4}}"#,
        ] {
            assert_eq!(report_from_message(not_a_message), None);
        }
    }

    #[test]
    fn non_streaming_message() {
        let body = json!({"id":"msg_1","type":"message","role":"assistant","model":"claude-opus-5-5",
            "content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":12,"output_tokens":34,"cache_read_input_tokens":56,
                "cache_creation_input_tokens":70,
                "cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":40},
                "server_tool_use":{"web_search_requests":1,"web_fetch_requests":null},
                "service_tier":"standard"}});
        assert_eq!(
            usage_from_message(body.to_string().as_bytes()),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 34,
                cache_read_tokens: 56,
                cache_write_5m_tokens: 30,
                cache_write_1h_tokens: 40,
                web_search_requests: 1,
                web_fetch_requests: 0,
            })
        );
        assert_eq!(usage_from_message(b"{\"usage\":{}}"), None);
        assert_eq!(usage_from_message(b"{\"usage\":null}"), None);
        assert_eq!(usage_from_message(b"{\"usage\":7}"), None);
        assert_eq!(usage_from_message(br#"{"model":[1],"usage":"x"}"#), None);
        assert_eq!(
            usage_from_message(br#"{"model":true,"usage":[{"input_tokens":2}]}"#),
            None
        );
        assert_eq!(
            usage_from_message(br#"{"model":{"a":[1]},"usage":{"input_tokens":2}}"#)
                .map(|u| u.input_tokens),
            Some(2)
        );
        assert_eq!(usage_from_message(b"{}"), None);
        assert_eq!(usage_from_message(b"not json"), None);
        assert_eq!(
            usage_from_message(br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#),
            None
        );
        assert_eq!(
            usage_from_message(br#"{"usage":{"output_tokens":3}}"#).map(|u| u.output_tokens),
            Some(3)
        );
    }
}
