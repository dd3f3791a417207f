//! Reads usage out of an upstream's SSE stream while the stream's bytes are relayed to the
//! client unchanged.
//!
//! [`UsageParser`] is pure, synchronous code fed the same chunks the relay forwards, cut
//! wherever the network cut them. It never re-serializes anything and keeps only what billing
//! needs: it buffers the `data:` of `message_start`, `message_delta`, `message_stop` and
//! `error` events, and skips the data of every other event (the content deltas that make up
//! nearly all of a long stream) without copying it.
//!
//! Usage counts in the stream are cumulative: each report replaces the previous value of the
//! fields it carries, and a field it omits keeps its value. So at any moment
//! [`UsageParser::usage`] is the best known bill, which is what a cut stream is billed at.

use memchr::{memchr2, memchr3};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::Usage;

/// The most data one event may carry before it is dropped. Usage events are a few hundred
/// bytes; the cap only matters for events without an `event:` line, whose data must be
/// buffered to learn their type.
const MAX_EVENT_DATA: usize = 4 << 20;
/// Field names we act on are at most five bytes; anything longer is some other field.
const MAX_FIELD_NAME: usize = 8;
/// The longest event name we act on is 13 bytes; longer names are other events.
const MAX_EVENT_NAME: usize = 32;
/// After an unusually large event, a buffer bigger than this is released rather than kept
/// for the lifetime of the stream.
const RETAINED_DATA_CAPACITY: usize = 64 << 10;

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
    line: LineState,
    /// The previous chunk ended in `\r`: a `\n` opening this one belongs to the same line end.
    after_cr: bool,
    field_name: [u8; MAX_FIELD_NAME],
    field_name_len: usize,
    field_name_too_long: bool,
    event_name: [u8; MAX_EVENT_NAME],
    event_name_len: usize,
    event_name_too_long: bool,

    /// The current event's type from its `event:` line; `None` until one is seen.
    event: Option<EventKind>,
    data: Vec<u8>,
    data_lines: usize,
    /// Some of the current event's data was not kept (skipped, or over the cap), so the event
    /// cannot be read.
    data_lost: bool,

    tally: Tally,
    saw_start: bool,
    completed: bool,
    errored: bool,
    stop_reason: Option<String>,
    error_type: Option<String>,
    model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// At the start of a line.
    Start,
    /// Reading a field name.
    Name,
    /// Just after the colon: one space may follow before the value.
    AfterColon(Field),
    /// Keeping a value's bytes (an event name, or data worth reading).
    Value(Field),
    /// Discarding the rest of the line.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    MessageStart,
    MessageDelta,
    MessageStop,
    Error,
    Other,
}

impl EventKind {
    fn from_name(name: &[u8]) -> EventKind {
        match name {
            b"message_start" => EventKind::MessageStart,
            b"message_delta" => EventKind::MessageDelta,
            b"message_stop" => EventKind::MessageStop,
            b"error" => EventKind::Error,
            _ => EventKind::Other,
        }
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
            line: LineState::Start,
            after_cr: false,
            field_name: [0; MAX_FIELD_NAME],
            field_name_len: 0,
            field_name_too_long: false,
            event_name: [0; MAX_EVENT_NAME],
            event_name_len: 0,
            event_name_too_long: false,
            event: None,
            data: Vec::new(),
            data_lines: 0,
            data_lost: false,
            tally: Tally::default(),
            saw_start: false,
            completed: false,
            errored: false,
            stop_reason: None,
            error_type: None,
            model: None,
        }
    }

    /// Reads the next bytes of the stream, cut anywhere.
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
        let mut feed = Feed::default();
        let mut rest = chunk;
        while let Some((&first, tail)) = rest.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                    continue;
                }
            }
            match self.line {
                LineState::Start => match first {
                    b'\n' | b'\r' => {
                        self.after_cr = first == b'\r';
                        rest = tail;
                        self.dispatch(&mut feed);
                    }
                    b':' => {
                        // A comment line.
                        self.line = LineState::Skip;
                        rest = tail;
                    }
                    _ => {
                        self.field_name_len = 0;
                        self.field_name_too_long = false;
                        self.line = LineState::Name;
                    }
                },
                LineState::Name => match memchr3(b':', b'\n', b'\r', rest) {
                    None => {
                        self.push_field_name(rest);
                        rest = &[];
                    }
                    Some(i) => {
                        let (name, end) = rest.split_at(i);
                        self.push_field_name(name);
                        let field = self.field();
                        match end.split_first() {
                            Some((b':', after)) => {
                                self.line = LineState::AfterColon(field);
                                rest = after;
                            }
                            Some((&terminator, after)) => {
                                // A line without a colon names a field with an empty value.
                                if let LineState::Value(field) = self.begin_value(field) {
                                    self.end_value(field);
                                }
                                self.end_line(terminator);
                                rest = after;
                            }
                            None => rest = &[],
                        }
                    }
                },
                LineState::AfterColon(field) => {
                    if first == b' ' {
                        rest = tail;
                    }
                    self.line = self.begin_value(field);
                }
                LineState::Value(field) => match memchr2(b'\n', b'\r', rest) {
                    None => {
                        self.push_value(field, rest);
                        rest = &[];
                    }
                    Some(i) => {
                        let (value, end) = rest.split_at(i);
                        self.push_value(field, value);
                        self.end_value(field);
                        if let Some((&terminator, after)) = end.split_first() {
                            self.end_line(terminator);
                            rest = after;
                        } else {
                            rest = &[];
                        }
                    }
                },
                LineState::Skip => match memchr2(b'\n', b'\r', rest) {
                    None => rest = &[],
                    Some(i) => {
                        let (_, end) = rest.split_at(i);
                        if let Some((&terminator, after)) = end.split_first() {
                            self.end_line(terminator);
                            rest = after;
                        } else {
                            rest = &[];
                        }
                    }
                },
            }
        }
        feed
    }

    /// Cumulative usage as of the last complete event.
    pub fn usage(&self) -> Usage {
        self.tally.usage()
    }

    /// A `message_start` event carrying the prompt's usage has been read.
    pub fn saw_message_start(&self) -> bool {
        self.saw_start
    }

    /// A `message_stop` event has been read: the upstream finished the message.
    pub fn completed(&self) -> bool {
        self.completed
    }

    /// The latest `message_delta.delta.stop_reason`.
    pub fn stop_reason(&self) -> Option<&str> {
        self.stop_reason.as_deref()
    }

    /// `error.type` of an `event: error` event.
    pub fn error_type(&self) -> Option<&str> {
        self.error_type.as_deref()
    }

    /// An `error` event arrived, even one whose data could not be read (so that
    /// [`UsageParser::error_type`] is `None`).
    pub fn errored(&self) -> bool {
        self.errored
    }

    /// `message_start.message.model`: the model the upstream says it ran.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn push_field_name(&mut self, bytes: &[u8]) {
        let end = self.field_name_len + bytes.len();
        match self.field_name.get_mut(self.field_name_len..end) {
            Some(slot) if !self.field_name_too_long => {
                slot.copy_from_slice(bytes);
                self.field_name_len = end;
            }
            _ => self.field_name_too_long = true,
        }
    }

    fn field(&self) -> Field {
        if self.field_name_too_long {
            return Field::Other;
        }
        match self.field_name.get(..self.field_name_len) {
            Some(b"event") => Field::Event,
            Some(b"data") => Field::Data,
            _ => Field::Other,
        }
    }

    /// Decides what to do with the value of `field`, now that its line has reached the value.
    fn begin_value(&mut self, field: Field) -> LineState {
        match field {
            Field::Event => {
                self.event_name_len = 0;
                self.event_name_too_long = false;
                LineState::Value(Field::Event)
            }
            Field::Data => {
                self.data_lines += 1;
                if self.data_lost {
                    return LineState::Skip;
                }
                if self.event == Some(EventKind::Other) {
                    // The bulk of a stream: content deltas and pings. Not worth a copy; should
                    // a later `event:` line turn this into an event we read, it is dropped.
                    self.data_lost = true;
                    return LineState::Skip;
                }
                if self.data_lines > 1 {
                    // Data lines of one event are joined by a line feed.
                    self.push_data(b"\n");
                    if self.data_lost {
                        return LineState::Skip;
                    }
                }
                LineState::Value(Field::Data)
            }
            Field::Other => LineState::Skip,
        }
    }

    fn push_value(&mut self, field: Field, bytes: &[u8]) {
        match field {
            Field::Event => {
                let end = self.event_name_len + bytes.len();
                match self.event_name.get_mut(self.event_name_len..end) {
                    Some(slot) if !self.event_name_too_long => {
                        slot.copy_from_slice(bytes);
                        self.event_name_len = end;
                    }
                    _ => self.event_name_too_long = true,
                }
            }
            Field::Data => {
                self.push_data(bytes);
                if self.data_lost {
                    self.line = LineState::Skip;
                }
            }
            Field::Other => {}
        }
    }

    fn push_data(&mut self, bytes: &[u8]) {
        if self.data.len() + bytes.len() > MAX_EVENT_DATA {
            self.data_lost = true;
            self.data.clear();
        } else {
            self.data.extend_from_slice(bytes);
        }
    }

    fn end_value(&mut self, field: Field) {
        if field == Field::Event {
            self.event = if self.event_name_too_long {
                Some(EventKind::Other)
            } else {
                match self.event_name.get(..self.event_name_len) {
                    // An empty `event:` leaves the type unset, as if there were no such line.
                    None | Some([]) => None,
                    Some(name) => Some(EventKind::from_name(name)),
                }
            };
        }
    }

    fn end_line(&mut self, terminator: u8) {
        self.line = LineState::Start;
        self.after_cr = terminator == b'\r';
    }

    /// A blank line ends the event: act on it and start the next.
    fn dispatch(&mut self, feed: &mut Feed) {
        let kind = self.event.take();
        let has_data = std::mem::take(&mut self.data_lines) > 0;
        let lost = std::mem::take(&mut self.data_lost);
        // Events without data are not dispatched, as in the SSE specification.
        if has_data && !lost {
            let data = std::mem::take(&mut self.data);
            match kind {
                Some(EventKind::Other) => {}
                Some(kind) => self.handle(kind, &data, feed),
                None => {
                    // No `event:` line: the SDKs would drop this event, but the upstream still
                    // reported what it reports, so the JSON's own type decides.
                    if let Some(event) = parse_wire::<Obj<WireEvent>>(&data) {
                        let kind = match &event.0.kind {
                            Loose::Got(name) => EventKind::from_name(name.as_bytes()),
                            _ => EventKind::Other,
                        };
                        self.apply(kind, Some(event.0), feed);
                    }
                }
            }
            self.data = data;
        }
        self.data.clear();
        if self.data.capacity() > RETAINED_DATA_CAPACITY {
            self.data = Vec::new();
        }
    }

    fn handle(&mut self, kind: EventKind, data: &[u8], feed: &mut Feed) {
        let event = match kind {
            // Its data says nothing billing needs; the event itself is the news.
            EventKind::MessageStop | EventKind::Other => None,
            _ => parse_wire::<Obj<WireEvent>>(data).map(|event| event.0),
        };
        self.apply(kind, event, feed);
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
            EventKind::Other => {}
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

// The wire types read only the fields billing needs and tolerate anything odd in them: a
// value of an unexpected type counts as absent rather than failing the whole event, because
// losing a `message_start` to one strange field would under-bill the request.

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

/// Reads `T` from JSON in one pass. The only thing that pass refuses in valid JSON is a key
/// repeated inside one of our objects (derived deserializers reject duplicate fields), which
/// would lose the whole event; such a document is read again through `serde_json::Value`, which
/// keeps the last occurrence of a key, as JavaScript's `JSON.parse` does.
fn parse_wire<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) if error.is_data() => {
            let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            serde_json::from_value(value).ok()
        }
        Err(_) => None,
    }
}

/// A value that is either what we expect, or absent (missing or null), or something else.
///
/// Read in one pass, without buffering the value first (as `#[serde(untagged)]` would): it is
/// on the path of every response and every stream event.
#[derive(Debug, Default)]
enum Loose<T> {
    Got(T),
    #[default]
    Absent,
    Odd,
}

/// What a [`Loose`] value's visitor does with each JSON shape: `Absent` for null, `Odd` for
/// anything `T` is not made from (skipping over arrays and objects), and `Got` for the shape
/// the implementation reads.
macro_rules! loose_visitor_defaults {
    ($value:ty) => {
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok(Loose::Absent)
        }
        fn visit_none<E: de::Error>(self) -> Result<$value, E> {
            Ok(Loose::Absent)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Loose::Odd)
        }
    };
}

/// A string field.
impl<'de> Deserialize<'de> for Loose<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Loose<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            loose_visitor_defaults!(Loose<String>);
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<String>, E> {
                Ok(Loose::Got(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<String>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Odd)
            }
        }
        deserializer.deserialize_any(StrVisitor)
    }
}

/// An object field.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<Obj<T>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjFieldVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjFieldVisitor<T> {
            type Value = Loose<Obj<T>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            loose_visitor_defaults!(Loose<Obj<T>>);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Loose<Obj<T>>, E> {
                Ok(Loose::Odd)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<Obj<T>>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|value| Loose::Got(Obj(value)))
            }
        }
        deserializer.deserialize_any(ObjFieldVisitor(std::marker::PhantomData))
    }
}

/// A JSON object read as `T`. Derived struct deserializers also accept arrays (fields by
/// position); usage numbers taken from an array would be nonsense, so only objects are read.
#[derive(Debug)]
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjVisitor(std::marker::PhantomData))
    }
}

struct ObjVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
    }
}

/// A token count: a non-negative integer, or `None` for null and anything else.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        Ok(Count(Some(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        Ok(Count(u64::try_from(v).ok()))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Count, E> {
        Ok(Count(None))
    }

    // Counts are integers; a fractional or exponent form is not one we can bill exactly.
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count(None))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Count, D::Error> {
        Count::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count(None))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const MINIMAL: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

    fn parse(stream: &[u8]) -> UsageParser {
        let mut p = UsageParser::new();
        p.feed(stream);
        p
    }

    fn event(name: &str, data: &serde_json::Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    fn start(usage: serde_json::Value) -> String {
        event(
            "message_start",
            &json!({"type":"message_start","message":{"id":"msg_1","type":"message",
                "role":"assistant","content":[],"model":"claude-opus-5-5","stop_reason":null,
                "usage":usage}}),
        )
    }

    fn delta(usage: serde_json::Value) -> String {
        event(
            "message_delta",
            &json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":usage}),
        )
    }

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
    fn nothing_before_the_first_event_completes() {
        let mut p = UsageParser::new();
        let cut = MINIMAL.find("}}}").unwrap();
        assert!(!p.feed(&MINIMAL.as_bytes()[..cut]).message_started);
        assert!(p.usage().is_zero());
        assert!(!p.saw_message_start());
        // The event completes only at the blank line.
        let blank = MINIMAL.find("\n\n").unwrap();
        assert!(!p.feed(&MINIMAL.as_bytes()[cut..=blank]).message_started);
        assert!(
            p.feed(&MINIMAL.as_bytes()[blank + 1..blank + 2])
                .message_started
        );
        assert_eq!(p.usage().input_tokens, 25);
        assert!(!p.completed());
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
    fn crlf_and_cr_line_endings() {
        for ending in ["\r\n", "\r"] {
            let stream = MINIMAL.replace('\n', ending);
            let p = parse(stream.as_bytes());
            assert_eq!(p.usage().output_tokens, 15, "{ending:?}");
            assert_eq!(p.usage().input_tokens, 25, "{ending:?}");
            assert!(p.completed(), "{ending:?}");
            assert_eq!(p.stop_reason(), Some("end_turn"));
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_line_end() {
        let stream = MINIMAL.replace('\n', "\r\n");
        let bytes = stream.as_bytes();
        let whole = parse(bytes);
        for (i, pair) in bytes.windows(2).enumerate() {
            if pair == b"\r\n" {
                let mut p = UsageParser::new();
                p.feed(&bytes[..=i]);
                p.feed(&bytes[i + 1..]);
                assert_eq!(p.usage(), whole.usage());
                assert!(p.completed());
            }
        }
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
    fn event_line_after_data_still_names_the_event() {
        let p = parse(b"data: {\"usage\":{\"output_tokens\":3}}\nevent: message_delta\n\n");
        assert_eq!(p.usage().output_tokens, 3);
        // Data skipped as another event's cannot be read once the name changes.
        let p = parse(
            b"event: ping\ndata: {\"usage\":{\"output_tokens\":3}}\nevent: message_delta\n\n",
        );
        assert_eq!(p.usage().output_tokens, 0);
    }

    #[test]
    fn multi_line_data_is_joined_with_line_feeds() {
        let stream = "event: message_delta\ndata: {\"type\":\"message_delta\",\ndata:\"usage\":\ndata: {\"output_tokens\":\ndata:77}}\n\n";
        assert_eq!(parse(stream.as_bytes()).usage().output_tokens, 77);
    }

    #[test]
    fn comments_spacing_and_unknown_fields() {
        let stream = ": keep-alive\n\
            id: 1\n\
            retry: 100\n\
            event:message_delta\n\
            :another comment\n\
            data:{\"usage\":{\"output_tokens\":5}}\n\
            \n\
            event:  message_delta\n\
            data: {\"usage\":{\"output_tokens\":99}}\n\
            \n\
            eventually: message_delta\n\
            data: {\"usage\":{\"output_tokens\":6}}\n\n";
        // Only one space after the colon is optional; "  message_delta" names another event.
        // "eventually" is not the event field, so its event is untyped and has no type.
        let p = parse(stream.as_bytes());
        assert_eq!(p.usage().output_tokens, 5);
    }

    #[test]
    fn events_without_data_or_blank_line_do_nothing() {
        let p = parse(b"event: message_stop\n\n");
        assert!(!p.completed());
        let p = parse(b"event: message_stop\ndata: {}\n");
        assert!(!p.completed());
        let p = parse(b"event: message_stop\ndata\n\n");
        assert!(p.completed());
    }

    #[test]
    fn a_repeated_key_does_not_lose_the_event() {
        // The last occurrence counts, as in JSON.parse.
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + "event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"end_turn\",\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3,\"output_tokens\":500}}\n\n";
        assert_eq!(parse(stream.as_bytes()).usage().output_tokens, 500);
        assert_eq!(
            usage_from_message(
                br#"{"usage":{"input_tokens":4,"cache_creation":{"ephemeral_1h_input_tokens":1,"ephemeral_1h_input_tokens":2},"output_tokens":7}}"#
            )
            .map(|u| (u.input_tokens, u.cache_write_1h_tokens, u.output_tokens)),
            Some((4, 2, 7))
        );
    }

    #[test]
    fn odd_values_count_as_absent() {
        let stream =
            start(json!({"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}))
                + &delta(
                    json!({"output_tokens":"12","input_tokens":-1,"cache_read_input_tokens":2.5,
                "server_tool_use":"lots","cache_creation":[1,2]}),
                )
                + &delta(json!({"output_tokens":{"a":[1]}}));
        let u = parse(stream.as_bytes()).usage();
        assert_eq!(
            u,
            Usage {
                input_tokens: 10,
                output_tokens: 1,
                cache_read_tokens: 4,
                ..Usage::default()
            }
        );
        let p = parse(
            b"event: message_start\ndata: {\"message\":{\"model\":5,\"usage\":{\"input_tokens\":3}}}\n\n",
        );
        assert!(p.saw_message_start());
        assert_eq!(p.model(), None);
        assert_eq!(p.usage().input_tokens, 3);
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
    fn malformed_json_is_ignored() {
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + "event: message_delta\ndata: {\"usage\":{\"output_tokens\":5\n\n"
            + "event: message_delta\ndata: [1,2,3]\n\n"
            + "event: message_delta\ndata: \n\n";
        let p = parse(stream.as_bytes());
        assert_eq!(p.usage().output_tokens, 1);
    }

    #[test]
    fn other_events_are_not_buffered() {
        let mut p = UsageParser::new();
        p.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"");
        for _ in 0..64 {
            p.feed(&[b'x'; 16 * 1024]);
            assert_eq!(p.data.capacity(), 0);
        }
        p.feed(b"\"}}\n\n");
        p.feed(MINIMAL.as_bytes());
        assert_eq!(p.usage().output_tokens, 15);
    }

    #[test]
    fn oversized_untyped_event_is_dropped() {
        let mut p = UsageParser::new();
        p.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5},\"pad\":\"");
        let pad = vec![b'y'; 1 << 20];
        for _ in 0..5 {
            p.feed(&pad);
        }
        p.feed(b"\"}\n\n");
        assert_eq!(p.usage().output_tokens, 0);
        assert!(p.data.capacity() <= RETAINED_DATA_CAPACITY);
        p.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n");
        assert_eq!(p.usage().output_tokens, 5);
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

    /// Everything a parser exposes, for comparing two runs.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        usage: Usage,
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
