//! The SSE usage parser on any bytes: it never panics, and it reads the same usage, the same
//! `message_start` and the same end whether the stream arrives whole, byte by byte, or cut at
//! the boundaries the input's first bytes choose.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate_actors::sse::UsageParser;

/// What a parser concluded after the whole stream.
fn outcome(parser: &UsageParser) -> (tollgate_actors::Usage, bool, bool) {
    (
        parser.usage(),
        parser.saw_message_start(),
        parser.completed(),
    )
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
    let mut rest = stream;
    let mut lengths = cuts.iter().cycle();
    while !rest.is_empty() {
        let length = lengths
            .next()
            .map_or(rest.len(), |&n| usize::from(n).max(1));
        let (chunk, after) = rest.split_at(length.min(rest.len()));
        chunked.feed(chunk);
        rest = after;
    }

    assert_eq!(outcome(&whole), outcome(&bytewise));
    assert_eq!(outcome(&whole), outcome(&chunked));
});
