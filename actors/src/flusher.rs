//! The flusher: settled usage waits here until the next flush writes it to the ledger in one
//! transaction. Account actors have already applied each debit to their in-memory balance
//! before it arrives, so what sits in the buffer is exactly the "unflushed debits".
//!
//! A flush writes at most [`MAX_FLUSH_BATCH`] records, the oldest first, within a deadline
//! scaled to its size; a backlog left by a database that was down drains in such batches,
//! one after another (docs/adr/0017-bounded-flush-batches.md). While the ledger keeps
//! failing, its error is logged ever more rarely (`FailureLog`), and its recovery once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::journal::{Journal, Lsn};
use crate::ledger::UsageRecord;
use crate::store::{LedgerStore, StoreError};

/// The most records one flush writes: one transaction, about 16 paced parts of ~300 rows
/// (docs/adr/0003-paced-flush.md). A busy interval is far below it (500 records at 5,000
/// req/s and 100 ms); only a backlog reaches it, and then drains batch after batch instead of
/// retrying one ever larger transaction (docs/adr/0017-bounded-flush-batches.md).
pub const MAX_FLUSH_BATCH: usize = 5_000;
/// A flush's deadline is this, plus the flush interval (its paced parts are spread over half
/// of it), plus [`FLUSH_DEADLINE_PER_RECORD`] per record. A database that stops answering,
/// rather than failing, must still count as failing, so that admission's backlog bound and
/// the health check see it.
const FLUSH_DEADLINE_FLOOR: Duration = Duration::from_secs(5);
/// About a hundred times what Postgres takes per usage row (docs/adr/0006): a full batch
/// gets 5 s more than an empty one.
const FLUSH_DEADLINE_PER_RECORD: Duration = Duration::from_millis(1);
/// While the ledger keeps failing, the error is logged at once, then again after this...
const FAILURE_LOG_FIRST_REPEAT: Duration = Duration::from_secs(1);
/// ...doubling each time up to this, with the count of the failures not logged meanwhile.
const FAILURE_LOG_MAX_REPEAT: Duration = Duration::from_secs(60);
/// A run of failures ends only after this long without one: a database that flaps (one
/// flush fails, the next succeeds) keeps its back-off instead of being logged anew each time.
const FAILURE_LOG_QUIET: Duration = Duration::from_secs(60);

/// Settled usage waiting for the ledger, and the state of the writer that drains it.
#[derive(Clone)]
pub struct FlusherHandle {
    inner: Arc<Shared>,
}

struct Shared {
    /// Oldest first: a flush takes from the front, and a failed batch goes back there.
    buffer: Mutex<VecDeque<Queued>>,
    /// The write-ahead journal the records were appended to, if there is one: told which
    /// records the ledger holds after each flush, and checkpointed
    /// (docs/adr/0019-write-ahead-journal.md).
    journal: Option<Journal>,
    /// A checkpoint is running: the next flush does not start another, but owes one.
    checkpointing: Arc<AtomicBool>,
    /// A flush has committed since the running checkpoint began: it runs once more, so that
    /// the last flush after an outage is always followed by a checkpoint (else a journal over
    /// its limit could stay `Full` with every record flushed).
    checkpoint_owed: Arc<AtomicBool>,
    /// Wakes the writer early (shutdown, or a test that wants its records on disk now).
    wake: Notify,
    /// Set by the writer after each flush attempt; the engine refuses new holds while the
    /// ledger cannot be written and the backlog is past its bound (fail closed).
    failing: AtomicBool,
    /// Records not yet written: those in the buffer plus the batch being written.
    backlog: AtomicU64,
    /// Records of the batch being written right now.
    writing: AtomicU64,
    flushed_total: AtomicU64,
    flushes: AtomicU64,
    /// Flush attempts that failed (or found no answer in time).
    failed_flushes: AtomicU64,
    /// The `generation` that the last failed attempt completed, so that `flush_now` can tell
    /// a failure from a successful batch that left later records for the next one.
    failed_generation: AtomicU64,
    /// Records ever pushed. Updated under the buffer's lock, so the first `pushed` records
    /// are exactly those pushed so far.
    pushed: AtomicU64,
    /// Every record up to this count of `pushed` is on disk.
    written: AtomicU64,
    /// Bumped after every completed flush attempt, so `flush_now` can wait for one.
    generation: AtomicU64,
    flushed: Notify,
    /// Set by shutdown: the writer's next take is its last.
    stopping: AtomicBool,
    /// Nothing more is taken from the buffer, and a record pushed from now on is logged with
    /// its cost instead of kept. Always set under the buffer's lock, by whichever comes first:
    /// the writer's first take after `stopping` (its last batch, which it still writes), or
    /// shutdown when it gives up waiting for the writer (hung on a database that does not
    /// answer). Since the take and the check in `push` hold the same lock, every record is
    /// either in a batch taken before, or in the buffer that shutdown counts as unflushed, or
    /// logged on its own: none is left behind in a buffer that nobody writes or counts.
    closed: AtomicBool,
    /// The writer task, awaited by [`FlusherHandle::shutdown`] so that the process never
    /// exits under a write in progress. Taken once.
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// A settled record waiting for the ledger, with its place in the journal when it has one.
struct Queued {
    record: UsageRecord,
    lsn: Option<Lsn>,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlusherStats {
    pub backlog: u64,
    pub flushed_records: u64,
    pub flushes: u64,
    /// Flush attempts that failed since start.
    pub failed_flushes: u64,
    pub failing: bool,
}

impl FlusherHandle {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Arc<dyn LedgerStore>, interval: Duration) -> FlusherHandle {
        FlusherHandle::start_journaled(store, interval, None)
    }

    /// Starts the writer task on the current tokio runtime; after each batch it writes, it
    /// tells `journal` which records the ledger now holds, and checkpoints it.
    pub fn start_journaled(
        store: Arc<dyn LedgerStore>,
        interval: Duration,
        journal: Option<Journal>,
    ) -> FlusherHandle {
        let handle = FlusherHandle {
            inner: Arc::new(Shared {
                buffer: Mutex::new(VecDeque::with_capacity(1024)),
                journal,
                checkpointing: Arc::new(AtomicBool::new(false)),
                checkpoint_owed: Arc::new(AtomicBool::new(false)),
                wake: Notify::new(),
                failing: AtomicBool::new(false),
                backlog: AtomicU64::new(0),
                writing: AtomicU64::new(0),
                flushed_total: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                failed_flushes: AtomicU64::new(0),
                failed_generation: AtomicU64::new(0),
                pushed: AtomicU64::new(0),
                written: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                flushed: Notify::new(),
                stopping: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                writer: Mutex::new(None),
            }),
        };
        let writer = handle.clone();
        let task = tokio::spawn(async move { writer.run(store, interval).await });
        match handle.inner.writer.lock() {
            Ok(mut slot) => *slot = Some(task),
            Err(poisoned) => *poisoned.into_inner() = Some(task),
        }
        handle
    }

    /// Queues one settled request. Never drops it while the service runs: the buffer is
    /// bounded by the request rate times the flush interval while the ledger is healthy, and
    /// new holds are refused when it is not (see [`FlusherHandle::is_failing`]).
    ///
    /// `lsn` is the record's place in the journal, when it was appended to one.
    ///
    /// Once a graceful shutdown's final flush has taken its last batch (or given up on the
    /// writer), nothing more reaches the ledger: the record is then logged as an error with
    /// its cost, so that no usage is lost without a trace. One the journal holds is replayed
    /// at the next start.
    pub(crate) fn push(&self, record: UsageRecord, lsn: Option<Lsn>) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.inner.closed.load(Ordering::Acquire) {
            drop(buffer);
            if lsn.is_some() {
                tracing::warn!(
                    account_id = %record.account_id,
                    request_id = %record.request_id,
                    cost = %record.cost,
                    "a settle arrived after the final flush; the journal keeps it for the next start"
                );
            } else {
                tracing::error!(
                    account_id = %record.account_id,
                    request_id = %record.request_id,
                    cost = %record.cost,
                    "a settle arrived after the final flush; its usage is not recorded"
                );
            }
            return;
        }
        buffer.push_back(Queued { record, lsn });
        self.inner.pushed.fetch_add(1, Ordering::AcqRel);
        let writing = self.inner.writing.load(Ordering::Relaxed);
        self.inner
            .backlog
            .store(buffer.len() as u64 + writing, Ordering::Relaxed);
    }

    /// Whether the flusher takes nothing more: a graceful shutdown's final flush has taken
    /// its last batch, or gave up on a writer hung on the database. A record pushed now is
    /// logged, not written.
    pub fn has_stopped(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> FlusherStats {
        FlusherStats {
            backlog: self.inner.backlog.load(Ordering::Relaxed),
            flushed_records: self.inner.flushed_total.load(Ordering::Relaxed),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
            failed_flushes: self.inner.failed_flushes.load(Ordering::Relaxed),
            failing: self.is_failing(),
        }
    }

    /// Asks for a flush now and waits until every record pushed before the call is on disk,
    /// or a flush attempt that began after the call has failed. Returns whether the records
    /// are on disk. Records pushed meanwhile do not hold it up, so it answers within about
    /// two flushes however busy the service is, unless a backlog of more than
    /// [`MAX_FLUSH_BATCH`] records came before them: then it waits for the batches that
    /// write it.
    pub async fn flush_now(&self) -> bool {
        let target = self.inner.pushed.load(Ordering::Acquire);
        let first = self.inner.generation.load(Ordering::Acquire);
        loop {
            let notified = self.inner.flushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.written.load(Ordering::Acquire) >= target {
                return true;
            }
            // An attempt that began after the call failed.
            if self.inner.failed_generation.load(Ordering::Acquire) >= first + 2
                || self.has_stopped()
            {
                return false;
            }
            self.inner.wake.notify_one();
            notified.await;
        }
    }

    /// Flushes until the buffer is empty or `deadline` passes; stops the writer and waits,
    /// within the same deadline, for its last pass to end. Called once at graceful shutdown,
    /// after in-flight requests have settled. Returns whether every record pushed before the
    /// flusher closed is on disk; one pushed after is logged with its cost, not written.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let drained = tokio::time::timeout_at(until, async {
            while !(self.flush_now().await && self.inner.backlog.load(Ordering::Relaxed) == 0) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok();
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.wake.notify_one();
        let writer = match self.inner.writer.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(writer) = writer {
            match tokio::time::timeout_at(until, writer).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "the flusher's writer task failed"),
                Err(_) => tracing::warn!("the flusher's writer was still writing at the deadline"),
            }
        }
        // The writer's last take closed the flusher, unless the writer is still hung on an
        // earlier batch: then it closes here. Under the buffer's lock, so that what is left
        // (in the buffer, or in flight and not confirmed) is exactly what the caller reports
        // as unflushed, and anything pushed later is logged on its own.
        let buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.inner.closed.store(true, Ordering::Release);
        let flushed =
            drained && buffer.is_empty() && self.inner.writing.load(Ordering::Relaxed) == 0;
        drop(buffer);
        // A `flush_now` waiting on the hung writer answers now, not when its write times out.
        self.inner.flushed.notify_waiters();
        flushed
    }

    /// The buffer's oldest records, at most [`MAX_FLUSH_BATCH`], and the count of `pushed`
    /// they reach to: once they are written, so is every record pushed before them (the
    /// buffer is in the order of pushing, and a failed batch goes back in front).
    ///
    /// Once shutdown has asked the writer to stop, this take is its last, and closes the
    /// flusher under the same lock (see `Shared::closed`). If shutdown closed it already,
    /// having given up on the writer, it takes nothing: what is left stays counted there.
    fn take_batch(&self) -> TakenBatch {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        let closed_already = self.inner.closed.load(Ordering::Acquire);
        let last = closed_already || self.inner.stopping.load(Ordering::Acquire);
        if last {
            self.inner.closed.store(true, Ordering::Release);
        }
        let waiting = buffer.len();
        let records: Vec<Queued> = if closed_already {
            Vec::new()
        } else if waiting <= MAX_FLUSH_BATCH {
            std::mem::take(&mut *buffer).into()
        } else {
            buffer.drain(..MAX_FLUSH_BATCH).collect()
        };
        let left = buffer.len() as u64;
        let upto = self
            .inner
            .pushed
            .load(Ordering::Acquire)
            .saturating_sub(left);
        self.inner
            .writing
            .store(records.len() as u64, Ordering::Relaxed);
        self.inner.backlog.store(waiting as u64, Ordering::Relaxed);
        TakenBatch {
            records,
            upto,
            more_waiting: left > 0,
            last,
        }
    }

    /// Puts a batch that failed to write back in front of what arrived since, so the next
    /// attempt retries it (the write is idempotent, so a partial success is harmless).
    fn restore_batch(&self, batch: Vec<Queued>) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        for record in batch.into_iter().rev() {
            buffer.push_front(record);
        }
        self.inner.writing.store(0, Ordering::Relaxed);
        self.inner
            .backlog
            .store(buffer.len() as u64, Ordering::Relaxed);
    }

    /// The batch in flight is on disk: it no longer counts as backlog.
    fn mark_written(&self) {
        let buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.inner.writing.store(0, Ordering::Relaxed);
        self.inner
            .backlog
            .store(buffer.len() as u64, Ordering::Relaxed);
    }

    /// The ledger holds the records at `lsns`: the journal may let them go, and a checkpoint
    /// removes the segments that hold nothing else. The checkpoint runs on a task of its own,
    /// one at a time, so that a slow disk does not hold up the next flush; a flush that
    /// commits while one runs makes it run again.
    fn journal_flushed(&self, lsns: Vec<Option<Lsn>>) {
        let Some(journal) = &self.inner.journal else {
            return;
        };
        journal.mark_flushed(lsns.into_iter().flatten());
        self.inner.checkpoint_owed.store(true, Ordering::Release);
        if self.inner.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let journal = journal.clone();
        let running = Arc::clone(&self.inner.checkpointing);
        let owed = Arc::clone(&self.inner.checkpoint_owed);
        tokio::spawn(async move {
            loop {
                while owed.swap(false, Ordering::AcqRel) {
                    match journal.checkpoint().await {
                        Ok(done) if done.segments > 0 => tracing::debug!(
                            segments = done.segments,
                            bytes = done.bytes,
                            "journal checkpoint removed segments the ledger holds"
                        ),
                        Ok(_) => {}
                        Err(error) => tracing::warn!(%error, "journal checkpoint failed"),
                    }
                }
                running.store(false, Ordering::Release);
                // A flush that committed between the last swap and the store above saw a
                // checkpoint running and left it to this one.
                if !owed.load(Ordering::Acquire) || running.swap(true, Ordering::AcqRel) {
                    return;
                }
            }
        });
    }

    async fn run(self, store: Arc<dyn LedgerStore>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = FailureLog::default();
        // Set after a full batch was written with more records behind it: the next batch
        // goes at once, so that a backlog drains at the database's pace, not one batch per
        // interval.
        let mut draining = false;
        loop {
            if !draining {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = self.inner.wake.notified() => {}
                }
            }
            draining = false;
            let taken = self.take_batch();
            let (batch, lsns): (Vec<UsageRecord>, Vec<Option<Lsn>>) = taken
                .records
                .into_iter()
                .map(|queued| (queued.record, queued.lsn))
                .unzip();
            if batch.is_empty() {
                self.inner.written.fetch_max(taken.upto, Ordering::AcqRel);
            } else {
                let deadline = flush_deadline(interval, batch.len());
                // With more waiting, pacing would cap the drain at one batch per half
                // interval, below a busy service's rate: the next batch goes at once, and so
                // does this one.
                let write = if taken.more_waiting {
                    store.write_batch_at_once(&batch)
                } else {
                    store.write_batch(&batch)
                };
                let written = tokio::time::timeout(deadline, write)
                    .await
                    .unwrap_or_else(|_| Err(StoreError(format!("no answer within {deadline:?}"))));
                match written {
                    Ok(outcome) => {
                        self.journal_flushed(lsns);
                        self.mark_written();
                        self.inner.written.fetch_max(taken.upto, Ordering::AcqRel);
                        self.inner.failing.store(false, Ordering::Relaxed);
                        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
                        self.inner
                            .flushed_total
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::debug!(
                            records = batch.len(),
                            inserted = outcome.inserted,
                            "flushed usage batch"
                        );
                        if let Some(recovered) = failures.succeeded(Instant::now()) {
                            tracing::info!(
                                failed_attempts = recovered.failures,
                                failing_for = ?recovered.failing_for,
                                backlog = self.inner.backlog.load(Ordering::Relaxed),
                                "usage flush recovered: the ledger is being written again"
                            );
                        }
                        draining = taken.more_waiting;
                    }
                    Err(error) => {
                        self.inner.failing.store(true, Ordering::Relaxed);
                        self.inner.failed_flushes.fetch_add(1, Ordering::Relaxed);
                        self.restore_batch(
                            batch
                                .into_iter()
                                .zip(lsns)
                                .map(|(record, lsn)| Queued { record, lsn })
                                .collect(),
                        );
                        if let Some(report) = failures.failed(Instant::now()) {
                            tracing::error!(
                                %error,
                                backlog = self.inner.backlog.load(Ordering::Relaxed),
                                failed_attempts = report.failures,
                                not_logged = report.suppressed,
                                failing_for = ?report.failing_for,
                                "usage flush failed; will retry (repeats of this error are logged ever more rarely)"
                            );
                        }
                        let generation = self.inner.generation.load(Ordering::Acquire);
                        self.inner
                            .failed_generation
                            .store(generation + 1, Ordering::Release);
                    }
                }
            }
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
            self.inner.flushed.notify_waiters();
            if taken.last {
                break;
            }
        }
    }
}

/// Between two attempts to write a journal's replay while the ledger fails.
const REPLAY_RETRY: Duration = Duration::from_secs(1);

/// Writes the records a journal held at start-up to the ledger, in batches of at most
/// [`MAX_FLUSH_BATCH`], retrying while it fails, for at most `give_up_after`; then tells the
/// journal they are flushed and checkpoints it. Run before the engine starts: the actors'
/// balances, loaded from the ledger, then hold these debits. The write is idempotent by
/// request id, so a record that was both flushed and journaled is billed once. Returns how
/// many rows were new.
pub async fn write_replay(
    store: &dyn LedgerStore,
    journal: &Journal,
    replay: &crate::journal::Replay,
    give_up_after: Duration,
) -> Result<u64, ReplayError> {
    let until = Instant::now() + give_up_after;
    let total = replay.report.records;
    let mut inserted = 0u64;
    let mut written = 0usize;
    // One segment's records in memory at a time, however large the journal grew.
    for segment in &replay.segments {
        let reading = segment.clone();
        let records = tokio::task::spawn_blocking(move || reading.read())
            .await
            .map_err(|error| ReplayError::Read(error.to_string()))?
            .map_err(|error| ReplayError::Read(error.to_string()))?;
        for part in records.chunks(MAX_FLUSH_BATCH) {
            let batch: Vec<UsageRecord> = part.iter().map(|r| r.record.clone()).collect();
            loop {
                let deadline = flush_deadline(Duration::ZERO, batch.len());
                let written = tokio::time::timeout(deadline, store.write_batch_at_once(&batch))
                    .await
                    .unwrap_or_else(|_| Err(StoreError(format!("no answer within {deadline:?}"))));
                match written {
                    Ok(outcome) => {
                        inserted += outcome.inserted;
                        break;
                    }
                    Err(error) if Instant::now() + REPLAY_RETRY < until => {
                        tracing::warn!(%error, records = batch.len(), "writing the journal's replay to the ledger failed; retrying");
                        tokio::time::sleep(REPLAY_RETRY).await;
                    }
                    Err(error) => return Err(ReplayError::Store(error)),
                }
            }
            if let Some(last) = part.last() {
                journal.mark_replayed(Lsn(last.lsn.0.saturating_add(1)), part.len() as u64);
            }
            written += part.len();
            if total > MAX_FLUSH_BATCH {
                tracing::info!(written, of = total, "replaying the journal into the ledger");
            }
        }
        // The segments the ledger now holds leave the disk as the replay goes.
        if let Err(error) = journal.checkpoint().await {
            tracing::warn!(%error, "journal checkpoint during the replay failed");
        }
    }
    Ok(inserted)
}

/// Why a journal's replay could not be written to the ledger.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading the journal: {0}")]
    Read(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`FlusherHandle::take_batch`] took.
struct TakenBatch {
    /// The oldest records waiting, at most [`MAX_FLUSH_BATCH`].
    records: Vec<Queued>,
    /// The count of `pushed` that the batch reaches to.
    upto: u64,
    /// Whether records were left in the buffer behind the batch.
    more_waiting: bool,
    /// This take closed the flusher: the writer ends after this pass.
    last: bool,
}

/// How long a flush of `records` may take before it counts as failed: bounded, because a
/// batch is (see [`FLUSH_DEADLINE_FLOOR`]).
fn flush_deadline(interval: Duration, records: usize) -> Duration {
    let per_record =
        FLUSH_DEADLINE_PER_RECORD.saturating_mul(u32::try_from(records).unwrap_or(u32::MAX));
    FLUSH_DEADLINE_FLOOR
        .saturating_add(interval)
        .saturating_add(per_record)
}

/// When a run of failed flushes is logged: the first at once, the next after
/// [`FAILURE_LOG_FIRST_REPEAT`], then at doubling delays up to [`FAILURE_LOG_MAX_REPEAT`],
/// each line with the count of failures left unlogged since the last. A database down for an
/// hour is about 70 lines, not 36,000; the first flush that succeeds after a logged failure
/// says so once. The run, and its back-off, ends only after [`FAILURE_LOG_QUIET`] without a
/// failure, so a flapping database is logged no more often than one that stays down.
#[derive(Debug, Default)]
struct FailureLog {
    run: Option<FailureRun>,
}

#[derive(Debug)]
struct FailureRun {
    since: Instant,
    failures: u64,
    /// Failures since the last line logged.
    suppressed: u64,
    next_line: Instant,
    delay: Duration,
    last_failure: Instant,
    /// A failure was logged since the last recovery line.
    recovery_due: bool,
}

/// A line to log about a run of failures.
#[derive(Debug, PartialEq, Eq)]
struct FailureReport {
    /// Failed attempts in the run so far, this one included.
    failures: u64,
    /// Failed attempts not logged since the last line.
    suppressed: u64,
    failing_for: Duration,
}

impl FailureLog {
    /// A flush failed at `now`: the line to log, if one is due.
    fn failed(&mut self, now: Instant) -> Option<FailureReport> {
        if self
            .run
            .as_ref()
            .is_some_and(|run| now.saturating_duration_since(run.last_failure) >= FAILURE_LOG_QUIET)
        {
            self.run = None;
        }
        let Some(run) = &mut self.run else {
            self.run = Some(FailureRun {
                since: now,
                failures: 1,
                suppressed: 0,
                next_line: now + FAILURE_LOG_FIRST_REPEAT,
                delay: FAILURE_LOG_FIRST_REPEAT,
                last_failure: now,
                recovery_due: true,
            });
            return Some(FailureReport {
                failures: 1,
                suppressed: 0,
                failing_for: Duration::ZERO,
            });
        };
        run.failures += 1;
        run.last_failure = now;
        if now < run.next_line {
            run.suppressed += 1;
            return None;
        }
        let report = FailureReport {
            failures: run.failures,
            suppressed: run.suppressed,
            failing_for: now - run.since,
        };
        run.suppressed = 0;
        run.recovery_due = true;
        run.delay = (run.delay * 2).min(FAILURE_LOG_MAX_REPEAT);
        run.next_line = now + run.delay;
        Some(report)
    }

    /// A flush succeeded at `now`: the run of failures to report recovered from, if one was
    /// logged since the last report. The run itself lasts until a quiet period has passed.
    fn succeeded(&mut self, now: Instant) -> Option<FailureReport> {
        let run = self.run.as_mut()?;
        if !std::mem::replace(&mut run.recovery_due, false) {
            return None;
        }
        Some(FailureReport {
            failures: run.failures,
            suppressed: run.suppressed,
            failing_for: now - run.since,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use async_trait::async_trait;
    use chrono::Utc;
    use rust_decimal_macros::dec;
    use tokio::sync::Semaphore;
    use uuid::Uuid;

    use crate::account::{AccountId, AccountRecord, AccountStatus};
    use crate::ledger::{BalanceChange, ChangeApplied, Outcome};
    use crate::store::BatchOutcome;

    /// A ledger in memory whose usage writes wait at a door until the test opens it: the
    /// test decides what happens while a batch is being written, or that it never is.
    struct GatedLedger {
        /// Told each time a write reaches the door.
        arrived: Notify,
        /// One permit per write let through.
        door: Semaphore,
        rows: Mutex<Vec<Uuid>>,
    }

    impl GatedLedger {
        fn new() -> Arc<GatedLedger> {
            Arc::new(GatedLedger {
                arrived: Notify::new(),
                door: Semaphore::new(0),
                rows: Mutex::new(Vec::new()),
            })
        }

        fn stored(&self) -> Vec<Uuid> {
            self.rows.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl LedgerStore for GatedLedger {
        async fn load_account(&self, _: AccountId) -> Result<Option<AccountRecord>, StoreError> {
            Ok(None)
        }

        async fn apply_balance_change(
            &self,
            _: &BalanceChange,
        ) -> Result<ChangeApplied, StoreError> {
            Err(StoreError("the flusher changes no balance".into()))
        }

        async fn set_status(
            &self,
            _: AccountId,
            _: AccountStatus,
            _: &str,
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
            self.arrived.notify_one();
            let permit = self.door.acquire().await;
            permit.map_err(|_| StoreError("closed".into()))?.forget();
            let mut rows = self.rows.lock().unwrap();
            rows.extend(batch.iter().map(|record| record.request_id));
            Ok(BatchOutcome {
                inserted: batch.len() as u64,
            })
        }
    }

    fn record() -> UsageRecord {
        UsageRecord {
            request_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            key_id: Uuid::now_v7(),
            model: "claude-haiku-5-5".into(),
            usage: crate::Usage::default(),
            cost: dec!(0.01),
            price_version: Utc::now(),
            long_prompt_tier: false,
            outcome: Outcome::Completed,
            estimated: false,
            usage_fault: None,
            started_at: Utc::now(),
            finished_at: Utc::now(),
        }
    }

    /// Long enough that only the test wakes the writer, and that no write of its times out.
    const NEVER: Duration = Duration::from_secs(3_600);

    #[tokio::test]
    async fn a_record_pushed_while_the_final_batch_is_written_is_not_left_behind_unreported() {
        let ledger = GatedLedger::new();
        let flusher = FlusherHandle::start(ledger.clone(), NEVER);
        let shutdown = flusher.shutdown(Duration::from_secs(30));
        tokio::pin!(shutdown);
        // Polled once, with nothing to flush: the writer is told to stop, and awaited.
        assert!(futures_util::poll!(shutdown.as_mut()).is_pending());
        // Pushed before the writer's last take: in its last batch.
        let first = record();
        flusher.push(first.clone(), None);
        ledger.arrived.notified().await;
        // Pushed while that batch is being written: too late for it, so logged on its own.
        flusher.push(record(), None);
        ledger.door.add_permits(1);
        let clean = shutdown.await;

        assert_eq!(ledger.stored(), [first.request_id]);
        // Before, the second record sat in the buffer, unwritten and unlogged, while
        // shutdown still reported everything flushed.
        assert_eq!(
            (clean, flusher.stats().backlog),
            (true, 0),
            "every record pushed before the close is on disk, and none is left behind"
        );
        assert!(flusher.has_stopped());
    }

    #[tokio::test]
    async fn a_journaled_record_is_let_go_only_once_the_ledger_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(crate::journal::JournalConfig::new(dir.path())).unwrap();
        let ledger = GatedLedger::new();
        let flusher = FlusherHandle::start_journaled(ledger.clone(), NEVER, Some(journal.clone()));
        let settled = record();
        let appended = journal.append(&settled).unwrap();
        appended.durable.await.unwrap();
        flusher.push(settled.clone(), Some(appended.lsn));
        let flushed = flusher.flush_now();
        tokio::pin!(flushed);
        assert!(futures_util::poll!(flushed.as_mut()).is_pending());
        ledger.arrived.notified().await;
        // Being written, not yet committed: the journal still answers for it.
        assert_eq!(journal.stats().unflushed, 1);
        ledger.door.add_permits(1);
        assert!(flushed.await);
        assert_eq!(ledger.stored(), [settled.request_id]);
        assert_eq!(journal.stats().unflushed, 0);
        // A restart replays nothing the ledger holds.
        journal.shutdown().await;
        let (_, replay) = Journal::open(crate::journal::JournalConfig::new(dir.path())).unwrap();
        assert_eq!(replay.report.records, 0);
        assert!(replay.segments.is_empty());
    }

    #[tokio::test]
    async fn a_flush_now_waiting_on_a_hung_write_answers_once_shutdown_gives_up() {
        let ledger = GatedLedger::new();
        let flusher = FlusherHandle::start(ledger.clone(), NEVER);
        flusher.push(record(), None);
        // The door never opens: the write hangs, as on a database that does not answer.
        ledger.arrived.notified().await;
        let waiting = flusher.flush_now();
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());

        assert!(!flusher.shutdown(Duration::from_millis(50)).await);
        // Bounded liveness: without a wake-up it would wait for the write's own deadline,
        // an hour here.
        let answer = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert_eq!(
            answer.ok(),
            Some(false),
            "flush_now still waits after the close"
        );
        assert_eq!(
            flusher.stats().backlog,
            1,
            "the record in flight counts as unflushed"
        );
    }

    #[test]
    fn repeated_failures_are_logged_at_doubling_intervals_with_the_count_left_out() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // A failure every 100 ms for five minutes.
        let lines: Vec<(u64, FailureReport)> = (0..3_000u64)
            .filter_map(|i| log.failed(at(i * 100)).map(|report| (i * 100, report)))
            .collect();
        let times: Vec<u64> = lines.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(
            times,
            [0, 1_000, 3_000, 7_000, 15_000, 31_000, 63_000, 123_000, 183_000, 243_000]
        );
        assert_eq!(
            lines[1].1,
            FailureReport {
                failures: 11,
                suppressed: 9,
                failing_for: Duration::from_secs(1)
            }
        );
        // Every failure is either on a line or counted on the next one.
        let logged = lines.len() as u64 + lines.iter().map(|(_, r)| r.suppressed).sum::<u64>();
        let last = &lines[lines.len() - 1].1;
        assert_eq!(logged, last.failures);

        let recovered = log.succeeded(at(300_000)).unwrap();
        assert_eq!(recovered.failures, 3_000);
        assert_eq!(recovered.failing_for, Duration::from_secs(300));
        assert!(
            log.succeeded(at(300_100)).is_none(),
            "recovery is said once"
        );
        // A new outage starts over: logged at once.
        assert_eq!(log.failed(at(400_000)).unwrap().failures, 1);
    }

    #[test]
    fn a_flapping_database_keeps_the_back_off_across_single_successes() {
        let start = Instant::now();
        let mut log = FailureLog::default();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // For five minutes, every other flush fails.
        let mut lines = 0;
        let mut failure_lines = Vec::new();
        for i in 0..1_500u64 {
            if let Some(report) = log.failed(at(i * 200)) {
                failure_lines.push((i * 200, report.failures));
                lines += 1;
            }
            lines += usize::from(log.succeeded(at(i * 200 + 100)).is_some());
        }
        let times: Vec<u64> = failure_lines.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(
            times,
            [0, 1_000, 3_000, 7_000, 15_000, 31_000, 63_000, 123_000, 183_000, 243_000]
        );
        assert_eq!(
            failure_lines.last().unwrap().1,
            1_216,
            "one run, counted whole"
        );
        // Each logged failure gets at most one recovery line.
        assert_eq!(lines, 20);
        // A quiet minute ends the run: the next failure is logged at once, as the first.
        assert!(log.succeeded(at(299_950)).is_none());
        assert_eq!(log.failed(at(360_000)).unwrap().failures, 1);
    }

    #[test]
    fn a_flush_deadline_grows_with_its_batch_and_is_bounded_by_it() {
        let interval = Duration::from_millis(100);
        assert_eq!(flush_deadline(interval, 0), Duration::from_millis(5_100));
        assert_eq!(flush_deadline(interval, 500), Duration::from_millis(5_600));
        assert_eq!(
            flush_deadline(interval, MAX_FLUSH_BATCH),
            Duration::from_millis(10_100)
        );
    }
}
