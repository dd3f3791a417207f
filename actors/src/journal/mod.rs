//! The write-ahead journal: settled usage made durable on local disk before it counts as
//! settled, so that a crash between two flushes loses no bill
//! (docs/adr/0019-write-ahead-journal.md).
//!
//! - `frame`: a segment's header and the length + CRC32C framing of its records.
//! - `record`: a record's body, a [`UsageRecord`] behind a version byte.
//! - `segment`: segment files, the directory's lock, and the reader that replays them.
//! - `writer`: the one thread that writes: group commit, rotation, checkpoints.
//!
//! [`Journal::open`] locks the directory, reads every segment back ([`Replay`]), cuts a torn
//! tail off and starts the writer. [`Journal::append`] numbers a record with its [`Lsn`] and
//! returns a [`Durable`] that resolves once the record is on disk; many appends share one
//! `fdatasync`. Once the ledger holds a record, [`Journal::mark_flushed`] says so, and
//! [`Journal::checkpoint`] removes the segments whose records are all in the ledger.
//!
//! A failed write or sync fails the journal for good: every append from then on is refused
//! and [`Journal::health`] says why, so that admission can refuse new requests (fail closed).
//!
//! Linux only, as the service is: it relies on `fdatasync` and `flock` semantics.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::ledger::UsageRecord;

mod frame;
mod intake;
mod record;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

pub use record::EncodeError;

use intake::Intake;
use segment::{DirLock, SegmentFile};
use writer::{
    lock, CheckpointRequest, Command, Pending, Replaying, Sequence, Spares, Status, Writer,
};

/// Appends waiting for the writer, at most. At 5,000 settles a second and a commit every
/// millisecond, about five wait; a full queue means the disk has stopped keeping up, and an
/// append is refused ([`JournalError::Overloaded`]) rather than queued without bound.
pub const MAX_QUEUED_APPENDS: usize = 65_536;
/// Past this many appends waiting the journal is unhealthy ([`JournalHealth::Overloaded`]),
/// so that admission stops before appends are refused.
pub const UNHEALTHY_QUEUED: u64 = MAX_QUEUED_APPENDS as u64 / 2;
/// A commit or checkpoint running longer than this makes the journal unhealthy
/// ([`JournalHealth::Stalled`]): `fdatasync` takes well under a millisecond on a working disk.
pub const STALLED_AFTER: Duration = Duration::from_secs(2);
/// The longest [`JournalConfig::commit_interval`] the writer waits; a longer one is this.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Thresholds in microseconds: [`JournalStats::commits_slower_than`] counts the commits whose
/// write and sync took longer than each.
pub const COMMIT_THRESHOLDS_US: [u64; 7] = [250, 500, 1_000, 2_000, 5_000, 20_000, 100_000];

/// Makes a write past the process's file-size limit (`ulimit -f`) fail with `EFBIG`, which
/// fails the journal closed, instead of raising `SIGXFSZ`, which kills the process. Call it
/// once at start, before any thread writes.
pub fn fail_writes_past_the_file_size_limit() {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to be unsafe in.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// A record's number: its place in the journal, counted across segments. A segment's name
/// is the number of its first record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where the journal lives and how it commits.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The directory of the segment files (`metering.journal_dir`), created if missing. One
    /// process at a time: it is locked for as long as the journal is open.
    pub dir: PathBuf,
    /// A segment is closed, and the next begun, before a commit would take it past this
    /// size. A checkpoint removes whole segments, so this is also about what a journal whose
    /// records are all flushed still holds on disk.
    pub segment_bytes: u64,
    /// Past this many bytes on disk, [`JournalHealth::Full`]: new requests are to be
    /// refused until checkpoints bring it back under. Appends are still taken, so that the
    /// requests already running are journaled.
    pub max_bytes: u64,
    /// How long the writer gathers appends after the first before it writes them and syncs
    /// once. Zero takes only what is already waiting; at most [`MAX_COMMIT_INTERVAL`].
    pub commit_interval: Duration,
    /// A commit is written as soon as it gathers this many bytes.
    pub commit_bytes: usize,
    /// Whether segments are made ahead of need, zero-filled to `segment_bytes`, so that a
    /// commit's `fdatasync` has no file size to commit (docs/adr/0019-write-ahead-journal.md).
    /// Each segment then takes `segment_bytes` on disk from its start.
    pub preallocate: bool,
}

impl JournalConfig {
    /// The defaults for `dir`: 16 MiB segments, 1 GiB on disk at most, a commit every
    /// 100 µs or 256 KiB (docs/BENCHMARKS.md, "The journal's writer woken less, and a
    /// shorter gathering").
    pub fn new(dir: impl Into<PathBuf>) -> JournalConfig {
        JournalConfig {
            dir: dir.into(),
            segment_bytes: 16 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            commit_interval: Duration::from_micros(100),
            commit_bytes: 256 * 1024,
            preallocate: true,
        }
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the journal directory {} is locked by {}: two processes must never share one", .dir.display(), holder_name(*.holder))]
    Locked { dir: PathBuf, holder: Option<u32> },
    #[error("journal: {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal segment {} holds a record of format version {version} at byte {offset}, which this build cannot read: run the tollgate that wrote it", .segment.display())]
    UnsupportedVersion {
        segment: PathBuf,
        offset: u64,
        version: u8,
    },
    #[error("the journal cannot be written: {reason}")]
    Failed { reason: String },
    #[error("the journal's writer has {MAX_QUEUED_APPENDS} appends waiting")]
    Overloaded,
    #[error("the journal is stopped")]
    Stopped,
    #[error(transparent)]
    Unencodable(#[from] EncodeError),
}

/// A record read back at start-up, to be flushed before anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub lsn: Lsn,
    pub record: UsageRecord,
}

/// What the journal held at start-up: the segments whose records are to be replayed, oldest
/// first, and what could not be read. The records are read one segment at a time
/// ([`ReplaySegment::read`]), so that a journal of `max_bytes` never sits in memory whole;
/// report them in order with [`Journal::mark_replayed`].
#[derive(Debug)]
pub struct Replay {
    pub segments: Vec<ReplaySegment>,
    pub report: ReplayReport,
}

impl Replay {
    /// Every record, read at once: for journals known to be small.
    pub fn records(&self) -> Result<Vec<Replayed>, JournalError> {
        let mut records = Vec::with_capacity(self.report.records);
        for segment in &self.segments {
            records.extend(segment.read()?);
        }
        Ok(records)
    }
}

/// One segment whose records a replay reads.
#[derive(Debug, Clone)]
pub struct ReplaySegment {
    base: Lsn,
    path: PathBuf,
    /// Its records' LSNs stay below this one.
    limit: Lsn,
}

impl ReplaySegment {
    /// Its records, in order, as [`Journal::open`] counted them. Blocking: it reads the file.
    pub fn read(&self) -> Result<Vec<Replayed>, JournalError> {
        segment::records_of(self.base, &self.path, self.limit)
    }
}

/// What [`Journal::open`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segments read.
    pub segments: usize,
    /// Records replayed.
    pub records: usize,
    /// The last segment's unfinished tail, cut off: a crash during a write. Nothing in it
    /// was ever reported durable.
    pub torn_tail: Option<Cut>,
    /// Bytes that could not be read anywhere else: lost records.
    pub damage: Vec<Damage>,
}

impl ReplayReport {
    /// Bytes of damage: records that were on disk and could not be read back.
    pub fn damaged_bytes(&self) -> u64 {
        self.damage.iter().map(|d| d.bytes).sum()
    }
}

/// A torn tail that was cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub segment: PathBuf,
    /// Where the segment now ends (0: the segment was removed, its header never whole).
    pub offset: u64,
    pub bytes: u64,
}

/// Bytes of a segment that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub kind: DamageKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// One record whose checksum fails, followed by good ones: skipped alone.
    BadChecksum,
    /// One record whose checksum holds but whose content does not decode: skipped alone.
    Undecodable(&'static str),
    /// From here to the end of a segment nothing can be framed (a damaged length): the rest
    /// of that segment is not read; the following segments are. In the last segment, only
    /// when a good frame follows (otherwise it is a torn tail, cut off); its bytes are kept.
    UnreadableRest,
    /// A segment whose header is whole but not its own (a flipped bit, another base): none of
    /// it is read, and it is kept. A last segment no longer than a header is a torn tail.
    BadHeader,
}

/// A record accepted for the journal: its number, and the future that resolves once it is
/// durable.
#[must_use = "the record is durable only once `durable` resolves"]
pub struct Appended {
    pub lsn: Lsn,
    pub durable: Durable,
}

/// Resolves once its record is on disk (`Ok`), or when it never will be: the write failed,
/// or the writer stopped.
#[must_use = "a future does nothing unless polled"]
pub struct Durable(oneshot::Receiver<Result<(), JournalError>>);

impl Future for Durable {
    type Output = Result<(), JournalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(JournalError::Stopped)))
    }
}

/// What a checkpoint removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub segments: usize,
    pub bytes: u64,
    /// Of those, damaged segments renamed aside (`.damaged`), not removed.
    pub damaged: usize,
}

/// Whether the journal can take what admission sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalHealth {
    Healthy,
    /// More than `max_bytes` on disk: the ledger is behind (Postgres down). New requests are
    /// to be refused until checkpoints bring it back under.
    Full {
        bytes: u64,
        limit: u64,
    },
    /// A commit or checkpoint has been running for longer than [`STALLED_AFTER`]: the disk
    /// hangs.
    Stalled {
        for_: Duration,
    },
    /// More than [`UNHEALTHY_QUEUED`] appends wait for the writer: it is not keeping up, and
    /// at [`MAX_QUEUED_APPENDS`] appends are refused.
    Overloaded {
        queued: u64,
    },
    /// Shut down, or its writer's thread has ended: appends are refused.
    Stopped,
    /// A write or sync failed: nothing is written any more.
    Failed {
        reason: String,
    },
}

impl JournalHealth {
    /// New requests may be admitted.
    pub fn admits(&self) -> bool {
        *self == JournalHealth::Healthy
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JournalStats {
    /// Records accepted by [`Journal::append`] since start.
    pub appended: u64,
    /// Records made durable since start.
    pub written: u64,
    /// Group commits since start: each one `fdatasync` for all its records.
    pub commits: u64,
    /// Every `fdatasync` of a segment file since start: the commits', and one per segment
    /// created.
    pub syncs: u64,
    /// Appends waiting for the writer.
    pub queued: u64,
    /// Records appended or replayed that are not reported flushed.
    pub unflushed: u64,
    /// The segments' headers and records. A preallocated segment takes its whole size on
    /// disk from the start, so the files can take up to a segment more than this.
    pub bytes: u64,
    pub segments: u64,
    /// Preallocated segments made since start, used or ready.
    pub spares: u64,
    /// Commits since start whose write and sync took longer than each of
    /// [`COMMIT_THRESHOLDS_US`] microseconds.
    pub commits_slower_than: [u64; COMMIT_THRESHOLDS_US.len()],
}

/// The journal. Cheap to clone; every clone is the same journal. The writer stops once
/// [`Journal::shutdown`] is called or every clone is dropped, after writing what it was sent.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// The way to the writer; closed once shut down, or once every handle is gone. Records
    /// are numbered under its lock, so the writer receives them in the order of their numbers.
    intake: Arc<Intake>,
    sequence: Arc<Mutex<Sequence>>,
    status: Arc<Status>,
    max_bytes: u64,
    /// Records accepted since start.
    appended: AtomicU64,
    /// Closed by the writer once it has stopped and released the directory.
    stopped: watch::Receiver<()>,
}

/// The last handle gone closes the intake: the writer writes what it was sent, then stops.
impl Drop for Inner {
    fn drop(&mut self) {
        self.intake.close();
    }
}

impl Journal {
    /// Locks the directory, reads back every record, cuts a torn tail off, and starts the
    /// writer on a thread of its own. Blocking: call it before serving, or on a blocking
    /// thread. The records must be flushed, and reported with [`Journal::mark_flushed`],
    /// like any appended.
    pub fn open(config: JournalConfig) -> Result<(Journal, Replay), JournalError> {
        let dir = config.dir.clone();
        segment::create_dir(&dir)?;
        let lock = DirLock::acquire(&dir)?;
        // A spare an earlier process left is never a segment; a new one is made.
        segment::remove_spare(&dir)?;
        let scan = segment::scan(&dir)?;
        let mut segments: VecDeque<SegmentFile> = scan.segments.into();
        if let Some(tail) = &scan.torn_tail {
            cut_torn_tail(&dir, tail, &mut segments)?;
        }
        let report = ReplayReport {
            segments: segments.len(),
            records: scan.records,
            torn_tail: scan.torn_tail,
            damage: scan.damage,
        };
        log_report(&dir, &report);

        let status = Arc::new(Status::new());
        let (active, preallocated) = active_segment(
            &dir,
            &mut segments,
            scan.next,
            config.segment_bytes,
            &status,
        )?;
        status
            .bytes
            .store(segments.iter().map(|s| s.bytes).sum(), Ordering::Relaxed);
        status
            .segments
            .store(segments.len() as u64, Ordering::Relaxed);

        let sequence = Arc::new(Mutex::new(Sequence {
            next: scan.next,
            unflushed: BTreeSet::new(),
            replaying: scan.first_record.map(|from| Replaying {
                from,
                left: scan.records as u64,
            }),
        }));
        let intake = Arc::new(Intake::new(config.commit_bytes));
        let (stopped_tx, stopped_rx) = watch::channel(());
        let writer = Writer {
            dir: dir.clone(),
            segment_bytes: config.segment_bytes,
            commit_interval: config.commit_interval,
            segments,
            active,
            preallocated,
            spares: Spares::start(
                &dir,
                config.segment_bytes,
                config.preallocate,
                Arc::clone(&status),
            ),
            next: scan.next,
            status: Arc::clone(&status),
            sequence: Arc::clone(&sequence),
            buffer: Vec::with_capacity(config.commit_bytes.min(4 * 1024 * 1024)),
            lock,
        };
        let commands = Arc::clone(&intake);
        std::thread::Builder::new()
            .name("tollgate-journal".to_owned())
            .spawn(move || writer.run(&commands, stopped_tx))
            .map_err(|source| JournalError::Io {
                what: "starting the writer thread for",
                path: dir.clone(),
                source,
            })?;
        let journal = Journal {
            inner: Arc::new(Inner {
                intake,
                sequence,
                status,
                max_bytes: config.max_bytes,
                appended: AtomicU64::new(0),
                stopped: stopped_rx,
            }),
        };
        Ok((
            journal,
            Replay {
                segments: scan
                    .replayed
                    .into_iter()
                    .map(|(base, path, limit)| ReplaySegment { base, path, limit })
                    .collect(),
                report,
            },
        ))
    }

    /// Numbers `record` and sends it to the writer, without blocking. The record is durable
    /// once the returned [`Durable`] resolves `Ok`; appends made meanwhile share its
    /// `fdatasync`. Refused when the journal has failed, is stopped, or has
    /// [`MAX_QUEUED_APPENDS`] waiting. Numbers follow the order in which appends return.
    pub fn append(&self, record: &UsageRecord) -> Result<Appended, JournalError> {
        if let Some(reason) = self.inner.status.failure() {
            return Err(JournalError::Failed {
                reason: reason.to_owned(),
            });
        }
        let mut frame = frame::start(record::FIXED_LEN + record.model.len());
        record::encode(record, &mut frame)?;
        frame::seal(&mut frame).map_err(|too_large| EncodeError::TooLarge(too_large.0))?;
        let (done, durable) = oneshot::channel();
        let sent = Instant::now();
        let lsn = self.inner.intake.append(frame.len(), || {
            let mut sequence = lock(&self.inner.sequence);
            let lsn = sequence.next;
            sequence.next = Lsn(lsn.0 + 1);
            sequence.unflushed.insert(lsn);
            self.inner.status.queued.fetch_add(1, Ordering::Relaxed);
            let pending = Pending {
                lsn,
                frame,
                sent,
                done,
            };
            (Command::Append(pending), lsn)
        })?;
        self.inner.appended.fetch_add(1, Ordering::Relaxed);
        Ok(Appended {
            lsn,
            durable: Durable(durable),
        })
    }

    /// The ledger now holds these records (appended or replayed): a checkpoint may remove
    /// them.
    pub fn mark_flushed(&self, lsns: impl IntoIterator<Item = Lsn>) {
        let mut sequence = lock(&self.inner.sequence);
        for lsn in lsns {
            sequence.unflushed.remove(&lsn);
        }
    }

    /// The ledger now holds every replayed record below `below`, `count` of them (replay
    /// reports them in order): a checkpoint may remove their segments.
    pub fn mark_replayed(&self, below: Lsn, count: u64) {
        let mut sequence = lock(&self.inner.sequence);
        if let Some(replaying) = &mut sequence.replaying {
            replaying.from = replaying.from.max(below);
            replaying.left = replaying.left.saturating_sub(count);
            if replaying.left == 0 {
                sequence.replaying = None;
            }
        }
    }

    /// Removes every segment whose records have all been reported flushed, once the writer
    /// gets to it (after the commit under way). Damaged segments are renamed aside instead.
    pub async fn checkpoint(&self) -> Result<Checkpointed, JournalError> {
        let below = lock(&self.inner.sequence).low_water();
        let (done, answer) = oneshot::channel();
        self.inner
            .intake
            .send(Command::Checkpoint(CheckpointRequest { below, done }))?;
        answer.await.unwrap_or(Err(JournalError::Stopped))
    }

    pub fn health(&self) -> JournalHealth {
        let status = &self.inner.status;
        if let Some(reason) = status.failure() {
            return JournalHealth::Failed {
                reason: reason.to_owned(),
            };
        }
        if status.writer_stopped() || self.inner.intake.is_closed() {
            return JournalHealth::Stopped;
        }
        if let Some(running) = status.busy_for() {
            if running > STALLED_AFTER {
                return JournalHealth::Stalled { for_: running };
            }
        }
        let queued = status.queued.load(Ordering::Relaxed);
        if queued > UNHEALTHY_QUEUED {
            return JournalHealth::Overloaded { queued };
        }
        let bytes = status.bytes.load(Ordering::Relaxed);
        if bytes > self.inner.max_bytes {
            return JournalHealth::Full {
                bytes,
                limit: self.inner.max_bytes,
            };
        }
        JournalHealth::Healthy
    }

    pub fn stats(&self) -> JournalStats {
        let status = &self.inner.status;
        JournalStats {
            appended: self.inner.appended.load(Ordering::Relaxed),
            written: status.written.load(Ordering::Relaxed),
            commits: status.commits.load(Ordering::Relaxed),
            syncs: status.syncs.load(Ordering::Relaxed),
            queued: status.queued.load(Ordering::Relaxed),
            unflushed: lock(&self.inner.sequence).unflushed(),
            bytes: status.bytes.load(Ordering::Relaxed),
            segments: status.segments.load(Ordering::Relaxed),
            spares: status.spares.load(Ordering::Relaxed),
            commits_slower_than: status
                .slower_than
                .each_ref()
                .map(|count| count.load(Ordering::Relaxed)),
        }
    }

    /// Refuses appends from now on, lets the writer write those already sent, and waits
    /// until it has stopped and released the directory. If every record is reported flushed
    /// by then, the writer leaves no segment to replay but an empty one. Bound the wait with
    /// a timeout: a hung disk holds it. Every call waits, concurrent ones included.
    pub async fn shutdown(&self) {
        self.inner.intake.close();
        let mut stopped = self.inner.stopped.clone();
        // Nothing is ever sent: this ends when the writer drops its side.
        while stopped.changed().await.is_ok() {}
    }
}

/// Cuts the last segment's torn tail off, and keeps `segments` in step.
fn cut_torn_tail(
    dir: &Path,
    tail: &Cut,
    segments: &mut VecDeque<SegmentFile>,
) -> Result<(), JournalError> {
    match segment::cut(dir, tail)? {
        Some(bytes) => {
            if let Some(last) = segments.back_mut() {
                last.bytes = bytes;
            }
        }
        None => {
            segments.pop_back();
        }
    }
    Ok(())
}

/// The segment to write to: the last one if it holds no record yet (a clean shutdown left
/// it, or its only record was torn), otherwise a new one at `next`; and whether it is
/// preallocated to `segment_bytes`.
fn active_segment(
    dir: &Path,
    segments: &mut VecDeque<SegmentFile>,
    next: Lsn,
    segment_bytes: u64,
    status: &Status,
) -> Result<(std::fs::File, bool), JournalError> {
    let empty_last = segments
        .back()
        .filter(|last| last.base == next && !last.damaged)
        .map(|last| last.path.clone());
    let active = match empty_last {
        Some(path) => {
            let file = segment::reopen(&path)?;
            let allocated = file.metadata().map_or(0, |m| m.len());
            (file, allocated >= segment_bytes)
        }
        None => {
            let file = segment::create(dir, next)?;
            status.syncs.fetch_add(1, Ordering::Relaxed);
            segments.push_back(SegmentFile {
                base: next,
                path: segment::segment_path(dir, next),
                bytes: frame::HEADER_LEN as u64,
                damaged: false,
            });
            (file, false)
        }
    };
    segment::sync_dir(dir)?;
    Ok(active)
}

fn holder_name(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_owned(),
    }
}

fn log_report(dir: &Path, report: &ReplayReport) {
    if let Some(tail) = &report.torn_tail {
        tracing::warn!(
            segment = %tail.segment.display(),
            offset = tail.offset,
            bytes = tail.bytes,
            "the journal ended in a write that never finished (a crash): cut off {} bytes",
            tail.bytes
        );
    }
    for damage in &report.damage {
        tracing::error!(
            segment = %damage.segment.display(),
            offset = damage.offset,
            bytes = damage.bytes,
            kind = ?damage.kind,
            "journal damage: {} bytes could not be read back, and the usage they held is lost",
            damage.bytes
        );
    }
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        records = report.records,
        "journal opened"
    );
}
