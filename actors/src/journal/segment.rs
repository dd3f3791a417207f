//! Segment files: their names, the directory's lock, creating and syncing them, and the
//! reader that replays every record of every segment in order
//! (docs/adr/0019-write-ahead-journal.md).
//!
//! A segment is named by the LSN of its first record, `00000000000000000042.seg`, so the
//! directory's listing sorts them in the order they were written. Only the last segment can
//! end in a write that never finished: a segment is synced before the next one is created.
//!
//! A segment is usually preallocated: made as a zero-filled spare off the writer's path, then
//! given a header and its name. Commits then overwrite blocks that already exist, and their
//! `fdatasync` has no metadata to commit. Zeros after the last record are therefore a clean
//! end, in any segment.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::frame::{self, Header, HEADER_LEN};
use super::record::{self, DecodeError};
use super::{Cut, Damage, DamageKind, JournalError, Lsn, Replayed};

const SUFFIX: &str = ".seg";
/// What a damaged segment is renamed to once the checkpoint passes it: kept for the
/// operator, and no longer read.
const DAMAGED_SUFFIX: &str = ".damaged";
/// The file whose lock keeps a second process out of the directory.
const LOCK_FILE: &str = "journal.lock";
/// The zero-filled file the next segment is made from; no segment's name.
const SPARE_FILE: &str = "spare.tmp";
/// How much of a spare is written at a time, between checks for a cancel.
const ZERO_CHUNK: usize = 1024 * 1024;

pub(super) fn segment_path(dir: &Path, base: Lsn) -> PathBuf {
    dir.join(format!("{:020}{SUFFIX}", base.0))
}

fn parse_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io { what, path, source }
}

/// Creates the directory if it is missing, readable by this user alone: records name
/// accounts, keys and what they spent.
pub(super) fn create_dir(dir: &Path) -> Result<(), JournalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("creating the directory", dir))
}

/// Makes the directory's entries (a segment created, renamed or removed) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing the directory", dir))
}

/// The exclusive lock on a journal directory, held for as long as this value lives. It is an
/// `flock` on a file inside it: released by the kernel when the process ends, `kill -9`
/// included, so a crash never leaves the directory locked.
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error("opening the lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let holder = file
                    .read_to_string(&mut holder)
                    .ok()
                    .and_then(|_| holder.trim().parse::<u32>().ok());
                return Err(JournalError::Locked {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(JournalError::Io {
                    what: "locking the directory",
                    path,
                    source,
                })
            }
        }
        // Who holds it, for the error a second process shows.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_error("writing the lock file", &path))?;
        Ok(DirLock { _file: file })
    }
}

/// Creates a segment whose first record will have LSN `base`, with its header synced.
pub(super) fn create(dir: &Path, base: Lsn) -> Result<File, JournalError> {
    let path = segment_path(dir, base);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("creating a segment", &path))?;
    file.write_all(&frame::header(base.0))
        .and_then(|()| file.sync_data())
        .map_err(io_error("writing a segment's header", &path))?;
    Ok(file)
}

/// Opens an existing segment to write to it; the writer writes at its logical end, over any
/// zeros past it.
pub(super) fn reopen(path: &Path) -> Result<File, JournalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("opening a segment", path))
}

/// Removes a spare left by an earlier process, if there is one.
pub(super) fn remove_spare(dir: &Path) -> Result<(), JournalError> {
    let path = dir.join(SPARE_FILE);
    match fs::remove_file(&path) {
        Err(error) if error.kind() != ErrorKind::NotFound => {
            Err(io_error("removing a spare segment", &path)(error))
        }
        _ => Ok(()),
    }
}

/// Free bytes on the file system of `dir`, for unprivileged writers.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a valid out-pointer.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Makes a spare: `bytes` of zeros, synced, so that a segment made from it never grows. Stops
/// early, with `Ok(None)`, once `cancel` is set. A spare that fails is removed. None is made
/// unless the file system keeps at least three more segments' worth free after it: the
/// spare must never be what fills a disk that the journal's own appends (and Postgres, often
/// on the same disk) still need.
pub(super) fn prepare_spare(
    dir: &Path,
    bytes: u64,
    cancel: &AtomicBool,
) -> Result<Option<File>, JournalError> {
    remove_spare(dir)?;
    let path = dir.join(SPARE_FILE);
    let free = free_bytes(dir).map_err(io_error("reading the free space of", dir))?;
    if free < bytes.saturating_mul(4) {
        return Err(JournalError::Io {
            what: "preparing a spare segment in",
            path: dir.to_owned(),
            source: std::io::Error::other(format!(
                "only {free} bytes are free, and a spare of {bytes} must leave three more"
            )),
        });
    }
    let zeros = vec![0u8; ZERO_CHUNK];
    let fill = || -> std::io::Result<Option<File>> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut left = bytes;
        while left > 0 {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let chunk = left.min(ZERO_CHUNK as u64);
            file.write_all(zeros.get(..chunk as usize).unwrap_or(&zeros))?;
            left -= chunk;
        }
        file.sync_data()?;
        Ok(Some(file))
    };
    match fill() {
        Ok(Some(file)) => Ok(Some(file)),
        Ok(None) => remove_spare(dir).map(|()| None),
        Err(error) => {
            let _ = fs::remove_file(&path);
            Err(io_error("preparing a spare segment", &path)(error))
        }
    }
}

/// Turns a spare into the segment whose first record will have LSN `base`: its header is
/// written and synced before it takes the segment's name, which must be free. The caller
/// syncs the directory.
pub(super) fn install_spare(dir: &Path, spare: File, base: Lsn) -> Result<File, JournalError> {
    let from = dir.join(SPARE_FILE);
    let to = segment_path(dir, base);
    spare
        .write_all_at(&frame::header(base.0), 0)
        .and_then(|()| spare.sync_data())
        .map_err(io_error("writing a segment's header", &from))?;
    // A hard link, not a rename: it fails rather than replace a segment of that name.
    fs::hard_link(&from, &to).map_err(io_error("naming a segment", &to))?;
    if let Err(error) = fs::remove_file(&from) {
        // The segment is whole; the next spare's preparation removes this name again.
        tracing::warn!(%error, path = %from.display(), "a used spare segment could not be removed");
    }
    Ok(spare)
}

/// One segment as the writer keeps track of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentFile {
    pub base: Lsn,
    pub path: PathBuf,
    pub bytes: u64,
    /// Some record of it could not be read: at its checkpoint it is renamed, not removed.
    pub damaged: bool,
}

/// Everything the directory's segments hold. Records are counted, not kept: a journal can
/// hold up to `max_bytes` of them, and replay reads them again one segment at a time
/// ([`records_of`]).
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Records that decode, in every segment.
    pub records: usize,
    /// The LSN of the first of them.
    pub first_record: Option<Lsn>,
    /// The segments that hold them, in order: base, path, and the LSN their records stay
    /// below (see [`records_of`]).
    pub replayed: Vec<(Lsn, PathBuf, Lsn)>,
    /// In order; the bytes of the last are before any cut.
    pub segments: Vec<SegmentFile>,
    /// The last segment's tail that cannot be read, to be cut off.
    pub torn_tail: Option<Cut>,
    pub damage: Vec<Damage>,
    /// The LSN the next record written gets.
    pub next: Lsn,
}

/// Reads every segment of `dir` in order, and every good record of each.
///
/// - In the last segment, an unreadable tail in which no frame's checksum holds is a write
///   that never finished: `torn_tail`, which the caller cuts off (nothing there was ever
///   reported durable). A last segment no longer than a header is one whose creation never
///   finished: removed.
/// - In the last segment, an unreadable point followed by a good frame, or a whole header
///   that is not this segment's followed by bytes, is damage of synced records: kept (renamed
///   aside at its checkpoint), never cut, and the next LSN is set past what it can hold.
/// - Anywhere, a record whose checksum fails but whose successor reads is skipped alone, and
///   a record whose checksum holds but whose content does not decode is skipped too: damage.
/// - In an earlier segment, an unreadable tail is damage: the rest of that segment is lost,
///   the following segments are read in full.
///
/// A record of another format version stops the reading: it was written by a newer build,
/// and dropping it would lose a bill.
pub(super) fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("listing the directory", dir))? {
        let entry = entry.map_err(io_error("listing the directory", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_name) {
            found.push((base, entry.path()));
        }
    }
    found.sort();
    let following: Vec<Lsn> = found.iter().skip(1).map(|(base, _)| *base).collect();
    let mut scan = Scan::default();
    let last = found.len().saturating_sub(1);
    for (i, (base, path)) in found.into_iter().enumerate() {
        let following = following.get(i).copied();
        let bytes = fs::read(&path).map_err(io_error("reading a segment", &path))?;
        let is_last = i == last;
        // What was ever written: a preallocated segment's zeros after it are not records.
        let written = bytes.len() - trailing_zeros(&bytes);
        let mut segment = SegmentFile {
            base,
            path,
            bytes: written as u64,
            damaged: false,
        };
        scan.next = base;
        let header = frame::read_header(&bytes);
        let header_good = header == Header::Good(base.0);
        if !header_good {
            if is_last && (bytes.len() <= HEADER_LEN || written == 0) {
                // Created, and never synced: it holds no record at all.
                scan.torn_tail = Some(Cut {
                    segment: segment.path.clone(),
                    offset: 0,
                    bytes: segment.bytes,
                });
            } else {
                segment.damaged = true;
                scan.damage.push(Damage {
                    segment: segment.path.clone(),
                    offset: 0,
                    bytes: segment.bytes,
                    kind: DamageKind::BadHeader,
                });
                if is_last {
                    // Its records were synced; their number is unknown. The next segment
                    // starts past every LSN they can have held, so none is handed out twice.
                    let rest = written.saturating_sub(HEADER_LEN);
                    scan.next = Lsn(base.0.saturating_add(frames_at_most(rest)));
                }
            }
            scan.segments.push(segment);
            continue;
        }
        let records = bytes.get(HEADER_LEN..).unwrap_or_default();
        let frames = frame::read_frames(records);
        // Every byte was framed (and the last frame may end in zeros of its own).
        segment.bytes = bytes.len() as u64;
        let before = scan.records;
        for (index, offset, body) in frames.good {
            let offset = (HEADER_LEN + offset) as u64;
            match record::decode(body) {
                Ok(_) => {
                    scan.records += 1;
                    scan.first_record
                        .get_or_insert(Lsn(base.0.saturating_add(index)));
                }
                Err(DecodeError::UnsupportedVersion(version)) => {
                    return Err(JournalError::UnsupportedVersion {
                        segment: segment.path.clone(),
                        offset,
                        version,
                    })
                }
                Err(DecodeError::Malformed(why)) => {
                    segment.damaged = true;
                    scan.damage.push(Damage {
                        segment: segment.path.clone(),
                        offset,
                        bytes: (frame::FRAME_HEADER_LEN + body.len()) as u64,
                        kind: DamageKind::Undecodable(why),
                    });
                }
            }
        }
        for (offset, len) in frames.skipped {
            segment.damaged = true;
            scan.damage.push(Damage {
                segment: segment.path.clone(),
                offset: (HEADER_LEN + offset) as u64,
                bytes: len as u64,
                kind: DamageKind::BadChecksum,
            });
        }
        scan.next = Lsn(base.0.saturating_add(frames.count));
        if let Some(from) = frames.unreadable_from {
            let offset = (HEADER_LEN + from) as u64;
            let unread = records.get(from..).unwrap_or_default();
            // Bytes of the unread rest up to its trailing zeros: none is a clean end.
            let rest = unread.len() - trailing_zeros(unread);
            let recovered = frame::recover(records, from);
            segment.bytes = offset + rest as u64;
            if rest == 0 {
                // Zeros after the last record: a clean end.
            } else if is_last && recovered.frames.is_empty() {
                scan.torn_tail = Some(Cut {
                    segment: segment.path.clone(),
                    offset,
                    bytes: rest as u64,
                });
            } else {
                segment.damaged = true;
                let at = |offset: usize| (HEADER_LEN + offset) as u64;
                for (offset, len) in recovered.lost {
                    scan.damage.push(Damage {
                        segment: segment.path.clone(),
                        offset: at(offset),
                        bytes: len as u64,
                        kind: DamageKind::UnreadableRest,
                    });
                }
                for (offset, len) in recovered.skipped {
                    scan.damage.push(Damage {
                        segment: segment.path.clone(),
                        offset: at(offset),
                        bytes: len as u64,
                        kind: DamageKind::BadChecksum,
                    });
                }
                for (offset, body) in recovered.frames {
                    match record::decode(body) {
                        Ok(_) => scan.records += 1,
                        Err(DecodeError::UnsupportedVersion(version)) => {
                            return Err(JournalError::UnsupportedVersion {
                                segment: segment.path.clone(),
                                offset: at(offset),
                                version,
                            })
                        }
                        Err(DecodeError::Malformed(why)) => scan.damage.push(Damage {
                            segment: segment.path.clone(),
                            offset: at(offset),
                            bytes: (frame::FRAME_HEADER_LEN + body.len()) as u64,
                            kind: DamageKind::Undecodable(why),
                        }),
                    }
                }
                if is_last {
                    // Records were synced after the damage: none of the LSNs they may hold
                    // is handed out again.
                    scan.next = Lsn(scan.next.0.saturating_add(frames_at_most(rest) + 1));
                }
            }
        }
        if scan.records > before {
            let limit = following.unwrap_or(scan.next);
            if scan.first_record.is_none() {
                // Its only records were found again after damage.
                scan.first_record = records_of(base, &segment.path, limit)?
                    .first()
                    .map(|r| r.lsn);
            }
            scan.replayed.push((base, segment.path.clone(), limit));
        }
        scan.segments.push(segment);
    }
    scan.damage
        .sort_by(|a, b| (&a.segment, a.offset).cmp(&(&b.segment, b.offset)));
    Ok(scan)
}

/// The records of one segment that [`scan`] counted, read again: every frame up to the first
/// that cannot be read (after the start's cut, that is where the records end), less those
/// that do not decode. Blocking.
///
/// Frames found again after damage ([`frame::recover`]) are numbered by their offset from the
/// damage, one LSN per 9 bytes (the shortest frame), so that their LSNs grow with their place
/// and stay in the range [`scan`] reserved past the damage; at most `limit` − 1 (the next
/// segment's base, for an earlier segment), where several may share one.
pub(super) fn records_of(
    base: Lsn,
    path: &Path,
    limit: Lsn,
) -> Result<Vec<Replayed>, JournalError> {
    let bytes = fs::read(path).map_err(io_error("reading a segment", path))?;
    if frame::read_header(&bytes) != Header::Good(base.0) {
        return Err(JournalError::Io {
            what: "reading a segment again",
            path: path.to_owned(),
            source: std::io::Error::other("its header changed since start-up"),
        });
    }
    let records = bytes.get(HEADER_LEN..).unwrap_or_default();
    let frames = frame::read_frames(records);
    let mut replayed: Vec<Replayed> = frames
        .good
        .into_iter()
        .filter_map(|(index, _, body)| {
            let record = record::decode(body).ok()?;
            Some(Replayed {
                lsn: Lsn(base.0.saturating_add(index)),
                record,
            })
        })
        .collect();
    if let Some(from) = frames.unreadable_from {
        let after = base.0.saturating_add(frames.count);
        let highest = limit.0.saturating_sub(1).max(after);
        for (offset, body) in frame::recover(records, from).frames {
            let Ok(record) = record::decode(body) else {
                continue;
            };
            let step = (offset - from).div_ceil(frame::FRAME_HEADER_LEN + 1) as u64;
            replayed.push(Replayed {
                lsn: Lsn(after.saturating_add(step).min(highest)),
                record,
            });
        }
    }
    Ok(replayed)
}

/// How many zero bytes `bytes` ends in.
fn trailing_zeros(bytes: &[u8]) -> usize {
    bytes.iter().rev().take_while(|&&b| b == 0).count()
}

/// The most frames `bytes` can hold (each has a header and at least one byte of body), and
/// at least one, so that a segment started past them never takes the damaged one's name.
fn frames_at_most(bytes: usize) -> u64 {
    (bytes.div_ceil(frame::FRAME_HEADER_LEN + 1) as u64).max(1)
}

/// Cuts the last segment's torn tail off, durably: truncated to its readable part, or
/// removed if even its header is not whole. Returns the segment's size after the cut, or
/// `None` if it was removed.
pub(super) fn cut(dir: &Path, tail: &Cut) -> Result<Option<u64>, JournalError> {
    if tail.offset == 0 {
        fs::remove_file(&tail.segment)
            .map_err(io_error("removing a torn segment", &tail.segment))?;
        sync_dir(dir)?;
        return Ok(None);
    }
    OpenOptions::new()
        .write(true)
        .open(&tail.segment)
        .and_then(|file| {
            file.set_len(tail.offset)?;
            file.sync_all()
        })
        .map_err(io_error("cutting a torn tail", &tail.segment))?;
    Ok(Some(tail.offset))
}

/// Removes a segment whose records are all in the ledger, or renames a damaged one aside.
pub(super) fn retire(segment: &SegmentFile) -> Result<(), JournalError> {
    if segment.damaged {
        let mut aside = segment.path.clone().into_os_string();
        aside.push(DAMAGED_SUFFIX);
        fs::rename(&segment.path, &aside)
            .map_err(io_error("renaming a damaged segment", &segment.path))
    } else {
        fs::remove_file(&segment.path).map_err(io_error("removing a segment", &segment.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_as_their_lsns_and_nothing_else_is_one() {
        let dir = Path::new("/j");
        let name = |lsn| {
            segment_path(dir, Lsn(lsn))
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(name(42), "00000000000000000042.seg");
        assert!(name(9) < name(10));
        assert_eq!(parse_name(&name(u64::MAX)), Some(Lsn(u64::MAX)));
        for other in [
            "journal.lock",
            "42.seg",
            "00000000000000000042.seg.damaged",
            "0000000000000000004x.seg",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }
}
