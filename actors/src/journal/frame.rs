//! The journal's framing, as pure code over bytes: a segment's header, and the frames of its
//! records (docs/adr/0019-write-ahead-journal.md).
//!
//! ```text
//! segment = header frame*
//! header  = magic "TGJOURNL" | base LSN: u64 LE | CRC32C of the 16 bytes before: u32 LE
//! frame   = length: u32 LE | CRC32C of the length's 4 bytes and the body: u32 LE | body
//! ```
//!
//! The body is opaque here (`super::record` gives it meaning; its first byte is a version). A
//! frame is numbered by its position: the `n`th frame of a segment has LSN base + n.

use crc32c::{crc32c, crc32c_append};

/// The first bytes of every segment file.
const MAGIC: [u8; 8] = *b"TGJOURNL";
/// A segment header's length: magic, base LSN, checksum.
pub(super) const HEADER_LEN: usize = 20;
/// A frame's length and checksum, before its body.
pub(super) const FRAME_HEADER_LEN: usize = 8;
/// The largest body a frame may declare. A usage record is about 200 bytes (its model name is
/// at most `super::record::MAX_MODEL_BYTES`); a length above this is damage, and bounds what a
/// corrupt length could make the reader believe.
pub(super) const MAX_BODY_LEN: usize = 64 * 1024;

/// A segment header for a segment whose first record has LSN `base`.
pub(super) fn header(base: u64) -> [u8; HEADER_LEN] {
    let base = base.to_le_bytes();
    let crc = crc32c_append(crc32c(&MAGIC), &base).to_le_bytes();
    let mut out = [0u8; HEADER_LEN];
    for (slot, byte) in out.iter_mut().zip(MAGIC.iter().chain(&base).chain(&crc)) {
        *slot = *byte;
    }
    out
}

/// What the start of a segment file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// A whole header whose checksum holds: the segment's base LSN.
    Good(u64),
    /// Fewer bytes than a header: the file's creation never finished.
    Short,
    /// A whole header that is not one (wrong magic or checksum).
    Bad,
}

pub(super) fn read_header(file: &[u8]) -> Header {
    let Some((magic, rest)) = file.split_first_chunk::<8>() else {
        return Header::Short;
    };
    let Some((base, rest)) = rest.split_first_chunk::<8>() else {
        return Header::Short;
    };
    let Some((crc, _)) = rest.split_first_chunk::<4>() else {
        return Header::Short;
    };
    if *magic != MAGIC || crc32c_append(crc32c(magic), base) != u32::from_le_bytes(*crc) {
        return Header::Bad;
    }
    Header::Good(u64::from_le_bytes(*base))
}

/// A frame being built: its header's room, to which the caller appends the body, then
/// [`seal`] fills the header in.
pub(super) fn start(capacity: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + capacity);
    frame.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    frame
}

/// The body appended to a [`start`]ed frame is larger than a frame may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a journal record of {0} bytes is larger than a frame may carry")]
pub(super) struct TooLarge(pub usize);

/// Writes the length and checksum of the body that follows the header's room.
pub(super) fn seal(frame: &mut [u8]) -> Result<(), TooLarge> {
    let Some((head, body)) = frame.split_first_chunk_mut::<FRAME_HEADER_LEN>() else {
        return Err(TooLarge(0));
    };
    if body.len() > MAX_BODY_LEN {
        return Err(TooLarge(body.len()));
    }
    let length = u32::try_from(body.len()).map_err(|_| TooLarge(body.len()))?;
    let length = length.to_le_bytes();
    let crc = crc32c_append(crc32c(&length), body);
    let (len_field, crc_field) = head.split_at_mut(4);
    len_field.copy_from_slice(&length);
    crc_field.copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What lies at one offset of a segment's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameAt<'a> {
    /// A whole frame whose checksum holds, and the offset of the next.
    Good { body: &'a [u8], next: usize },
    /// The bytes end before the frame does (or before its header): a write never finished.
    Short,
    /// A whole frame whose checksum fails, or a length no frame has. `next` is where the
    /// next frame would start if the length is right (it may be the damaged part).
    Bad { next: Option<usize> },
}

pub(super) fn frame_at(bytes: &[u8], offset: usize) -> FrameAt<'_> {
    let Some(rest) = bytes.get(offset..) else {
        return FrameAt::Short;
    };
    let Some((head, after)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return FrameAt::Short;
    };
    let (Some((length_bytes, _)), Some((_, crc_bytes))) =
        (head.split_first_chunk::<4>(), head.split_last_chunk::<4>())
    else {
        return FrameAt::Bad { next: None };
    };
    let length = u32::from_le_bytes(*length_bytes) as usize;
    // Every body holds at least its version byte; a zero length is a zeroed or damaged tail.
    if length == 0 || length > MAX_BODY_LEN {
        return FrameAt::Bad { next: None };
    }
    let Some(body) = after.get(..length) else {
        return FrameAt::Short;
    };
    let next = offset + FRAME_HEADER_LEN + length;
    if crc32c_append(crc32c(length_bytes), body) != u32::from_le_bytes(*crc_bytes) {
        return FrameAt::Bad { next: Some(next) };
    }
    FrameAt::Good { body, next }
}

/// Every frame of a segment's records (the bytes after its header), as far as they can be
/// read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Frames<'a> {
    /// The readable frames, in order: their index in the segment (which, added to the base,
    /// is their LSN), their offset in `bytes`, and their body.
    pub good: Vec<(u64, usize, &'a [u8])>,
    /// Frames whose checksum failed but whose successor is whole and good, so their length
    /// was right: skipped one at a time, each counting its index. Offset and length.
    pub skipped: Vec<(usize, usize)>,
    /// Where the readable frames end, if before the end of the bytes: the rest cannot be
    /// framed (a write that never finished, or a damaged length).
    pub unreadable_from: Option<usize>,
    /// Frames read or skipped: the next index.
    pub count: u64,
}

/// Reads frames from the start of `bytes` to its end. A bad frame followed by a good one is
/// skipped alone: only a flipped bit inside it can explain that, since a write that never
/// finished leaves nothing good after itself. Any other bad or short frame ends the
/// readable part.
pub(super) fn read_frames(bytes: &[u8]) -> Frames<'_> {
    let mut frames = Frames::default();
    let mut offset = 0;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            FrameAt::Good { body, next } => {
                frames.good.push((frames.count, offset, body));
                frames.count += 1;
                offset = next;
            }
            FrameAt::Bad { next: Some(next) }
                if matches!(frame_at(bytes, next), FrameAt::Good { .. }) =>
            {
                frames.skipped.push((offset, next - offset));
                frames.count += 1;
                offset = next;
            }
            FrameAt::Bad { .. } | FrameAt::Short => {
                frames.unreadable_from = Some(offset);
                break;
            }
        }
    }
    frames
}

/// The frames found again after an unreadable point: damage of synced records, followed by
/// more of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Recovered<'a> {
    /// Offset and body of each good frame after the point, in order.
    pub frames: Vec<(usize, &'a [u8])>,
    /// Frames skipped alone, as in [`Frames::skipped`].
    pub skipped: Vec<(usize, usize)>,
    /// The stretches no frame could be read from, offset and length: the first begins at the
    /// unreadable point. Zeros at the very end are not one.
    pub lost: Vec<(usize, usize)>,
}

/// Reads on after the unreadable point `from`: the next offset where a frame whose checksum
/// holds begins, and the frames from there, as often as the bytes allow. Finding none is
/// what tells a write that never finished (it leaves nothing good after itself) from damage
/// followed by synced records. A frame can begin
/// only before `bytes`' trailing zeros (its length is not zero), so they are not searched.
pub(super) fn recover(bytes: &[u8], from: usize) -> Recovered<'_> {
    let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
    let mut recovered = Recovered::default();
    let mut offset = from;
    while offset < end {
        let found =
            (offset + 1..end).find(|&at| matches!(frame_at(bytes, at), FrameAt::Good { .. }));
        let Some(found) = found else {
            recovered.lost.push((offset, end - offset));
            break;
        };
        recovered.lost.push((offset, found - offset));
        offset = found;
        while offset < end {
            match frame_at(bytes, offset) {
                FrameAt::Good { body, next } => {
                    recovered.frames.push((offset, body));
                    offset = next;
                }
                FrameAt::Bad { next: Some(next) }
                    if matches!(frame_at(bytes, next), FrameAt::Good { .. }) =>
                {
                    recovered.skipped.push((offset, next - offset));
                    offset = next;
                }
                FrameAt::Bad { .. } | FrameAt::Short => break,
            }
        }
    }
    recovered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = start(body.len());
        frame.extend_from_slice(body);
        seal(&mut frame).unwrap();
        frame
    }

    fn frames_of(bodies: &[Vec<u8>]) -> Vec<u8> {
        bodies.iter().flat_map(|body| frame(body)).collect()
    }

    #[test]
    fn a_header_reads_back_its_base_and_any_flipped_bit_makes_it_bad() {
        let head = header(42);
        assert_eq!(read_header(&head), Header::Good(42));
        assert_eq!(read_header(&head[..HEADER_LEN - 1]), Header::Short);
        for byte in 0..HEADER_LEN {
            let mut flipped = head;
            flipped[byte] ^= 0x10;
            assert_eq!(read_header(&flipped), Header::Bad, "byte {byte}");
        }
    }

    #[test]
    fn frames_read_back_in_order_with_their_index() {
        let bytes = frames_of(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let frames = read_frames(&bytes);
        let bodies: Vec<&[u8]> = frames.good.iter().map(|(_, _, body)| *body).collect();
        assert_eq!(bodies, [&b"one"[..], b"two", b"three"]);
        assert_eq!(
            frames.good.iter().map(|(i, _, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(frames.unreadable_from, None);
        assert!(frames.skipped.is_empty());
    }

    #[test]
    fn a_flipped_byte_in_a_middle_body_skips_that_frame_alone() {
        let bytes = frames_of(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let mut damaged = bytes.clone();
        let second = frame(b"one").len();
        damaged[second + FRAME_HEADER_LEN + 1] ^= 0x01;
        let frames = read_frames(&damaged);
        let kept: Vec<(u64, &[u8])> = frames.good.iter().map(|(i, _, b)| (*i, *b)).collect();
        assert_eq!(kept, [(0, &b"one"[..]), (2, b"three")]);
        assert_eq!(frames.skipped, [(second, FRAME_HEADER_LEN + 3)]);
        assert_eq!(frames.count, 3);
        assert_eq!(frames.unreadable_from, None);
    }

    #[test]
    fn a_flipped_length_makes_the_rest_unreadable() {
        let bytes = frames_of(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let mut damaged = bytes.clone();
        let second = frame(b"one").len();
        damaged[second] ^= 0x40;
        let frames = read_frames(&damaged);
        assert_eq!(frames.good.len(), 1);
        assert_eq!(frames.unreadable_from, Some(second));
    }

    #[test]
    fn a_zeroed_tail_is_unreadable_not_a_record() {
        let mut bytes = frames_of(&[b"one".to_vec()]);
        let end = bytes.len();
        bytes.extend_from_slice(&[0u8; 64]);
        let frames = read_frames(&bytes);
        assert_eq!(frames.good.len(), 1);
        assert_eq!(frames.unreadable_from, Some(end));
    }

    #[test]
    fn frames_after_a_flipped_length_are_found_again() {
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|n| vec![n + 1; 20]).collect();
        let mut bytes = frames_of(&bodies);
        let len = frame(&bodies[0]).len();
        bytes[len + 3] ^= 0x40;
        bytes.extend_from_slice(&[0u8; 100]);
        let frames = read_frames(&bytes);
        assert_eq!(frames.unreadable_from, Some(len));
        let recovered = recover(&bytes, len);
        let found: Vec<(usize, &[u8])> = recovered.frames.clone();
        assert_eq!(
            found,
            [
                (2 * len, &bodies[2][..]),
                (3 * len, &bodies[3][..]),
                (4 * len, &bodies[4][..])
            ]
        );
        assert_eq!(recovered.lost, [(len, len)]);
        assert!(recovered.skipped.is_empty());
        // Nothing good after the point: all of it is lost, and the zeros are not.
        let torn = &bytes[..2 * len + 5];
        assert_eq!(
            recover(torn, len),
            Recovered {
                lost: vec![(len, len + 5)],
                ..Recovered::default()
            }
        );
    }

    #[test]
    fn a_body_larger_than_a_frame_may_carry_is_refused() {
        let mut big = start(MAX_BODY_LEN + 1);
        big.resize(FRAME_HEADER_LEN + MAX_BODY_LEN + 1, 7);
        assert_eq!(seal(&mut big), Err(TooLarge(MAX_BODY_LEN + 1)));
    }

    proptest! {
        /// A crash can stop the file at any byte: what reads back is exactly the frames
        /// wholly before that byte, and the rest is reported as unreadable from the end of
        /// the last of them.
        #[test]
        fn cut_anywhere_the_whole_frames_before_the_cut_read_back(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..40), 1..12),
            cut_at in any::<prop::sample::Index>(),
        ) {
            let bytes = frames_of(&bodies);
            let cut = cut_at.index(bytes.len() + 1);
            let frames = read_frames(&bytes[..cut]);
            let mut whole = 0;
            let mut end = 0;
            for body in &bodies {
                if end + FRAME_HEADER_LEN + body.len() > cut {
                    break;
                }
                end += FRAME_HEADER_LEN + body.len();
                whole += 1;
            }
            prop_assert_eq!(frames.good.len(), whole);
            for ((_, _, read), written) in frames.good.iter().zip(&bodies) {
                prop_assert_eq!(*read, written.as_slice());
            }
            prop_assert_eq!(frames.unreadable_from, (end < cut).then_some(end));
        }

        /// Reading arbitrary bytes never panics, and never reads past them.
        #[test]
        fn arbitrary_bytes_are_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let frames = read_frames(&bytes);
            for (_, offset, body) in frames.good {
                prop_assert!(offset + FRAME_HEADER_LEN + body.len() <= bytes.len());
            }
            let _ = read_header(&bytes);
        }
    }
}
