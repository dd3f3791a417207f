//! The bytes a client is sent of an upstream's stream: the upstream's, as they come, except
//! its `error` events, which are replaced by tollgate's own
//! (docs/adr/0015-upstream-error-messages-rewritten.md).
//!
//! An error event's message can name the operator's organization, its credit balance or its
//! rate limits, so it must not reach the client. The relay knows an event is an error once
//! its `event:` line has named the type, so the bytes of an event whose type is not yet
//! known are withheld until it is: in Anthropic's streams the `event:` line comes first, so
//! that is a few dozen bytes, and only when a chunk ends inside that line. From then on an
//! event of any other type is relayed as its bytes arrive, and an `error` event is dropped;
//! its replacement goes out at its blank line. An event with no `event:` line is withheld
//! whole, since only its data can tell it is an error (the SDKs ignore such events). A chunk
//! that holds whole events is relayed as it is, without a copy.
//!
//! An event's first `event:` line decides, so that what the client gets does not depend on
//! where the network cut the chunks: an event named something else first and `error` later
//! is relayed (Anthropic names each event once; an upstream that wanted to leak words could
//! put them in a text delta all the same).
//!
//! Withholding is bounded by [`WITHHOLD_LIMIT`]: an event with no type past it (its data, or
//! comments and `id:` lines, before any `event:` line) is relayed as it comes. Should it
//! then turn out to be an error, its start has gone out; its rest is dropped, and the
//! replacement follows as an event of its own.
//!
//! The withheld bytes of an event the stream never finished are never sent: no SSE reader
//! acts on an unfinished event, and they may be the start of an error. Only a stream's first
//! error event is replaced; an upstream that sends more has the rest dropped.

use bytes::{Buf, Bytes, BytesMut};

use super::framing::OpenEvent;
use super::{Feed, UsageParser};

/// The most bytes of one event in progress held back from the client. An upstream's events
/// are a few hundred bytes; a content delta is rarely more than a few kilobytes.
pub const WITHHOLD_LIMIT: usize = 64 << 10;

/// A stream's usage parser and what it withholds from the client: one per stream, fed every
/// chunk in order.
#[derive(Debug, Default)]
pub struct WholeEvents {
    parser: UsageParser,
    /// The bytes of the event in progress not yet relayed: those from `done` to the end of
    /// what was fed.
    withheld: BytesMut,
    /// Offset up to which the stream's bytes were relayed, dropped or withheld.
    done: u64,
    /// The start of the event in progress, when some of its bytes were relayed before the
    /// event was complete.
    relayed_early: Option<u64>,
    /// An error event has been replaced; later ones are dropped.
    replaced_one: bool,
}

impl WholeEvents {
    /// At the start of a stream.
    pub fn new() -> Self {
        WholeEvents {
            parser: UsageParser::replacing(),
            ..WholeEvents::default()
        }
    }

    /// What the stream has reported so far.
    pub fn parser(&self) -> &UsageParser {
        &self.parser
    }

    /// Reads the next chunk and appends to `out` the bytes to send the client, in order.
    /// `replace` words the event that takes an upstream error event's place, from the error
    /// event's data (empty if it was too long to keep).
    pub fn feed(
        &mut self,
        chunk: Bytes,
        replace: &mut dyn FnMut(&[u8]) -> Bytes,
        out: &mut Vec<Bytes>,
    ) -> Feed {
        let chunk_start = self.parser.fed();
        let feed = self.parser.feed(&chunk);
        let end = self.parser.fed();
        // Nearly every chunk: nothing withheld before it, no error in it, and it ends between
        // events or inside one being relayed. It goes out as it came.
        if self.done == chunk_start
            && !self.parser.has_replaced()
            && (self.parser.event_start() == end || self.parser.open_event() == OpenEvent::Relayed)
        {
            self.done = end;
            out.push(chunk);
            return feed;
        }
        let mut cursor = Cursor {
            withheld: &mut self.withheld,
            chunk: &chunk,
            chunk_start,
            at: self.done,
        };
        for event in self.parser.take_replaced() {
            if self.relayed_early == Some(event.start) {
                // Its start went out past the withholding limit: end that line and that
                // event, so that the replacement reads as an event of its own.
                out.push(Bytes::from_static(b"\n\n"));
            }
            cursor.relay_to(event.start, out);
            cursor.drop_to(event.end);
            // Anthropic ends a stream at its error; an upstream that sends more gets its
            // first one replaced and the rest dropped, so that it cannot multiply what the
            // client is sent and what the log keeps.
            if event.is_event && !self.replaced_one {
                self.replaced_one = true;
                out.push(replace(&event.data));
            }
        }
        let open_start = self.parser.event_start();
        if self.relayed_early.is_some_and(|start| start != open_start) {
            self.relayed_early = None;
        }
        let relay_to = match self.parser.open_event() {
            OpenEvent::Replaced => {
                cursor.relay_to(open_start, out);
                cursor.drop_to(end);
                None
            }
            OpenEvent::Relayed => Some(end),
            OpenEvent::Undecided
                if end.saturating_sub(open_start.max(cursor.at)) > offset(WITHHOLD_LIMIT) =>
            {
                // Only an event of unknown type can turn out to be an error once some of it
                // has gone out.
                self.relayed_early = Some(open_start);
                Some(end)
            }
            OpenEvent::Undecided => Some(open_start),
        };
        if let Some(to) = relay_to {
            // One slice of the chunk where one will do.
            cursor.relay_to(to, out);
        }
        self.done = cursor.withhold_rest();
        feed
    }
}

/// The bytes of one feed not yet dealt with: the withheld ones, then the new chunk's.
struct Cursor<'a> {
    withheld: &'a mut BytesMut,
    chunk: &'a Bytes,
    /// Offset of the chunk's first byte.
    chunk_start: u64,
    /// Offset of the first byte not yet dealt with; `withheld` holds the bytes from here to
    /// `chunk_start`.
    at: u64,
}

impl Cursor<'_> {
    fn end(&self) -> u64 {
        self.chunk_start.saturating_add(offset(self.chunk.len()))
    }

    /// Sends the bytes up to offset `to`; nothing if `to` is behind the cursor (an event
    /// whose start was relayed past the withholding limit).
    fn relay_to(&mut self, to: u64, out: &mut Vec<Bytes>) {
        self.advance(to, Some(out));
    }

    /// Drops the bytes up to offset `to`.
    fn drop_to(&mut self, to: u64) {
        self.advance(to, None);
    }

    fn advance(&mut self, to: u64, mut out: Option<&mut Vec<Bytes>>) {
        let to = to.min(self.end());
        if to <= self.at {
            return;
        }
        if self.at < self.chunk_start {
            let n = length(self.chunk_start.min(to) - self.at);
            match out.as_deref_mut() {
                Some(out) => out.push(self.withheld.split_to(n).freeze()),
                None => self.withheld.advance(n),
            }
            self.at += offset(n);
        }
        if to > self.at {
            let from = length(self.at - self.chunk_start);
            let upto = length(to - self.chunk_start);
            if let Some(out) = out {
                out.push(self.chunk.slice(from..upto));
            }
            self.at = to;
        }
    }

    /// Withholds everything not dealt with; returns the offset where the withheld bytes begin.
    fn withhold_rest(self) -> u64 {
        let from = length(self.at.saturating_sub(self.chunk_start));
        if let Some(rest) = self.chunk.get(from..) {
            self.withheld.extend_from_slice(rest);
        }
        self.at
    }
}

fn offset(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// A distance within one feed, which is at most a chunk and the withheld bytes long.
fn length(distance: u64) -> usize {
    usize::try_from(distance).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{event, MINIMAL};
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const OURS: &[u8] = b"event: error\ndata: {\"ours\":true}\n\n";

    /// Feeds `chunks` and returns what the client was sent, and the data of each replaced
    /// event.
    fn relay<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut whole = WholeEvents::new();
        let mut replaced = Vec::new();
        let mut sent = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut replace = |data: &[u8]| {
                replaced.push(data.to_vec());
                Bytes::from_static(OURS)
            };
            whole.feed(Bytes::copy_from_slice(chunk), &mut replace, &mut out);
            for piece in out.drain(..) {
                sent.extend_from_slice(&piece);
            }
        }
        (sent, replaced)
    }

    fn upstream_error() -> String {
        event(
            "error",
            &json!({"type":"error","error":{"type":"overloaded_error",
                "message":"Overloaded for organization org_secret"}}),
        )
    }

    #[test]
    fn a_stream_without_errors_is_relayed_byte_for_byte_however_it_is_cut() {
        let bytes = MINIMAL.as_bytes();
        assert_eq!(relay([bytes]).0, bytes);
        assert_eq!(relay(bytes.chunks(1)).0, bytes);
        assert_eq!(relay(bytes.chunks(7)).0, bytes);
    }

    #[test]
    fn an_error_event_is_replaced_and_what_surrounds_it_is_kept() {
        let (head, tail) = MINIMAL.split_at(MINIMAL.find("event: content_block_stop").unwrap());
        let stream = format!("{head}{}{tail}", upstream_error());
        let expected = [head.as_bytes(), OURS, tail.as_bytes()].concat();
        for size in [1, 2, 5, 64, stream.len()] {
            let (sent, replaced) = relay(stream.as_bytes().chunks(size));
            assert_eq!(
                String::from_utf8_lossy(&sent),
                String::from_utf8_lossy(&expected),
                "chunks of {size}"
            );
            assert_eq!(replaced.len(), 1);
            assert!(String::from_utf8_lossy(&replaced[0]).contains("org_secret"));
        }
    }

    #[test]
    fn an_untyped_error_is_replaced_too() {
        let stream = "data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"org_secret\"}}\n\n";
        for size in [1, 3, stream.len()] {
            let (sent, replaced) = relay(stream.as_bytes().chunks(size));
            assert_eq!(sent, OURS);
            assert_eq!(replaced.len(), 1);
        }
    }

    #[test]
    fn an_error_cut_before_its_blank_line_is_never_relayed() {
        let error = upstream_error();
        let cut = &error[..error.len() - 2];
        let (sent, replaced) = relay([MINIMAL.as_bytes(), cut.as_bytes()]);
        assert_eq!(sent, MINIMAL.as_bytes());
        assert!(replaced.is_empty());
    }

    #[test]
    fn an_unfinished_event_of_unknown_type_is_never_relayed() {
        let secret = "data: {\"type\":\"error\",\"error\":{\"message\":\"org_secret\"}}\n";
        for tail in [secret.to_string(), format!("{secret}event: error")] {
            let (sent, replaced) = relay([MINIMAL.as_bytes(), tail.as_bytes()]);
            assert_eq!(sent, MINIMAL.as_bytes());
            assert!(replaced.is_empty());
        }
    }

    #[test]
    fn a_crlf_stream_goes_out_whole_and_each_chunk_as_it_came() {
        let stream = MINIMAL.replace('\n', "\r\n");
        let (sent, _) = relay(stream.as_bytes().chunks(5));
        assert_eq!(sent, stream.as_bytes());
        // A chunk of whole CRLF events is one slice of itself, nothing withheld.
        let mut whole = WholeEvents::new();
        let mut out = Vec::new();
        let chunk = Bytes::from(stream);
        whole.feed(chunk.clone(), &mut |_: &[u8]| Bytes::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
        assert_eq!(out[0].len(), chunk.len());
        assert!(whole.withheld.is_empty());
    }

    #[test]
    fn only_a_streams_first_error_event_is_replaced() {
        let stream = format!(
            "{}{}",
            upstream_error(),
            "event:error\ndata:\n\n".repeat(1000)
        );
        let (sent, replaced) = relay(stream.as_bytes().chunks(4096));
        assert_eq!(sent, OURS);
        assert_eq!(replaced.len(), 1);
    }

    #[test]
    fn a_chunk_cut_inside_a_delta_goes_out_as_one_piece() {
        let cut = MINIMAL.find("Hello").unwrap();
        let mut whole = WholeEvents::new();
        let mut out = Vec::new();
        whole.feed(
            Bytes::copy_from_slice(&MINIMAL.as_bytes()[..cut]),
            &mut |_: &[u8]| Bytes::new(),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), cut);
    }

    #[test]
    fn a_long_error_event_is_dropped_as_it_comes_and_replaced_at_its_end() {
        let mut whole = WholeEvents::new();
        let mut out = Vec::new();
        let mut replace = |_: &[u8]| Bytes::from_static(OURS);
        whole.feed(
            Bytes::from_static(b"event: error\ndata: {\"message\":\""),
            &mut replace,
            &mut out,
        );
        let pad = Bytes::from(vec![b'x'; 16 << 10]);
        for _ in 0..1024 {
            whole.feed(pad.clone(), &mut replace, &mut out);
            assert!(out.is_empty());
            assert!(whole.withheld.len() <= WITHHOLD_LIMIT + pad.len());
        }
        whole.feed(Bytes::from_static(b"\"}\n\n"), &mut replace, &mut out);
        let sent: Vec<u8> = out.iter().flat_map(|piece| piece.to_vec()).collect();
        assert_eq!(sent, OURS);
    }

    #[test]
    fn a_long_untyped_error_gets_its_replacement_as_an_event_of_its_own() {
        let head = b"data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"";
        let pad = vec![b'x'; 16 << 10];
        let mut chunks: Vec<&[u8]> = vec![head];
        chunks.extend(std::iter::repeat_n(&pad[..], 6));
        chunks.push(b"\"}}\n\n");
        let (sent, replaced) = relay(chunks);
        // The event's start went out before it could be told an error (the SDKs ignore an
        // event with no `event:` line); its end did not, and the replacement follows.
        assert_eq!(replaced.len(), 1);
        assert!(sent.starts_with(head));
        assert!(sent.ends_with(&[&b"\n\n"[..], OURS].concat()));
        assert!(!sent.windows(3).any(|w| w == b"\"}}"));
    }

    #[test]
    fn a_long_delta_is_relayed_as_it_comes() {
        let mut whole = WholeEvents::new();
        let mut out = Vec::new();
        let mut replace = |_: &[u8]| Bytes::from_static(OURS);
        whole.feed(
            Bytes::from_static(b"event: content_block_delta\ndata: {\"delta\":{\"text\":\""),
            &mut replace,
            &mut out,
        );
        let pad = Bytes::from(vec![b'x'; 16 << 10]);
        let mut sent = 0;
        for _ in 0..64 {
            whole.feed(pad.clone(), &mut replace, &mut out);
            sent += out.drain(..).map(|piece| piece.len()).sum::<usize>();
        }
        assert!(sent >= 64 * pad.len() - WITHHOLD_LIMIT);
        assert!(whole.withheld.len() <= WITHHOLD_LIMIT);
    }

    #[test]
    fn whole_chunks_are_relayed_without_a_copy() {
        let mut whole = WholeEvents::new();
        let mut out = Vec::new();
        let chunk = Bytes::from_static(MINIMAL.as_bytes());
        whole.feed(chunk.clone(), &mut |_: &[u8]| Bytes::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ptr(), chunk.as_ptr());
    }

    proptest! {
        /// Whatever the chunks, the client gets the same bytes, and they are the stream's
        /// with each replaced event's bytes swapped for the replacement.
        #[test]
        fn any_cut_relays_what_the_whole_stream_relays(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "event: error\n", "event: message_delta\n", "event: ping\n",
                "event: content_block_delta\n", "data: {\"type\":\"error\",\"error\":{}}\n",
                "data: {\"type\":\"ping\"}\n", "data: x\n", "data:", "event:", "\n", "\r",
                "\r\n", ": c\n", "y",
            ]), 0..40),
            cuts in prop::collection::vec(1usize..9, 1..8),
        ) {
            let stream = pieces.concat();
            let bytes = stream.as_bytes();
            let whole = relay([bytes]);
            prop_assert_eq!(&relay(bytes.chunks(1)), &whole);
            let mut chunks = Vec::new();
            let mut rest = bytes;
            for &n in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, after) = rest.split_at(n.min(rest.len()));
                chunks.push(chunk);
                rest = after;
            }
            prop_assert_eq!(&relay(chunks), &whole);
            // Without an error, everything up to the end of the last complete event.
            if !stream.contains("event: error") && whole.1.is_empty() {
                let mut parser = UsageParser::new();
                parser.feed(bytes);
                let complete = usize::try_from(parser.event_start()).unwrap();
                prop_assert!(whole.0.len() >= complete, "{:?}", whole.0);
                prop_assert_eq!(&whole.0[..complete], &bytes[..complete]);
            }
        }
    }
}
