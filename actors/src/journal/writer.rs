//! The journal's writer: one thread that owns the segment files, gathers appends into a
//! group commit, and retires segments at checkpoints (docs/adr/0019-write-ahead-journal.md).
//!
//! It is a thread of its own, not a task: `write` and `fdatasync` block, and the runtimes
//! around it are HTTP workers that must never wait on a disk.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use super::frame::HEADER_LEN;
use super::segment::{self, DirLock, SegmentFile};
use super::{Checkpointed, JournalError, Lsn, MAX_COMMIT_INTERVAL};

/// What the handles send the writer.
pub(super) enum Command {
    Append(Pending),
    Checkpoint(CheckpointRequest),
}

/// One record on its way to the disk.
pub(super) struct Pending {
    pub lsn: Lsn,
    /// The whole frame, sealed.
    pub frame: Vec<u8>,
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
    /// Appended or replayed, and not yet reported flushed: what a checkpoint must keep.
    pub unflushed: BTreeSet<Lsn>,
}

impl Sequence {
    /// Every record below this LSN is in the ledger (or was never written).
    pub fn low_water(&self) -> Lsn {
        self.unflushed.first().copied().unwrap_or(self.next)
    }
}

/// What the writer shows the handles: counters, and whether it can still write.
pub(super) struct Status {
    epoch: Instant,
    /// `fdatasync` calls on segment files: one per group commit, one per segment created.
    pub syncs: AtomicU64,
    /// Group commits that made records durable.
    pub commits: AtomicU64,
    /// Records made durable since start.
    pub written: AtomicU64,
    /// Bytes of the segment files.
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
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
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            segments: AtomicU64::new(0),
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
/// `health()` never reports a journal nobody writes as healthy.
struct StopGuard(Arc<Status>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.fail("the journal's writer thread panicked".into()) {
            tracing::error!("the journal's writer thread panicked: nothing more is written");
        }
        self.0.stopped.store(true, Ordering::Release);
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
    pub commit_bytes: usize,
    /// Oldest first; the last is the one written to.
    pub segments: VecDeque<SegmentFile>,
    pub active: File,
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
    pub fn run(mut self, commands: Receiver<Command>, stopped: watch::Sender<()>) {
        let _guard = StopGuard(Arc::clone(&self.status));
        let mut batch = Vec::new();
        let mut checkpoints = Vec::new();
        let mut open = true;
        while open {
            let Ok(first) = commands.recv() else {
                break;
            };
            let mut bytes = self.take(first, &mut batch, &mut checkpoints);
            if !batch.is_empty() {
                // Gather for at most the interval, or until the byte budget is reached.
                let now = Instant::now();
                let deadline = now
                    .checked_add(self.commit_interval.min(MAX_COMMIT_INTERVAL))
                    .unwrap_or(now);
                while bytes < self.commit_bytes {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match commands.recv_timeout(wait) {
                        Ok(command) => bytes += self.take(command, &mut batch, &mut checkpoints),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                self.commit(&mut batch);
            }
            for request in checkpoints.drain(..) {
                let status = Arc::clone(&self.status);
                let done = status.timed(|| self.checkpoint(request.below));
                let _ = request.done.send(done);
            }
        }
        self.finish();
        let Writer { lock, active, .. } = self;
        drop(active);
        drop(lock);
        drop(stopped);
    }

    /// Adds a command to the batch, or to the checkpoints run after it; the bytes it adds.
    fn take(
        &self,
        command: Command,
        batch: &mut Vec<Pending>,
        checkpoints: &mut Vec<CheckpointRequest>,
    ) -> usize {
        match command {
            Command::Append(pending) => {
                self.status.queued.fetch_sub(1, Ordering::Relaxed);
                let bytes = pending.frame.len();
                batch.push(pending);
                bytes
            }
            Command::Checkpoint(request) => {
                checkpoints.push(request);
                0
            }
        }
    }

    /// Writes the batch and syncs it once, then tells every waiter.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let status = Arc::clone(&self.status);
        let written = status.timed(|| self.write(batch));
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
        if active_bytes > HEADER_LEN as u64 && active_bytes + size > self.segment_bytes {
            self.rotate(first.lsn).map_err(|error| error.to_string())?;
        }
        self.buffer.clear();
        for pending in batch {
            self.buffer.extend_from_slice(&pending.frame);
        }
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.active
            .write_all(&self.buffer)
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
        let file = segment::create(&self.dir, base)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_thread_that_panics_leaves_the_journal_failed_and_stopped() {
        let status = Arc::new(Status::new());
        let held = Arc::clone(&status);
        let ended = std::thread::spawn(move || {
            let _guard = StopGuard(held);
            panic!("a bug in the writer");
        })
        .join();
        assert!(ended.is_err());
        assert!(status.writer_stopped());
        assert_eq!(
            status.failure(),
            Some("the journal's writer thread panicked")
        );
    }
}
