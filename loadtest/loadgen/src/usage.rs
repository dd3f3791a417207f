//! What a response says it consumed, read by loadgen itself.
//!
//! Reconciliation compares tollgate's books with what the clients were served, so the two
//! sides must not share code: if loadgen read usage with tollgate's own parser, a parser bug
//! would bill and "reconcile" the same wrong count. This reader is deliberately small and
//! written differently from tollgate's incremental one. It splits the stream into lines,
//! keeps the `data:` of the few events that carry usage or end the stream, and parses them
//! as plain JSON values.
//!
//! The rules it applies are the Messages API's (shared/reference/anthropic-api.md):
//! - `message_start.message.usage` and `message_delta.usage` report **cumulative** counts. For
//!   each class the largest count seen is kept, so a report that omits a field, or repeats an
//!   older figure, loses nothing.
//! - The 5-minute/1-hour split of cache writes comes from the `cache_creation` breakdown.
//!   Without one, every cache write (`cache_creation_input_tokens`) is a 5-minute write. A
//!   total larger than the breakdown counts the difference as 5-minute writes.
//! - `server_tool_use.web_search_requests` counts web searches, priced per use.

use mock_anthropic::PlannedUsage;
use serde::Serialize;
use serde_json::Value;

/// A line longer than this is not kept whole: usage events are a few hundred bytes, so such
/// a line can only be content, and the stream's memory stays bounded.
const MAX_LINE: usize = 1 << 20;

/// What one request consumed, in the classes that are priced separately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Tokens written to the 5-minute cache.
    pub cache_write_5m_tokens: u64,
    /// Tokens written to the 1-hour cache.
    pub cache_write_1h_tokens: u64,
    /// Server-side web searches.
    pub web_search_requests: u64,
}

impl Usage {
    /// The prompt's length, which selects a long-prompt price tier: input, cache reads and
    /// both cache writes.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_5m_tokens)
            .saturating_add(self.cache_write_1h_tokens)
    }
}

impl From<&PlannedUsage> for Usage {
    fn from(plan: &PlannedUsage) -> Usage {
        Usage {
            input_tokens: plan.input_tokens,
            output_tokens: plan.output_tokens,
            cache_read_tokens: plan.cache_read_tokens,
            cache_write_5m_tokens: plan.cache_write_5m_tokens,
            cache_write_1h_tokens: plan.cache_write_1h_tokens,
            web_search_requests: plan.web_search_requests,
        }
    }
}

/// The largest count of each class seen so far. The breakdown of cache writes is `None` until
/// some report carried it, because its absence changes how the total is split.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
    cache_5m: Option<u64>,
    cache_1h: Option<u64>,
    web_search: u64,
    /// Some report carried at least one count.
    any: bool,
}

/// `object[key]` as a count; anything but a non-negative integer is no count.
fn count(object: &Value, key: &str) -> Option<u64> {
    object.get(key).and_then(Value::as_u64)
}

impl Counts {
    /// Takes in one `usage` object.
    fn add(&mut self, usage: &Value) {
        let mut larger = |slot: &mut u64, seen: Option<u64>| {
            if let Some(n) = seen {
                *slot = (*slot).max(n);
                self.any = true;
            }
        };
        larger(&mut self.input, count(usage, "input_tokens"));
        larger(&mut self.output, count(usage, "output_tokens"));
        larger(
            &mut self.cache_read,
            count(usage, "cache_read_input_tokens"),
        );
        larger(
            &mut self.cache_creation,
            count(usage, "cache_creation_input_tokens"),
        );
        if let Some(tools) = usage.get("server_tool_use") {
            larger(&mut self.web_search, count(tools, "web_search_requests"));
        }
        if let Some(breakdown) = usage.get("cache_creation").filter(|b| b.is_object()) {
            for (slot, key) in [
                (&mut self.cache_5m, "ephemeral_5m_input_tokens"),
                (&mut self.cache_1h, "ephemeral_1h_input_tokens"),
            ] {
                if let Some(n) = count(breakdown, key) {
                    *slot = Some(slot.unwrap_or(0).max(n));
                    self.any = true;
                }
            }
        }
    }

    fn usage(&self) -> Usage {
        let (five, one) = match (self.cache_5m, self.cache_1h) {
            (None, None) => (self.cache_creation, 0),
            (five, one) => {
                let one = one.unwrap_or(0);
                let beyond = self.cache_creation.saturating_sub(one);
                (five.unwrap_or(0).max(beyond), one)
            }
        };
        Usage {
            input_tokens: self.input,
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_5m_tokens: five,
            cache_write_1h_tokens: one,
            web_search_requests: self.web_search,
        }
    }
}

/// The events the reader acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    /// Output: its data is measured, not kept.
    ContentDelta,
    /// Pings and anything new: their data is not kept.
    Other,
}

/// The JSON of an empty text delta: tollgate counts the bytes of a content delta's data
/// beyond this much as output relayed.
const DELTA_ENVELOPE: usize =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#.len();

impl Event {
    fn named(name: &[u8]) -> Event {
        match name {
            b"message_start" => Event::MessageStart,
            b"message_delta" => Event::MessageDelta,
            b"message_stop" => Event::MessageStop,
            b"error" => Event::Error,
            b"content_block_delta" => Event::ContentDelta,
            _ => Event::Other,
        }
    }
}

/// Reads the usage, the end and the errors of an SSE response, fed its body in chunks cut
/// anywhere. Lines end in `\n` or `\r\n`.
#[derive(Debug, Default)]
pub struct StreamReader {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The current line grew beyond [`MAX_LINE`]: the rest of it is dropped.
    partial_dropped: bool,
    /// The current event's name, from its `event:` line.
    event: Option<Event>,
    /// The current event's data lines, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
    counts: Counts,
    /// Data bytes of the current content delta.
    delta_bytes: usize,
    /// Output bytes of the content deltas, beyond their envelope.
    content_bytes: u64,
    /// A `message_delta` brought a stop reason and an output count: the usage is final.
    final_usage: bool,
    completed: bool,
    error_type: Option<String>,
    errored: bool,
}

impl StreamReader {
    pub fn new() -> StreamReader {
        StreamReader::default()
    }

    /// Reads the next bytes of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(end);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() && !self.partial_dropped {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                if !self.partial_dropped {
                    whole.extend_from_slice(line);
                    self.line(&whole);
                }
                self.partial_dropped = false;
                whole.clear();
                self.partial = whole;
            }
        }
        if self.partial_dropped {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.partial.clear();
            self.partial_dropped = true;
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    /// The usage reported so far: the bill of a stream cut here.
    pub fn usage(&self) -> Usage {
        self.counts.usage()
    }

    /// What tollgate bills for the stream read so far: the usage reported, and, until the
    /// final usage arrived, at least one output token per byte of the content deltas (its
    /// estimate of output whose count never came), never more than `max_tokens`.
    ///
    /// Limits: this assumes tollgate's `metering.hold_bytes_per_token` is 1 (the default and
    /// the shipped config); against a tollgate with a larger divisor it over-predicts the bill
    /// of a cut stream. It also ignores tollgate's `max_tokens` rule for streams that began
    /// a thinking block (the mock sends none).
    pub fn billed_usage(&self, max_tokens: u64) -> Usage {
        let mut usage = self.usage();
        if !self.final_usage {
            usage.output_tokens = usage.output_tokens.max(self.content_bytes);
        }
        usage.output_tokens = usage.output_tokens.min(max_tokens);
        usage
    }

    /// `message_stop` arrived: the stream is complete.
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// An `event: error` arrived.
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// The `error.type` of the `event: error`, if it had one.
    pub fn error_type(&self) -> Option<&str> {
        self.error_type.as_deref()
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.dispatch();
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (field, value) = line.split_at(colon);
                let value = value.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.event = Some(Event::named(value)),
            // The data of content events is most of a stream and says nothing about usage.
            b"data" if self.event == Some(Event::ContentDelta) => {
                self.delta_bytes += value.len();
                self.has_data = true;
            }
            b"data" if self.event != Some(Event::Other) => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"data" => self.has_data = true,
            // Comments (an empty field name), `id:`, `retry:` and unknown fields.
            _ => {}
        }
    }

    /// A blank line ends an event; one without data is not dispatched, as SSE specifies.
    fn dispatch(&mut self) {
        let event = self.event.take();
        let has_data = std::mem::take(&mut self.has_data);
        let data = std::mem::take(&mut self.data);
        let delta_bytes = std::mem::take(&mut self.delta_bytes);
        if !has_data {
            return;
        }
        if event == Some(Event::ContentDelta) {
            self.content_bytes += delta_bytes.saturating_sub(DELTA_ENVELOPE) as u64;
            self.data = data;
            return;
        }
        let json = serde_json::from_slice::<Value>(&data).ok();
        // Without an `event:` line, the JSON's own `type` says what the event is.
        let event = event.unwrap_or_else(|| {
            let kind = json
                .as_ref()
                .and_then(|j| j.get("type"))
                .and_then(Value::as_str);
            Event::named(kind.unwrap_or_default().as_bytes())
        });
        let json = json.unwrap_or(Value::Null);
        match event {
            Event::MessageStart => {
                if let Some(usage) = json.get("message").and_then(|m| m.get("usage")) {
                    self.counts.add(usage);
                }
            }
            Event::MessageDelta => {
                if let Some(usage) = json.get("usage") {
                    self.counts.add(usage);
                    let stopped = json
                        .get("delta")
                        .and_then(|d| d.get("stop_reason"))
                        .is_some_and(Value::is_string);
                    self.final_usage |= stopped && count(usage, "output_tokens").is_some();
                }
            }
            Event::MessageStop => self.completed = true,
            Event::Error => {
                self.errored = true;
                let kind = json.get("error").and_then(|e| e.get("type"));
                self.error_type = kind.and_then(Value::as_str).map(str::to_string);
            }
            Event::ContentDelta | Event::Other => {}
        }
        // The buffer is reused for the next event.
        self.data = data;
        self.data.clear();
    }
}

/// The usage of a non-streaming response (a whole Message); `None` when the body has no
/// `usage` object with at least one count in it.
pub fn message_usage(body: &[u8]) -> Option<Usage> {
    let message: Value = serde_json::from_slice(body).ok()?;
    let mut counts = Counts::default();
    counts.add(message.get("usage")?);
    counts.any.then(|| counts.usage())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(name: &str, data: &Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start(usage: Value) -> String {
        event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": "msg_1", "usage": usage}}),
        )
    }

    fn delta(usage: Value) -> String {
        event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
        )
    }

    fn content(text: &str) -> String {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        )
    }

    fn stop() -> String {
        event("message_stop", &json!({"type": "message_stop"}))
    }

    fn read(stream: &str) -> StreamReader {
        let mut reader = StreamReader::new();
        reader.feed(stream.as_bytes());
        reader
    }

    #[test]
    fn the_references_minimal_stream() {
        let stream = [
            start(json!({"input_tokens": 25, "output_tokens": 1})),
            content("Hello"),
            event("ping", &json!({"type": "ping"})),
            delta(json!({"output_tokens": 15})),
            stop(),
        ]
        .concat();
        let reader = read(&stream);
        assert!(reader.completed() && !reader.errored());
        assert_eq!(
            reader.usage(),
            Usage {
                input_tokens: 25,
                output_tokens: 15,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn any_chunk_boundaries_read_the_same() {
        let stream = [
            start(
                json!({"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 300,
                         "cache_creation_input_tokens": 160,
                         "cache_creation": {"ephemeral_5m_input_tokens": 120,
                                            "ephemeral_1h_input_tokens": 40}}),
            ),
            content("a: b\r\n"),
            delta(json!({"output_tokens": 9, "input_tokens": 7})),
            stop(),
        ]
        .concat()
        .replace('\n', "\r\n");
        let whole = read(&stream).usage();
        assert_eq!(whole.cache_write_5m_tokens, 120);
        assert_eq!(whole.output_tokens, 9);
        let bytes = stream.as_bytes();
        for size in [1, 2, 3, 7, 64] {
            let mut reader = StreamReader::new();
            for chunk in bytes.chunks(size) {
                reader.feed(chunk);
            }
            assert_eq!(reader.usage(), whole, "chunks of {size}");
            assert!(reader.completed());
        }
    }

    #[test]
    fn the_largest_count_of_each_class_wins() {
        let stream = [
            start(json!({"input_tokens": 50, "output_tokens": 1, "cache_read_input_tokens": 10})),
            delta(json!({"output_tokens": 30})),
            // A later report with smaller or missing figures takes nothing away.
            delta(json!({"output_tokens": 20, "input_tokens": 0})),
        ]
        .concat();
        let reader = read(&stream);
        assert!(!reader.completed(), "no message_stop: a cut stream");
        assert_eq!(
            reader.usage(),
            Usage {
                input_tokens: 50,
                output_tokens: 30,
                cache_read_tokens: 10,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn without_the_final_usage_the_bill_counts_a_token_per_relayed_byte() {
        let started = start(json!({"input_tokens": 50, "output_tokens": 1}))
            + &content("Hello")
            + &content(" world");
        let cut = read(&started);
        assert_eq!(cut.billed_usage(1000).output_tokens, 11);
        assert_eq!(
            cut.billed_usage(8).output_tokens,
            8,
            "never past max_tokens"
        );
        assert_eq!(cut.usage().output_tokens, 1);
        // The final message_delta's count stands once it came.
        let done = read(&(started + &delta(json!({"output_tokens": 2}))));
        assert_eq!(done.billed_usage(1000).output_tokens, 2);
    }

    #[test]
    fn cache_writes_split_by_the_breakdown_or_else_at_five_minutes() {
        let with = read(&start(json!({
            "cache_creation_input_tokens": 12,
            "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 7}
        })))
        .usage();
        assert_eq!(
            (with.cache_write_5m_tokens, with.cache_write_1h_tokens),
            (5, 7)
        );
        let without = read(&start(json!({"cache_creation_input_tokens": 12}))).usage();
        assert_eq!(
            (without.cache_write_5m_tokens, without.cache_write_1h_tokens),
            (12, 0)
        );
        // The delta repeats the total without the breakdown; a larger total is 5-minute writes.
        let grown = [
            start(json!({"cache_creation_input_tokens": 12,
                         "cache_creation": {"ephemeral_5m_input_tokens": 5,
                                            "ephemeral_1h_input_tokens": 7}})),
            delta(json!({"output_tokens": 3, "cache_creation_input_tokens": 15})),
        ]
        .concat();
        let grown = read(&grown).usage();
        assert_eq!(
            (grown.cache_write_5m_tokens, grown.cache_write_1h_tokens),
            (8, 7)
        );
    }

    #[test]
    fn web_searches_are_counted() {
        let stream = [
            start(json!({"input_tokens": 3, "server_tool_use": {"web_search_requests": 1}})),
            delta(json!({"output_tokens": 4, "server_tool_use": {"web_search_requests": 2}})),
        ]
        .concat();
        assert_eq!(read(&stream).usage().web_search_requests, 2);
    }

    #[test]
    fn an_error_event_is_seen_with_its_type() {
        let stream = [
            start(json!({"input_tokens": 3, "output_tokens": 1})),
            content("partial"),
            event(
                "error",
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
            ),
        ]
        .concat();
        let reader = read(&stream);
        assert!(reader.errored() && !reader.completed());
        assert_eq!(reader.error_type(), Some("overloaded_error"));
        assert_eq!(reader.usage().input_tokens, 3);
    }

    #[test]
    fn odd_streams_are_read_without_failing() {
        // No `event:` line: the JSON's type decides. Comments, unknown fields, bad JSON, an
        // event without data and a count of the wrong type are passed over.
        let stream = format!(
            ": keep-alive\nid: 4\ndata: {}\n\nevent: message_delta\ndata: {{not json\n\n\
             event: message_stop\n\n{}",
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 9,
                                                                   "output_tokens": "many"}}}),
            delta(json!({"output_tokens": -1})),
        );
        let reader = read(&stream);
        assert!(
            !reader.completed(),
            "message_stop without data is not dispatched"
        );
        assert_eq!(
            reader.usage(),
            Usage {
                input_tokens: 9,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn a_huge_content_line_is_dropped_and_reading_goes_on() {
        let mut reader = StreamReader::new();
        reader.feed(start(json!({"input_tokens": 2})).as_bytes());
        reader.feed(b"event: content_block_delta\ndata: ");
        let filler = vec![b'x'; MAX_LINE / 4];
        for _ in 0..6 {
            reader.feed(&filler);
        }
        assert!(reader.partial.len() <= MAX_LINE);
        reader.feed(b"\n\n");
        reader.feed(
            [delta(json!({"output_tokens": 5})), stop()]
                .concat()
                .as_bytes(),
        );
        assert!(reader.completed());
        assert_eq!(reader.usage().output_tokens, 5);
    }

    #[test]
    fn a_message_body_reports_its_usage() {
        let body = json!({
            "id": "msg_1", "type": "message", "content": [],
            "usage": {"input_tokens": 11, "output_tokens": 4, "cache_read_input_tokens": 2,
                      "cache_creation_input_tokens": 3}
        });
        assert_eq!(
            message_usage(body.to_string().as_bytes()),
            Some(Usage {
                input_tokens: 11,
                output_tokens: 4,
                cache_read_tokens: 2,
                cache_write_5m_tokens: 3,
                ..Usage::default()
            })
        );
        assert_eq!(message_usage(br#"{"id":"msg_1"}"#), None);
        assert_eq!(message_usage(br#"{"usage":{}}"#), None);
        assert_eq!(message_usage(b"<html>"), None);
    }

    #[test]
    fn prompt_tokens_add_input_and_every_cache_class() {
        let usage = Usage {
            input_tokens: 1,
            output_tokens: 100,
            cache_read_tokens: 20,
            cache_write_5m_tokens: 300,
            cache_write_1h_tokens: 4000,
            web_search_requests: 9,
        };
        assert_eq!(usage.prompt_tokens(), 4321);
    }
}
