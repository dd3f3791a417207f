//! SSE framing: bytes, cut wherever the network cut them, into events (a type from the
//! `event:` line and the joined `data:` lines), as the SSE specification reads them.
//!
//! The framer knows nothing of what the events mean. The [`Dispatch`] it feeds names the event
//! types worth reading; the data of every other event is skipped as it arrives, without a copy,
//! which is what keeps a long stream of content deltas cheap to watch. One skipped type may be
//! measured: its data's length is added up while it is skipped, at no cost but an addition.
//!
//! It also keeps the place in the stream where the current event began, and the place of
//! every event the dispatch wants replaced, so that the relay can send whole events and put
//! its own in place of the upstream's errors ([`super::whole`]).

use memchr::{memchr2, memchr3};

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
pub(super) const RETAINED_DATA_CAPACITY: usize = 64 << 10;

/// Where framed events go.
pub(super) trait Dispatch {
    /// The event types the dispatch reads.
    type Kind: Copy;

    /// The type an `event:` line names, or `None` for an event not worth reading: its data is
    /// skipped and it is never dispatched.
    fn kind(name: &[u8]) -> Option<Self::Kind>;

    /// An event type not read but measured: its data is skipped and only its length is
    /// handed to [`Dispatch::measured`].
    fn measures(_name: &[u8]) -> bool {
        false
    }

    /// An event of this type is never relayed as it came, even when its data was too long to
    /// read: the relay puts its own event in its place.
    fn replaced(_kind: Self::Kind) -> bool {
        false
    }

    /// A complete event with data: its type (`None` when it had no `event:` line, so that only
    /// its data can tell) and its `data:` lines joined by line feeds. Returns whether the
    /// event is to be replaced rather than relayed.
    fn event(&mut self, kind: Option<Self::Kind>, data: &[u8]) -> bool;

    /// A complete measured event and the bytes of its `data:` values.
    fn measured(&mut self, _data_bytes: usize) {}
}

/// What the current event's `event:` line said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventName<K> {
    /// No `event:` line (or an empty one) yet.
    Untyped,
    /// A type the dispatch reads.
    Read(K),
    /// A type the dispatch measures: its data is not kept, only its length.
    Measured,
    /// Any other type: its data is not kept.
    Ignored,
}

/// An event to be replaced: where it lies in the stream, and the start of its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Replaced {
    /// Offset of its first byte: the end of the event before it.
    pub(super) start: u64,
    /// Offset just past its blank line.
    pub(super) end: u64,
    /// Its data, up to [`REPLACED_DATA_KEPT`] bytes; empty if it was too long to keep.
    pub(super) data: Vec<u8>,
    /// It had data, so it was an event and gets a replacement; without, it is only dropped
    /// (an SSE reader ignores it too).
    pub(super) is_event: bool,
}

/// The event in progress, as far as relaying its bytes goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpenEvent {
    /// No `event:` line has named its type yet: it may still turn out to be replaced.
    Undecided,
    /// Its first `event:` line names a type that is replaced.
    Replaced,
    /// Its first `event:` line names a type that is relayed as it comes.
    Relayed,
}

/// How much of a replaced event's data is kept for whoever words its replacement. An
/// upstream's error event is a few hundred bytes.
const REPLACED_DATA_KEPT: usize = 64 << 10;

/// An incremental SSE reader: one per stream, fed every chunk in order.
#[derive(Debug, Clone)]
pub(super) struct Framer<K> {
    /// Bytes fed before the current chunk.
    fed: u64,
    /// Offset where the current event began: just past the last complete event.
    event_start: u64,
    /// Events to be replaced, completed since they were last taken; kept only when
    /// `keeps_replaced`.
    replaced: Vec<Replaced>,
    keeps_replaced: bool,
    /// Whether the current event is relayed or replaced: the first `event:` line decides,
    /// so that the decision does not depend on where the chunks were cut.
    relay_class: OpenEvent,
    line: LineState,
    /// The previous chunk ended in `\r`: a `\n` opening this one belongs to the same line end.
    after_cr: bool,
    field_name: [u8; MAX_FIELD_NAME],
    field_name_len: usize,
    field_name_too_long: bool,
    event_name: [u8; MAX_EVENT_NAME],
    event_name_len: usize,
    event_name_too_long: bool,

    /// The current event's type from its `event:` line.
    event: EventName<K>,
    data: Vec<u8>,
    data_lines: usize,
    /// Some of the current event's data was not kept (skipped, or over the cap), so the event
    /// cannot be read.
    data_lost: bool,
    /// Bytes of data skipped for a measured event.
    measured: usize,
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
    /// Discarding the rest of a measured event's data line, counting its bytes.
    Measure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
    Other,
}

impl<K: Copy> Framer<K> {
    /// A framer at the start of a stream.
    pub(super) fn new() -> Self {
        Framer {
            fed: 0,
            event_start: 0,
            replaced: Vec::new(),
            keeps_replaced: false,
            relay_class: OpenEvent::Undecided,
            line: LineState::Start,
            after_cr: false,
            field_name: [0; MAX_FIELD_NAME],
            field_name_len: 0,
            field_name_too_long: false,
            event_name: [0; MAX_EVENT_NAME],
            event_name_len: 0,
            event_name_too_long: false,
            event: EventName::Untyped,
            data: Vec::new(),
            data_lines: 0,
            data_lost: false,
            measured: 0,
        }
    }

    /// Reads the next bytes of the stream, cut anywhere, and dispatches every event they
    /// complete.
    pub(super) fn feed<D: Dispatch<Kind = K>>(&mut self, chunk: &[u8], dispatch: &mut D) {
        let mut rest = chunk;
        while let Some((&first, tail)) = rest.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                    // The LF of a blank line's CRLF belongs to the event the CR ended, not to
                    // the next one (whose bytes would wait for its `event:` line).
                    let after = self.fed.saturating_add(offset(chunk.len() - rest.len()));
                    if self.line == LineState::Start && self.event_start.saturating_add(1) == after
                    {
                        self.event_start = after;
                    }
                    continue;
                }
            }
            match self.line {
                LineState::Start => match first {
                    b'\n' | b'\r' => {
                        self.after_cr = first == b'\r';
                        rest = tail;
                        let end = self.fed.saturating_add(offset(chunk.len() - rest.len()));
                        self.dispatch(dispatch, end);
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
                                    self.end_value::<D>(field);
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
                        self.end_value::<D>(field);
                        if let Some((&terminator, after)) = end.split_first() {
                            self.end_line(terminator);
                            rest = after;
                        } else {
                            rest = &[];
                        }
                    }
                },
                LineState::Skip | LineState::Measure => {
                    let skipped = memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
                    if self.line == LineState::Measure {
                        self.measured = self.measured.saturating_add(skipped);
                    }
                    let (_, end) = rest.split_at(skipped);
                    if let Some((&terminator, after)) = end.split_first() {
                        self.end_line(terminator);
                        rest = after;
                    } else {
                        rest = &[];
                    }
                }
            }
        }
        self.fed = self.fed.saturating_add(offset(chunk.len()));
    }

    /// Bytes fed so far.
    pub(super) fn fed(&self) -> u64 {
        self.fed
    }

    /// Offset where the event in progress began: every byte before it belongs to a complete
    /// event (or to the blank lines and comments between events).
    pub(super) fn event_start(&self) -> u64 {
        self.event_start
    }

    /// What the relay may do with the bytes of the event in progress so far.
    pub(super) fn open_event(&self) -> OpenEvent {
        self.relay_class
    }

    /// From now on, note the events to be replaced, for [`Framer::take_replaced`]. A framer
    /// that only reads usage keeps none.
    pub(super) fn keep_replaced(&mut self) {
        self.keeps_replaced = true;
    }

    /// Events to be replaced have completed since they were last taken.
    pub(super) fn has_replaced(&self) -> bool {
        !self.replaced.is_empty()
    }

    /// The events to be replaced that completed since the last call, oldest first.
    pub(super) fn take_replaced(&mut self) -> Vec<Replaced> {
        std::mem::take(&mut self.replaced)
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
                if matches!(self.event, EventName::Measured) {
                    return LineState::Measure;
                }
                if matches!(self.event, EventName::Ignored) {
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

    fn end_value<D: Dispatch<Kind = K>>(&mut self, field: Field) {
        if field == Field::Event {
            self.event = if self.event_name_too_long {
                EventName::Ignored
            } else {
                match self.event_name.get(..self.event_name_len) {
                    // An empty `event:` leaves the type unset, as if there were no such line.
                    None | Some([]) => EventName::Untyped,
                    Some(name) => match D::kind(name) {
                        Some(kind) => EventName::Read(kind),
                        None if D::measures(name) => EventName::Measured,
                        None => EventName::Ignored,
                    },
                }
            };
            if self.relay_class == OpenEvent::Undecided {
                self.relay_class = match self.event {
                    EventName::Untyped => OpenEvent::Undecided,
                    EventName::Read(kind) if D::replaced(kind) => OpenEvent::Replaced,
                    _ => OpenEvent::Relayed,
                };
            }
        }
    }

    fn end_line(&mut self, terminator: u8) {
        self.line = LineState::Start;
        self.after_cr = terminator == b'\r';
    }

    /// Bytes of data counted so far for a measured event not yet complete: a stream cut
    /// mid-delta relayed them all the same, to a client that reads raw bytes.
    pub(super) fn measuring(&self) -> usize {
        match self.event {
            EventName::Measured => self.measured.saturating_add(self.data.len()),
            _ => 0,
        }
    }

    /// A blank line, ending at offset `end`, ends the event: hand it over and start the next.
    fn dispatch<D: Dispatch<Kind = K>>(&mut self, dispatch: &mut D, end: u64) {
        let event = std::mem::replace(&mut self.event, EventName::Untyped);
        let has_data = std::mem::take(&mut self.data_lines) > 0;
        let lost = std::mem::take(&mut self.data_lost);
        let measured = std::mem::take(&mut self.measured);
        // Events without data are not dispatched, as in the SSE specification.
        let said_replaced = match event {
            _ if !has_data || lost => false,
            EventName::Ignored => false,
            // Data kept before the `event:` line named the type counts too.
            EventName::Measured => {
                dispatch.measured(measured.saturating_add(self.data.len()));
                false
            }
            EventName::Read(kind) => dispatch.event(Some(kind), &self.data),
            EventName::Untyped => dispatch.event(None, &self.data),
        };
        let replaced = match std::mem::replace(&mut self.relay_class, OpenEvent::Undecided) {
            OpenEvent::Replaced => true,
            OpenEvent::Relayed => false,
            OpenEvent::Undecided => said_replaced,
        };
        if replaced && self.keeps_replaced {
            let kept = match self.data.get(..REPLACED_DATA_KEPT) {
                _ if lost => &[][..],
                Some(start) => start,
                None => &self.data[..],
            };
            self.replaced.push(Replaced {
                start: self.event_start,
                end,
                data: kept.to_vec(),
                is_event: has_data,
            });
        }
        self.event_start = end;
        self.data.clear();
        if self.data.capacity() > RETAINED_DATA_CAPACITY {
            self.data = Vec::new();
        }
    }
}

/// A length within one chunk as a stream offset.
fn offset(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{parse, MINIMAL};
    use super::super::UsageParser;
    use super::*;
    use proptest::prelude::*;

    /// Records every event it is handed; reads `keep` and `other`, ignores the rest.
    #[derive(Debug, Default, PartialEq)]
    struct Recorder(Vec<(Option<bool>, Vec<u8>)>);

    impl Dispatch for Recorder {
        type Kind = bool;

        fn kind(name: &[u8]) -> Option<bool> {
            match name {
                b"keep" => Some(true),
                b"other" => Some(false),
                _ => None,
            }
        }

        fn event(&mut self, kind: Option<bool>, data: &[u8]) -> bool {
            self.0.push((kind, data.to_vec()));
            false
        }
    }

    fn frame<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Recorder {
        let mut framer = Framer::new();
        let mut recorder = Recorder::default();
        for chunk in chunks {
            framer.feed(chunk, &mut recorder);
        }
        recorder
    }

    #[test]
    fn events_are_typed_joined_and_filtered() {
        let stream = b"event: keep\ndata: a\ndata:b\n\n\
            event: skipped\ndata: never copied\n\n\
            data: untyped\r\n\r\n\
            : a comment\nid: 7\nevent:other\ndata\n\n\
            event: keep\n\n";
        assert_eq!(
            frame([&stream[..]]).0,
            vec![
                (Some(true), b"a\nb".to_vec()),
                (None, b"untyped".to_vec()),
                (Some(false), Vec::new()),
            ]
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
    fn other_events_are_not_buffered() {
        let mut p = UsageParser::new();
        p.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"");
        for _ in 0..64 {
            p.feed(&[b'x'; 16 * 1024]);
            assert_eq!(p.framer.data.capacity(), 0);
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
        assert!(p.framer.data.capacity() <= RETAINED_DATA_CAPACITY);
        p.feed(b"data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":5}}\n\n");
        assert_eq!(p.usage().output_tokens, 5);
    }

    proptest! {
        #[test]
        fn any_split_frames_like_the_whole(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "event: keep\n", "event: other\n", "event: skipped\n", "event:", "data: x",
                "data:", "data", "id: 1", ": c", "\n", "\r", "\r\n", " ", "y",
            ]), 0..60),
            at in any::<prop::sample::Index>(),
        ) {
            let stream = pieces.concat();
            let bytes = stream.as_bytes();
            let whole = frame([bytes]);
            let (a, b) = bytes.split_at(at.index(bytes.len() + 1));
            prop_assert_eq!(&frame([a, b]), &whole);
            prop_assert_eq!(&frame(bytes.chunks(1)), &whole);
        }
    }
}
