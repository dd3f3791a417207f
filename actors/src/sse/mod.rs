//! Reads usage out of an upstream's SSE stream while the stream's bytes are relayed to the
//! client unchanged, but for its error events ([`WholeEvents`]).
//!
//! [`UsageParser`] is pure, synchronous code fed the same chunks the relay forwards, cut
//! wherever the network cut them. It never re-serializes anything and keeps only what billing
//! needs: it buffers the `data:` of `message_start`, `content_block_start` (one per block),
//! `message_delta`, `message_stop` and `error` events, and skips the data of every other event (the content deltas that make up
//! nearly all of a long stream) without copying it.
//!
//! Usage counts in the stream are cumulative: a field a report omits keeps its value, and
//! each class keeps the largest value reported. So at any moment [`UsageParser::usage`] is
//! the best known count, and [`UsageParser::report`] adds what billing needs when the final
//! usage never comes: whether it came, and how many bytes of output the content deltas
//! carried (measured while they are skipped, never copied).
//!
//! Three layers, each with its tests, and the relay's view:
//! - `framing`: SSE bytes into events, whatever the chunk boundaries, and where each lies;
//! - `anthropic`: what `message_start`, `message_delta`, `message_stop` and `error` mean
//!   for the bill, and [`usage_from_message`] for a non-streaming body;
//! - `lenient`: the JSON reader that takes only the fields billing needs and treats odd
//!   values as absent;
//! - `whole`: what the client is sent: the stream's bytes, with its error events replaced.

mod anthropic;
mod framing;
mod lenient;
#[cfg(test)]
mod testing;
mod whole;

pub use whole::{WholeEvents, WITHHOLD_LIMIT};

pub use anthropic::{report_from_message, usage_from_message};

use anthropic::{EventKind, StreamReport, CONTENT_BLOCK_DELTA};
use framing::{Dispatch, Framer};

use crate::usage::UsageReport;
use crate::Usage;

/// What one [`UsageParser::feed`] call learned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// A `message_start` event's usage was parsed during this call: the real prompt is known
    /// and the request's hold can be re-sized to it.
    pub message_started: bool,
}

/// Incremental parser of the usage, stop reason and errors in an Anthropic SSE stream.
#[derive(Debug, Clone)]
pub struct UsageParser {
    framer: Framer<EventKind>,
    report: StreamReport,
}

/// One [`UsageParser::feed`] call: the events it completes go to the report, and what they
/// taught is collected for the caller.
struct Reading<'a> {
    report: &'a mut StreamReport,
    feed: Feed,
}

impl Dispatch for Reading<'_> {
    type Kind = EventKind;

    fn kind(name: &[u8]) -> Option<EventKind> {
        EventKind::from_name(name)
    }

    fn measures(name: &[u8]) -> bool {
        name == CONTENT_BLOCK_DELTA
    }

    fn replaced(kind: EventKind) -> bool {
        kind == EventKind::Error
    }

    fn event(&mut self, kind: Option<EventKind>, data: &[u8]) -> bool {
        self.report.event(kind, data, &mut self.feed) == Some(EventKind::Error)
    }

    fn measured(&mut self, data_bytes: usize) {
        self.report.content_delta(data_bytes);
    }
}

impl Default for UsageParser {
    fn default() -> Self {
        UsageParser::new()
    }
}

impl UsageParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        UsageParser {
            framer: Framer::new(),
            report: StreamReport::default(),
        }
    }

    /// Reads the next bytes of the stream, cut anywhere.
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
        let mut reading = Reading {
            report: &mut self.report,
            feed: Feed::default(),
        };
        self.framer.feed(chunk, &mut reading);
        reading.feed
    }

    /// Cumulative usage as of the last complete event.
    pub fn usage(&self) -> Usage {
        self.report.usage()
    }

    /// What billing needs to know of the stream so far: the usage, whether it is final, the
    /// output the content deltas relayed, and any absurd count.
    pub fn report(&self) -> UsageReport {
        let mut report = self.report.report();
        report.relayed_output_bytes = report
            .relayed_output_bytes
            .saturating_add(anthropic::delta_payload(self.framer.measuring()));
        report
    }

    /// A `message_start` event carrying the prompt's usage has been read.
    pub fn saw_message_start(&self) -> bool {
        self.report.saw_message_start()
    }

    /// A `message_stop` event has been read: the upstream finished the message.
    pub fn completed(&self) -> bool {
        self.report.completed()
    }

    /// The latest `message_delta.delta.stop_reason`.
    pub fn stop_reason(&self) -> Option<&str> {
        self.report.stop_reason()
    }

    /// `error.type` of an `event: error` event.
    pub fn error_type(&self) -> Option<&str> {
        self.report.error_type()
    }

    /// An `error` event arrived, even one whose data could not be read (so that
    /// [`UsageParser::error_type`] is `None`).
    pub fn errored(&self) -> bool {
        self.report.errored()
    }

    /// `message_start.message.model`: the model the upstream says it ran.
    pub fn model(&self) -> Option<&str> {
        self.report.model()
    }

    /// Bytes fed so far.
    fn fed(&self) -> u64 {
        self.framer.fed()
    }

    /// Offset where the event in progress began.
    fn event_start(&self) -> u64 {
        self.framer.event_start()
    }

    /// Whether the event in progress is an `error` event, by its first `event:` line.
    fn open_event(&self) -> framing::OpenEvent {
        self.framer.open_event()
    }

    /// The error events completed since the last call: where they lie, and their data.
    /// Error events have completed since they were last taken.
    fn has_replaced(&self) -> bool {
        self.framer.has_replaced()
    }

    fn take_replaced(&mut self) -> Vec<framing::Replaced> {
        self.framer.take_replaced()
    }

    /// A parser that also notes where the stream's error events lie, for the relay.
    fn replacing() -> Self {
        let mut parser = UsageParser::new();
        parser.framer.keep_replaced();
        parser
    }
}

/// Whole streams, generated and cut at random: whatever the chunk boundaries, the parser
/// learns what it learns from the whole stream, and no input makes it panic.
#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Everything a parser exposes, for comparing two runs.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        usage: Usage,
        report: UsageReport,
        saw_start: bool,
        starts_signalled: usize,
        completed: bool,
        stop_reason: Option<String>,
        error_type: Option<String>,
        errored: bool,
        model: Option<String>,
    }

    fn run<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut p = UsageParser::new();
        let starts_signalled = chunks
            .into_iter()
            .filter(|chunk| p.feed(chunk).message_started)
            .count();
        Outcome {
            usage: p.usage(),
            report: p.report(),
            saw_start: p.saw_message_start(),
            starts_signalled,
            completed: p.completed(),
            stop_reason: p.stop_reason().map(str::to_owned),
            error_type: p.error_type().map(str::to_owned),
            errored: p.errored(),
            model: p.model().map(str::to_owned),
        }
    }

    /// Usage numbers of one generated stream.
    #[derive(Debug, Clone)]
    struct Plan {
        input: u64,
        cache_read: u64,
        cache_5m: u64,
        cache_1h: u64,
        breakdown: bool,
        searches: Option<u64>,
        /// Cumulative output reported by each message_delta.
        outputs: Vec<u64>,
        /// Some deltas also repeat the input count.
        repeat_input: bool,
        texts: Vec<String>,
        pings: Vec<bool>,
        ending: &'static str,
        space: bool,
        split_data: bool,
        stop: bool,
        error: bool,
    }

    fn tricky_text() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a",
            "Hello",
            " ",
            "\n",
            "\r\n",
            "\r",
            "\"",
            "\\",
            "data: ",
            "event: message_stop",
            "\n\n",
            ":",
            "{",
            "}",
            "é",
            "日本",
            "🦀",
            "\u{2028}",
            "\t",
            "\u{0}",
        ]);
        prop::collection::vec(pieces, 0..12).prop_map(|p| p.concat())
    }

    fn plan() -> impl Strategy<Value = Plan> {
        (
            (0u64..2_000_000, 0u64..500_000, 0u64..100_000, 0u64..100_000),
            (any::<bool>(), prop::option::of(0u64..20), any::<bool>()),
            prop::collection::vec(0u64..5_000, 1..4),
            prop::collection::vec((tricky_text(), any::<bool>()), 0..6),
            (
                prop::sample::select(vec!["\n", "\r\n", "\r"]),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (input, cache_read, cache_5m, cache_1h),
                    (breakdown, searches, repeat_input),
                    mut outputs,
                    blocks,
                    (ending, space, split_data, stop, error),
                )| {
                    outputs.sort_unstable();
                    let (texts, pings) = blocks.into_iter().unzip();
                    Plan {
                        input,
                        cache_read,
                        cache_5m,
                        cache_1h,
                        breakdown,
                        searches,
                        outputs,
                        repeat_input,
                        texts,
                        pings,
                        ending,
                        space,
                        split_data,
                        stop,
                        error,
                    }
                },
            )
    }

    impl Plan {
        fn render(&self) -> String {
            let mut lines: Vec<String> = Vec::new();
            let sp = if self.space { " " } else { "" };
            let ev = |lines: &mut Vec<String>, name: &str, data: &[String]| {
                lines.push(format!("event:{sp}{name}"));
                for d in data {
                    lines.push(format!("data:{sp}{d}"));
                }
                lines.push(String::new());
            };
            let mut usage = json!({
                "input_tokens": self.input,
                "output_tokens": 1,
                "cache_read_input_tokens": self.cache_read,
                "cache_creation_input_tokens": self.cache_5m + self.cache_1h,
                "service_tier": "standard",
            });
            if self.breakdown {
                usage["cache_creation"] = json!({
                    "ephemeral_5m_input_tokens": self.cache_5m,
                    "ephemeral_1h_input_tokens": self.cache_1h,
                });
            }
            if let Some(n) = self.searches {
                usage["server_tool_use"] = json!({"web_search_requests": n});
            }
            let start = json!({"type":"message_start","message":{"id":"msg_x","type":"message",
                "role":"assistant","content":[],"model":"claude-haiku-5-5","stop_reason":null,
                "stop_sequence":null,"usage":usage}});
            ev(&mut lines, "message_start", &[start.to_string()]);
            for (i, (text, ping)) in self.texts.iter().zip(&self.pings).enumerate() {
                if *ping {
                    ev(&mut lines, "ping", &[json!({"type":"ping"}).to_string()]);
                    lines.push(format!(": keep-alive {i}"));
                }
                let block = json!({"type":"content_block_start","index":i,
                    "content_block":{"type":"text","text":""}});
                ev(&mut lines, "content_block_start", &[block.to_string()]);
                let d = json!({"type":"content_block_delta","index":i,
                    "delta":{"type":"text_delta","text":text}});
                ev(&mut lines, "content_block_delta", &[d.to_string()]);
                ev(
                    &mut lines,
                    "content_block_stop",
                    &[json!({"type":"content_block_stop","index":i}).to_string()],
                );
            }
            for (i, out) in self.outputs.iter().enumerate() {
                let mut usage = json!({"output_tokens": out});
                if self.repeat_input && i % 2 == 0 {
                    usage["input_tokens"] = json!(self.input);
                    usage["cache_creation_input_tokens"] = json!(self.cache_5m + self.cache_1h);
                }
                let delta = json!({"stop_reason":"end_turn","stop_sequence":null});
                if self.split_data {
                    ev(
                        &mut lines,
                        "message_delta",
                        &[
                            format!("{{\"type\":\"message_delta\",\"delta\":{delta},"),
                            format!("\"usage\":{usage}}}"),
                        ],
                    );
                } else {
                    let data = json!({"type":"message_delta","delta":delta,"usage":usage});
                    ev(&mut lines, "message_delta", &[data.to_string()]);
                }
            }
            if self.error {
                let e =
                    json!({"type":"error","error":{"type":"overloaded_error","message":"x\ny"}});
                ev(&mut lines, "error", &[e.to_string()]);
            }
            if self.stop {
                ev(
                    &mut lines,
                    "message_stop",
                    &[json!({"type":"message_stop"}).to_string()],
                );
            }
            let mut out = String::new();
            for line in lines {
                out.push_str(&line);
                out.push_str(self.ending);
            }
            out
        }

        /// The JSON-escaped bytes of the text deltas: what the parser measures.
        fn payload_bytes(&self) -> u64 {
            self.texts
                .iter()
                .map(|text| json!(text).to_string().len() as u64 - 2)
                .sum()
        }

        fn expected(&self) -> Usage {
            let (w5, w1) = if self.breakdown {
                (self.cache_5m, self.cache_1h)
            } else {
                (self.cache_5m + self.cache_1h, 0)
            };
            Usage {
                input_tokens: self.input,
                output_tokens: self.outputs.last().copied().unwrap_or(1),
                cache_read_tokens: self.cache_read,
                cache_write_5m_tokens: w5,
                cache_write_1h_tokens: w1,
                web_search_requests: self.searches.unwrap_or(0),
                web_fetch_requests: 0,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_split_parses_like_the_whole(
            plan in plan(),
            sizes in prop::collection::vec(1usize..64, 1..200),
        ) {
            let text = plan.render();
            let s = text.as_bytes();
            let whole = run([s]);
            prop_assert_eq!(whole.usage, plan.expected());
            prop_assert!(whole.report.final_usage);
            prop_assert!(!whole.report.absurd_count);
            prop_assert_eq!(whole.report.relayed_output_bytes, plan.payload_bytes());
            prop_assert!(whole.saw_start);
            prop_assert_eq!(whole.starts_signalled, 1);
            prop_assert_eq!(whole.completed, plan.stop);
            prop_assert_eq!(whole.errored, plan.error);
            prop_assert_eq!(whole.stop_reason.as_deref(), Some("end_turn"));
            prop_assert_eq!(whole.model.as_deref(), Some("claude-haiku-5-5"));

            for i in 0..=s.len() {
                let (a, b) = s.split_at(i);
                prop_assert_eq!(&run([a, b]), &whole, "split at {}", i);
            }

            let mut chunks = Vec::new();
            let mut rest = s;
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }
            prop_assert_eq!(&run(chunks), &whole);
            prop_assert_eq!(&run(s.chunks(1)), &whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..4096),
            sizes in prop::collection::vec(1usize..512, 1..16),
        ) {
            let mut p = UsageParser::new();
            let mut rest = bytes.as_slice();
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*size).min(rest.len()));
                p.feed(chunk);
                rest = tail;
            }
            let _ = (p.usage(), p.stop_reason(), p.model(), p.error_type());
            let _ = usage_from_message(&bytes);
        }

        #[test]
        fn sse_like_noise_never_panics(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "event: message_start\n", "event: message_delta\n", "event: error\n",
                "event: message_stop\n", "event:", "data: ", "data:", "\n", "\r", "\r\n", ":",
                "{\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":",
                "{\"usage\":{\"output_tokens\":", "{\"error\":{\"type\":", "\"x\"", "null",
                "18446744073709551615", "18446744073709551616", "-1", "1e3", "}", "{", "[",
                "]", ",", "\"cache_creation\":{\"ephemeral_1h_input_tokens\":", "9",
            ]), 0..200),
        ) {
            let stream = pieces.concat();
            let mut p = UsageParser::new();
            for chunk in stream.as_bytes().chunks(7) {
                p.feed(chunk);
            }
            let _ = p.usage();
            let _ = usage_from_message(stream.as_bytes());
        }
    }
}
