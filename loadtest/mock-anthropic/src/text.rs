//! Deterministic pseudo-randomness: body hashing, ids, and the words of the output.
//!
//! Everything here is a pure function of its inputs, so the same seed and the same request
//! always produce the same text. The generator is a hand-written mixer rather than a `rand`
//! RNG, whose output stream is not promised to stay stable across versions.

/// Odd constant (2^64 / golden ratio) used to spread consecutive integers apart.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The splitmix64 finalizer: a bijection on `u64` with good avalanche.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The `i`-th value of a stream keyed by `key`; distinct `i` give distinct values.
pub(crate) fn nth(key: u64, i: u64) -> u64 {
    mix(key.wrapping_add(i.wrapping_mul(GOLDEN)))
}

/// Hashes a request body eight bytes at a time. Bodies from Claude Code run to hundreds of KB,
/// so this must stay far cheaper than the JSON parse that precedes it.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(GOLDEN);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(buf))
            .wrapping_mul(0xFF51_AFD7_ED55_8CCD)
            .rotate_left(29);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut buf = [0u8; 8];
        for (slot, byte) in buf.iter_mut().zip(tail) {
            *slot = *byte;
        }
        h = (h ^ u64::from_le_bytes(buf))
            .wrapping_mul(0xFF51_AFD7_ED55_8CCD)
            .rotate_left(29);
    }
    mix(h)
}

/// The words output is made of. Plain lowercase ASCII, so they never need JSON escaping and can
/// be spliced straight into pre-rendered SSE frames.
const WORDS: [&str; 64] = [
    "the", "relay", "meters", "every", "token", "stream", "cache", "balance", "quick", "model",
    "answer", "prompt", "budget", "ledger", "careful", "signal", "bright", "river", "stone",
    "window", "garden", "number", "silver", "orbit", "lantern", "quiet", "copper", "harbor",
    "meadow", "pixel", "socket", "thread", "vector", "matrix", "kernel", "packet", "buffer",
    "anchor", "beacon", "canyon", "delta", "ember", "falcon", "glacier", "horizon", "island",
    "jigsaw", "kettle", "lemon", "marble", "nectar", "olive", "pepper", "quartz", "rocket",
    "saddle", "tunnel", "umbrella", "velvet", "walnut", "yonder", "zephyr", "and", "of",
];

/// Appends output tokens `start .. start + count` of the text keyed by `key`. Each token is one
/// word, preceded by a space except for the very first token of the message.
pub(crate) fn push_tokens(out: &mut Vec<u8>, key: u64, start: u64, count: u64) {
    for i in start..start + count {
        if i > 0 {
            out.push(b' ');
        }
        let index = (nth(key, i) % WORDS.len() as u64) as usize;
        let word = WORDS.get(index).copied().unwrap_or_default();
        out.extend_from_slice(word.as_bytes());
    }
}

/// The id shared by a request's `request-id` header and its message id: unique per sequence
/// number for a given seed, and reproducible when a run is replayed with the same seed.
pub(crate) fn request_hex(seed: u64, seq: u64) -> String {
    format!("{:016x}", nth(seed, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_words_and_chunking_does_not_change_them() {
        let mut whole = Vec::new();
        push_tokens(&mut whole, 42, 0, 10);
        let mut pieces = Vec::new();
        push_tokens(&mut pieces, 42, 0, 3);
        push_tokens(&mut pieces, 42, 3, 7);
        assert_eq!(whole, pieces);
        assert!(!whole.starts_with(b" "));
        assert_eq!(whole.iter().filter(|b| **b == b' ').count(), 9);

        let mut other = Vec::new();
        push_tokens(&mut other, 43, 0, 10);
        assert_ne!(whole, other);
    }

    #[test]
    fn words_never_need_json_escaping() {
        for word in WORDS {
            assert!(word.bytes().all(|b| b.is_ascii_lowercase()), "{word}");
        }
    }

    #[test]
    fn body_hash_depends_on_every_byte_and_the_seed() {
        let body = b"{\"model\":\"m\",\"max_tokens\":5}";
        let base = hash_bytes(1, body);
        assert_eq!(base, hash_bytes(1, body));
        assert_ne!(base, hash_bytes(2, body));
        let mut changed = body.to_vec();
        let last = changed.len() - 1;
        changed[last] = b' ';
        assert_ne!(base, hash_bytes(1, &changed));
    }

    #[test]
    fn request_ids_differ_per_sequence_number() {
        assert_ne!(request_hex(7, 1), request_hex(7, 2));
        assert_eq!(request_hex(7, 1), request_hex(7, 1));
        assert_eq!(request_hex(7, 1).len(), 16);
    }
}
