//! What Anthropic's stream events mean for billing: `message_start` and `message_delta` carry
//! cumulative usage, `message_stop` ends the message, `error` reports a failure. A
//! [`StreamReport`] folds the events it is given into the bill known so far.
//!
//! Usage counts are cumulative: each report replaces the previous value of the fields it
//! carries, and a field it omits keeps its value.

use serde::Deserialize;

use super::lenient::{parse_wire, Count, Loose, Obj};
use super::Feed;
use crate::Usage;

/// The event types billing reads; every other type is skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventKind {
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
}

impl EventKind {
    /// The type an event name (or a JSON `type`) stands for; `None` for the events billing
    /// does not read (content blocks, pings, and anything new).
    pub(super) fn from_name(name: &[u8]) -> Option<EventKind> {
        match name {
            b"message_start" => Some(EventKind::MessageStart),
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
    completed: bool,
    errored: bool,
    stop_reason: Option<String>,
    error_type: Option<String>,
    model: Option<String>,
}

impl StreamReport {
    /// Applies one complete event. `kind` is its `event:` line's type; without one, the JSON's
    /// own `type` decides. A `message_start` whose usage names the prompt is noted in `feed`.
    pub(super) fn event(&mut self, kind: Option<EventKind>, data: &[u8], feed: &mut Feed) {
        match kind {
            Some(kind) => {
                let event = match kind {
                    // Its data says nothing billing needs; the event itself is the news.
                    EventKind::MessageStop => None,
                    _ => parse_wire::<Obj<WireEvent>>(data).map(|event| event.0),
                };
                self.apply(kind, event, feed);
            }
            None => {
                // No `event:` line: the SDKs would drop this event, but the upstream still
                // reported what it reports, so the JSON's own type decides.
                if let Some(Obj(event)) = parse_wire::<Obj<WireEvent>>(data) {
                    let kind = match &event.kind {
                        Loose::Got(name) => EventKind::from_name(name.as_bytes()),
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        self.apply(kind, Some(event), feed);
                    }
                }
            }
        }
    }

    /// Cumulative usage as of the last complete event.
    pub(super) fn usage(&self) -> Usage {
        self.tally.usage()
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
                if let Loose::Got(Obj(usage)) = &event.usage {
                    self.tally.apply(usage);
                }
                if let Loose::Got(Obj(WireDelta {
                    stop_reason: Loose::Got(reason),
                })) = event.delta
                {
                    self.stop_reason = Some(reason);
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

/// Usage of a non-streaming response body (a complete Message JSON); None if it has no usable
/// `usage` object.
///
/// "Usable" means an object with at least one count in it; the counts follow the same rules
/// as in a stream (null is absent, a missing breakdown bills cache writes at the 5-minute
/// rate).
pub fn usage_from_message(body: &[u8]) -> Option<Usage> {
    let Obj(message) = parse_wire::<Obj<WireMessage>>(body)?;
    let Loose::Got(Obj(usage)) = message.usage else {
        return None;
    };
    let mut tally = Tally::default();
    tally.apply(&usage).any.then(|| tally.usage())
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
    web_search: Option<u64>,
    web_fetch: Option<u64>,
}

/// Which counts one usage object carried.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Any count at all.
    any: bool,
    /// A count of some prompt class.
    prompt: bool,
}

impl Tally {
    fn apply(&mut self, usage: &WireUsage) -> Seen {
        let mut seen = Seen::default();
        let mut prompt = |slot: &mut Option<u64>, count: Count| {
            if let Count(Some(n)) = count {
                *slot = Some(n);
                seen.prompt = true;
            }
        };
        prompt(&mut self.input, usage.input_tokens);
        prompt(&mut self.cache_read, usage.cache_read_input_tokens);
        prompt(
            &mut self.cache_creation_total,
            usage.cache_creation_input_tokens,
        );
        if let Loose::Got(Obj(breakdown)) = &usage.cache_creation {
            prompt(&mut self.breakdown_5m, breakdown.ephemeral_5m_input_tokens);
            prompt(&mut self.breakdown_1h, breakdown.ephemeral_1h_input_tokens);
        }
        seen.any = seen.prompt;
        let mut other = |slot: &mut Option<u64>, count: Count| {
            if let Count(Some(n)) = count {
                *slot = Some(n);
                seen.any = true;
            }
        };
        other(&mut self.output, usage.output_tokens);
        if let Loose::Got(Obj(tools)) = &usage.server_tool_use {
            other(&mut self.web_search, tools.web_search_requests);
            other(&mut self.web_fetch, tools.web_fetch_requests);
        }
        seen
    }

    fn usage(&self) -> Usage {
        let (cache_write_5m_tokens, cache_write_1h_tokens) =
            match (self.breakdown_5m, self.breakdown_1h) {
                // Without a breakdown every cache write is billed at the 5-minute class.
                (None, None) => (self.cache_creation_total.unwrap_or(0), 0),
                (five, one) => {
                    let (five, one) = (five.unwrap_or(0), one.unwrap_or(0));
                    match self.cache_creation_total {
                        // A later total that disagrees with the breakdown wins; the 1-hour part
                        // is known, so the difference must be 5-minute writes.
                        Some(total) if total != five.saturating_add(one) => {
                            (total.saturating_sub(one), one)
                        }
                        _ => (five, one),
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireMessage {
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
        let shrunk = base + &delta(json!({"output_tokens":2,"cache_creation_input_tokens":100}));
        let u = parse(shrunk.as_bytes()).usage();
        assert_eq!((u.cache_write_5m_tokens, u.cache_write_1h_tokens), (0, 400));
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
