//! The journal's writer: one thread that owns the segment files, gathers appends into a
//! group commit, and retires segments at checkpoints (docs/adr/0019-write-ahead-journal.md).
//!
//! It is a thread of its own, not a task: `write` and `fdatasync` block, and the runtimes
//! around it are HTTP workers that must never wait on a disk.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::frame::HEADER_LEN;
use super::intake::{Intake, Taken};
use super::segment::{self, DirLock, SegmentFile};
use super::{Checkpointed, JournalError, Lsn, COMMIT_THRESHOLDS_US, MAX_COMMIT_INTERVAL};

/// What the handles send the writer, through the [`Intake`].
pub(super) enum Command {
    Append(Pending),
    Checkpoint(CheckpointRequest),
}

/// One record on its way to the disk.
pub(super) struct Pending {
    pub lsn: Lsn,
    /// The whole frame, sealed.
    pub frame: Vec<u8>,
    /// When it was sent: a commit gathers for at most its interval after its first record
    /// was sent, however long that record waited for the commit before.
    pub sent: Instant,
    /// Told once the frame is durable, or why it never will be.
    pub done: oneshot::Sender<Result<(), JournalError>>,
}

pub(super) struct CheckpointRequest {
    /// Every record below this LSN is in the ledger.
    pub below: Lsn,
    pub done: oneshot::Sender<Result<Checkpointed, JournalError>>,
}

/// LSNs as the handles hand them out, and which are not in the ledger yet.
#[derive(Debug, Default)]
pub(super) struct Sequence {
    /// The LSN the next append gets.
    pub next: Lsn,
    /// Appended, and not yet reported flushed: what a checkpoint must keep.
    pub unflushed: BTreeSet<Lsn>,
    /// Replayed records not yet reported in the ledger; `None` once every one is.
    pub replaying: Option<Replaying>,
}

/// The replayed records not yet in the ledger: they are reported in order, so a bound and a
/// count stand for them all, however many the journal held.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replaying {
    /// Every replayed record below this LSN is in the ledger.
    pub from: Lsn,
    pub left: u64,
}

impl Sequence {
    /// Every record below this LSN is in the ledger (or was never written).
    pub fn low_water(&self) -> Lsn {
        let appended = self.unflushed.first().copied().unwrap_or(self.next);
        self.replaying
            .map_or(appended, |replaying| appended.min(replaying.from))
    }

    /// Records appended or replayed that are not reported in the ledger.
    pub fn unflushed(&self) -> u64 {
        self.unflushed.len() as u64 + self.replaying.map_or(0, |replaying| replaying.left)
    }
}

/// What the writer shows the handles: counters, and whether it can still write.
pub(super) struct Status {
    epoch: Instant,
    /// `fdatasync` calls on segment files: one per group commit, one per segment created.
    pub syncs: AtomicU64,
    /// Group commits that made records durable.
    pub commits: AtomicU64,
    /// Commits whose write and sync took longer than each of [`COMMIT_THRESHOLDS_US`]: what
    /// a durable reply waits for, besides the gathering.
    pub slower_than: [AtomicU64; COMMIT_THRESHOLDS_US.len()],
    /// Records made durable since start.
    pub written: AtomicU64,
    /// Bytes of the segment files.
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    /// Spare segments made, ready for the writer.
    pub spares: AtomicU64,
    /// Appends sent to the writer that it has not taken yet.
    pub queued: AtomicU64,
    /// Set by the first write or sync that fails, or by the writer's thread panicking;
    /// nothing is written after it.
    failure: OnceLock<String>,
    /// The writer's thread has ended: nothing is written any more.
    stopped: AtomicBool,
    /// When the commit or checkpoint under way began, in microseconds since `epoch`, plus
    /// one; zero when none is under way.
    busy_since: AtomicU64,
}

impl Status {
    pub fn new() -> Status {
        Status {
            epoch: Instant::now(),
            syncs: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            slower_than: Default::default(),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            segments: AtomicU64::new(0),
            spares: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            failure: OnceLock::new(),
            stopped: AtomicBool::new(false),
            busy_since: AtomicU64::new(0),
        }
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records the first failure; whether this was it.
    fn fail(&self, reason: String) -> bool {
        self.failure.set(reason).is_ok()
    }

    pub fn writer_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// How long the commit or checkpoint under way has been running, if one is.
    pub fn busy_for(&self) -> Option<Duration> {
        let began = self.busy_since.load(Ordering::Acquire).checked_sub(1)?;
        let now = self.micros_since_epoch();
        Some(Duration::from_micros(now.saturating_sub(began)))
    }

    /// Runs `work` (disk work that may hang) with the stall clock running.
    fn timed<T>(&self, work: impl FnOnce() -> T) -> T {
        let began = self.micros_since_epoch().saturating_add(1);
        self.busy_since.store(began, Ordering::Release);
        let result = work();
        self.busy_since.store(0, Ordering::Release);
        result
    }

    fn micros_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Marks the writer stopped when its thread ends, and failed if it ends by a panic, so that
/// `health()` never reports a journal nobody writes as healthy; and closes the intake,
/// dropping what it still holds, so that every append waiting there learns at once that it
/// will never be durable, and no later one is taken.
struct StopGuard<'a>(Arc<Status>, &'a Intake);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.fail("the journal's writer thread panicked".into()) {
            tracing::error!("the journal's writer thread panicked: nothing more is written");
        }
        self.0.stopped.store(true, Ordering::Release);
        self.1.abandon();
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct Writer {
    pub dir: PathBuf,
    /// A segment is closed, and the next created, before a commit would take it past this.
    pub segment_bytes: u64,
    pub commit_interval: Duration,
    /// Oldest first; the last is the one written to.
    pub segments: VecDeque<SegmentFile>,
    pub active: File,
    /// Whether the active segment was preallocated: if not, the writer moves to a spare as
    /// soon as one is ready.
    pub preallocated: bool,
    pub spares: Spares,
    /// The LSN of the next frame written.
    pub next: Lsn,
    pub status: Arc<Status>,
    pub sequence: Arc<Mutex<Sequence>>,
    /// Reused for every commit's bytes.
    pub buffer: Vec<u8>,
    /// Held until the writer is done with the directory.
    pub lock: DirLock,
}

impl Writer {
    /// Runs until every handle is gone (or shut the journal down) and the last append is
    /// written; then releases the directory and drops `stopped`, which every shutdown waits
    /// for (a panic drops it too).
    pub fn run(mut self, intake: &Intake, stopped: watch::Sender<()>) {
        let _guard = StopGuard(Arc::clone(&self.status), intake);
        let mut batch = Vec::new();
        let mut checkpoints = Vec::new();
        let mut commands = VecDeque::new();
        // A commit gathers until the interval after its first record was sent, however long
        // that record waited for the commit before, or until the byte budget is reached.
        let interval = self.commit_interval.min(MAX_COMMIT_INTERVAL);
        let gather_until = |sent: Instant| sent.checked_add(interval).unwrap_or(sent);
        while let Taken::Commands(mut taken) = intake.next(commands, gather_until) {
            for command in taken.drain(..) {
                self.take(command, &mut batch, &mut checkpoints);
            }
            commands = taken;
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            for request in checkpoints.drain(..) {
                let status = Arc::clone(&self.status);
                let done = status.timed(|| self.checkpoint(request.below));
                let _ = request.done.send(done);
            }
        }
        self.finish();
        let Writer {
            lock,
            active,
            mut spares,
            ..
        } = self;
        spares.stop();
        drop(active);
        drop(lock);
        drop(stopped);
    }

    /// Adds a command to the batch, or to the checkpoints run after it.
    fn take(
        &self,
        command: Command,
        batch: &mut Vec<Pending>,
        checkpoints: &mut Vec<CheckpointRequest>,
    ) {
        match command {
            Command::Append(pending) => {
                self.status.queued.fetch_sub(1, Ordering::Relaxed);
                batch.push(pending);
            }
            Command::Checkpoint(request) => checkpoints.push(request),
        }
    }

    /// Writes the batch and syncs it once, then tells every waiter.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let status = Arc::clone(&self.status);
        let began = Instant::now();
        let written = status.timed(|| self.write(batch));
        let took = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        for (threshold, count) in COMMIT_THRESHOLDS_US.iter().zip(&status.slower_than) {
            if took > *threshold {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        match written {
            Ok(()) => {
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Ok(()));
                }
            }
            Err(reason) => {
                if self.status.fail(reason.clone()) {
                    tracing::error!(
                        reason = %reason,
                        dir = %self.dir.display(),
                        "the journal cannot be written: nothing more is written to it until \
                         tollgate restarts"
                    );
                }
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(JournalError::Failed {
                        reason: reason.clone(),
                    }));
                }
            }
        }
    }

    fn write(&mut self, batch: &[Pending]) -> Result<(), String> {
        if let Some(reason) = self.status.failure() {
            return Err(reason.to_owned());
        }
        let Some(first) = batch.first() else {
            return Ok(());
        };
        // A record's LSN is its place in the files; the handles number appends in the
        // order they send them, so a gap is a bug, and writing past it would misnumber.
        if first.lsn != self.next {
            return Err(format!(
                "appends out of sequence: expected LSN {}, got {}",
                self.next, first.lsn
            ));
        }
        let size: u64 = batch.iter().map(|p| p.frame.len() as u64).sum();
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        // A segment holding no record yet is never closed: the next would take its name.
        if active_bytes > HEADER_LEN as u64
            && (active_bytes + size > self.segment_bytes
                || (!self.preallocated && self.spares.ready()))
        {
            self.rotate(first.lsn).map_err(|error| error.to_string())?;
        }
        self.buffer.clear();
        for pending in batch {
            self.buffer.extend_from_slice(&pending.frame);
        }
        let (path, offset) = self
            .segments
            .back()
            .map(|s| (s.path.clone(), s.bytes))
            .unwrap_or_default();
        // At the segment's logical end: past it lie a preallocated segment's zeros.
        self.active
            .write_all_at(&self.buffer, offset)
            .map_err(|error| format!("writing {}: {error}", path.display()))?;
        if let Some(active) = self.segments.back_mut() {
            active.bytes += size;
        }
        self.status.bytes.fetch_add(size, Ordering::Relaxed);
        self.active
            .sync_data()
            .map_err(|error| format!("syncing {}: {error}", path.display()))?;
        self.status.syncs.fetch_add(1, Ordering::Relaxed);
        self.status.commits.fetch_add(1, Ordering::Relaxed);
        self.status
            .written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.next = Lsn(self.next.0 + batch.len() as u64);
        Ok(())
    }

    /// Closes the active segment (already synced by its last commit) and starts the next
    /// with `base`, durably, before any record is written to it.
    fn rotate(&mut self, base: Lsn) -> Result<(), JournalError> {
        let spare = self.spares.take().and_then(|spare| {
            let installed = segment::install_spare(&self.dir, spare, base);
            self.spares.want();
            installed
                .inspect_err(|error| {
                    tracing::warn!(%error, "a spare segment could not be used; creating one instead");
                })
                .ok()
        });
        self.preallocated = spare.is_some();
        let file = match spare {
            Some(file) => file,
            None => segment::create(&self.dir, base)?,
        };
        self.status.syncs.fetch_add(1, Ordering::Relaxed);
        segment::sync_dir(&self.dir)?;
        self.active = file;
        self.segments.push_back(SegmentFile {
            base,
            path: segment::segment_path(&self.dir, base),
            bytes: HEADER_LEN as u64,
            damaged: false,
        });
        self.status
            .bytes
            .fetch_add(HEADER_LEN as u64, Ordering::Relaxed);
        self.status
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Retires every closed segment whose records all have LSNs below `below`. The active
    /// segment is never retired: it is being written.
    fn checkpoint(&mut self, below: Lsn) -> Result<Checkpointed, JournalError> {
        let mut done = Checkpointed::default();
        let mut result = Ok(());
        while let (Some(oldest), Some(following)) = (self.segments.front(), self.segments.get(1)) {
            // A closed segment's records end where the next segment's begin.
            if following.base > below {
                break;
            }
            if let Err(error) = segment::retire(oldest) {
                result = Err(error);
                break;
            }
            done.segments += 1;
            done.bytes += oldest.bytes;
            done.damaged += usize::from(oldest.damaged);
            self.segments.pop_front();
        }
        if done.segments > 0 {
            self.status.bytes.fetch_sub(done.bytes, Ordering::Relaxed);
            self.status
                .segments
                .store(self.segments.len() as u64, Ordering::Relaxed);
            result = result.and(segment::sync_dir(&self.dir));
        }
        result.map(|()| done)
    }

    /// At the end: when every record written is in the ledger, nothing needs replaying, so
    /// the segments are retired and an empty one at the next LSN keeps the numbering going.
    /// Otherwise the journal stays as it is, for the next start to replay.
    fn finish(&mut self) {
        if self.status.failure().is_some() {
            return;
        }
        if lock(&self.sequence).low_water() < self.next {
            return;
        }
        let active_has_records = self
            .segments
            .back()
            .is_some_and(|active| active.bytes > HEADER_LEN as u64);
        if active_has_records {
            if let Err(error) = self.rotate(self.next) {
                tracing::warn!(%error, "the journal's last segment could not be closed; the next start replays it");
                return;
            }
        }
        if let Err(error) = self.checkpoint(self.next) {
            tracing::warn!(%error, "the journal's flushed segments could not all be removed");
        }
    }
}

/// The thread that makes zero-filled spare segments ahead of the writer, one at a time, so
/// that making one never delays a commit. Best effort: a spare that cannot be made (a full
/// disk, a file-size limit) is reported, and the writer creates its next segment itself.
pub(super) struct Spares {
    /// Asks for the next spare; `None` once stopped.
    wanted: Option<SyncSender<()>>,
    made: Receiver<File>,
    /// A spare made and not used yet.
    ready: Option<File>,
    /// The thread's last attempt failed, and it waits for a new request.
    failed: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    /// `stop` has run: the directory may belong to another process now.
    stopped: bool,
}

/// A writer that ends without `stop` (a panic) still stops the thread, so that nothing
/// writes in the directory after its lock is released.
impl Drop for Spares {
    fn drop(&mut self) {
        if !self.stopped {
            self.stop();
        }
    }
}

impl Spares {
    /// Starts the thread and asks it for the first spare, of `bytes`; with `enabled` false,
    /// none is ever made.
    pub fn start(dir: &Path, bytes: u64, enabled: bool, status: Arc<Status>) -> Spares {
        let (wanted, requests) = mpsc::sync_channel::<()>(1);
        let (made_tx, made) = mpsc::sync_channel(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Spares {
                wanted: None,
                made,
                ready: None,
                failed,
                cancel,
                thread: None,
                dir: dir.to_owned(),
                stopped: true,
            };
        }
        let thread = {
            let (dir, cancel) = (dir.to_owned(), Arc::clone(&cancel));
            let failed = Arc::clone(&failed);
            std::thread::Builder::new()
                .name("tollgate-journal-spare".to_owned())
                .spawn(move || {
                    for () in requests {
                        match segment::prepare_spare(&dir, bytes, &cancel) {
                            Ok(Some(spare)) => {
                                if made_tx.send(spare).is_err() {
                                    break;
                                }
                                status.spares.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(None) => break,
                            Err(error) => {
                                tracing::warn!(
                                    %error,
                                    "a spare journal segment could not be made; the next \
                                     segment is created when it is needed, and its commits \
                                     cost more"
                                );
                                failed.store(true, Ordering::Release);
                            }
                        }
                    }
                })
        };
        let thread = thread
            .inspect_err(|error| {
                tracing::warn!(%error, "the journal's spare segments cannot be made");
            })
            .ok();
        let spares = Spares {
            wanted: Some(wanted),
            made,
            ready: None,
            failed,
            cancel,
            thread,
            dir: dir.to_owned(),
            stopped: false,
        };
        spares.want();
        spares
    }

    /// Whether a spare is ready to be taken.
    fn ready(&mut self) -> bool {
        if self.ready.is_none() {
            self.ready = self.made.try_recv().ok();
        }
        self.ready.is_some()
    }

    /// The spare, if one is ready. When the thread's last attempt failed, it is asked for
    /// another, so that one failure (a disk full for a while) does not end preallocation for
    /// the rest of the process. It is never asked while it may still be making one: a second
    /// attempt would remove the first spare's name before the writer installs it.
    fn take(&mut self) -> Option<File> {
        self.ready();
        let spare = self.ready.take();
        if spare.is_none() && self.failed.swap(false, Ordering::AcqRel) {
            self.want();
        }
        spare
    }

    /// Asks for the next spare. One is asked for at a time, so the request never waits.
    fn want(&self) {
        if let Some(wanted) = &self.wanted {
            let _ = wanted.try_send(());
        }
    }

    /// Stops the thread, waits for it, and removes the spare it left: nothing of the
    /// journal's is written once the directory's lock is released.
    fn stop(&mut self) {
        self.stopped = true;
        self.cancel.store(true, Ordering::Relaxed);
        self.wanted = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.ready = None;
        if let Err(error) = segment::remove_spare(&self.dir) {
            tracing::warn!(%error, "the journal's spare segment could not be removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits for `done`, polling; panics after 30 s.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..3_000 {
            if done() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{what} did not happen");
    }

    #[test]
    fn a_spare_that_could_not_be_made_is_asked_for_again_when_the_writer_finds_none() {
        let dir = tempfile::tempdir().unwrap();
        // The spare's name taken by a directory fails the attempt, as a full disk would.
        let blocker = dir.path().join("spare.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let status = Arc::new(Status::new());
        let mut spares = Spares::start(dir.path(), 64 * 1024, true, Arc::clone(&status));
        eventually("the first attempt's failure", || {
            spares.failed.load(Ordering::Acquire)
        });
        std::fs::remove_dir(&blocker).unwrap();
        assert!(spares.take().is_none(), "none was made");
        eventually("a spare made on the second request", || spares.ready());
        assert_eq!(status.spares.load(Ordering::Relaxed), 1);
        assert!(spares.take().is_some());
        spares.stop();
    }

    #[test]
    fn a_writer_thread_that_panics_leaves_the_journal_failed_and_stopped() {
        let status = Arc::new(Status::new());
        let held = Arc::clone(&status);
        let intake = Arc::new(Intake::new(1024));
        let (done, durable) = oneshot::channel();
        intake
            .append(8, || {
                let pending = Pending {
                    lsn: Lsn(0),
                    frame: vec![0; 8],
                    sent: Instant::now(),
                    done,
                };
                (Command::Append(pending), ())
            })
            .unwrap();
        let writer_side = Arc::clone(&intake);
        let ended = std::thread::spawn(move || {
            let _guard = StopGuard(held, &writer_side);
            panic!("a bug in the writer");
        })
        .join();
        assert!(ended.is_err());
        assert!(status.writer_stopped());
        assert!(intake.is_closed());
        // The append that waited is told at once that it will never be durable.
        assert!(durable.blocking_recv().is_err());
        assert_eq!(
            status.failure(),
            Some("the journal's writer thread panicked")
        );
    }
}
