//! The SSE usage parser on any bytes: it never panics, and it reads the same usage, the same
//! `message_start` and the same end whether the stream arrives whole, byte by byte, or cut at
//! the boundaries the input's first bytes choose. The relay's whole-event cutter likewise
//! sends the same bytes however the stream is cut, and a stream it replaces nothing in goes
//! out byte for byte up to its last complete event.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tollgate_actors::sse::{UsageParser, WholeEvents};

/// What a parser concluded after the whole stream.
fn outcome(parser: &UsageParser) -> (tollgate_actors::Usage, bool, bool) {
    (
        parser.usage(),
        parser.saw_message_start(),
        parser.completed(),
    )
}

/// What the client is sent of `chunks`, and how many events were replaced.
fn relayed<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, usize) {
    let mut whole = WholeEvents::new();
    let mut replaced = 0;
    let mut sent = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let mut replace = |_: &[u8]| {
            replaced += 1;
            Bytes::from_static(b"event: error\ndata: {}\n\n")
        };
        whole.feed(Bytes::copy_from_slice(chunk), &mut replace, &mut out);
        for piece in out.drain(..) {
            sent.extend_from_slice(&piece);
        }
    }
    (sent, replaced)
}

/// `stream` cut into chunks whose lengths cycle through `cuts` (the whole of it if none).
fn cut<'a>(stream: &'a [u8], cuts: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    let mut rest = stream;
    let mut lengths = cuts.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let length = lengths
            .next()
            .map_or(rest.len(), |&n| usize::from(n).max(1));
        let (chunk, after) = rest.split_at(length.min(rest.len()));
        rest = after;
        Some(chunk)
    })
}

fuzz_target!(|data: &[u8]| {
    // The first bytes choose chunk lengths; the rest is the stream.
    let (cuts, stream) = data.split_at(data.len().min(8));

    let mut whole = UsageParser::new();
    whole.feed(stream);

    let mut bytewise = UsageParser::new();
    for byte in stream.chunks(1) {
        bytewise.feed(byte);
    }

    let mut chunked = UsageParser::new();
    for chunk in cut(stream, cuts) {
        chunked.feed(chunk);
    }

    assert_eq!(outcome(&whole), outcome(&bytewise));
    assert_eq!(outcome(&whole), outcome(&chunked));

    let sent = relayed(std::iter::once(stream));
    assert_eq!(relayed(stream.chunks(1)), sent);
    assert_eq!(relayed(cut(stream, cuts)), sent);
    // Only an error event, or an event the stream never finished, is ever kept from the
    // client: without the word "error", every complete event goes out as it came.
    if sent.1 == 0 && !whole.errored() && !stream.windows(5).any(|w| w == b"error") {
        assert!(sent.0.len() <= stream.len());
        assert!(stream.starts_with(&sent.0));
        assert!(!stream[sent.0.len()..].windows(2).any(|w| w == b"\n\n" || w == b"\r\r"));
    }
});
