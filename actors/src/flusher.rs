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
    buffer: Mutex<VecDeque<UsageRecord>>,
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
    stopping: AtomicBool,
    /// Set when the writer has stopped for good: nothing pushed after it is written.
    stopped: AtomicBool,
    /// Set, under the buffer's lock, when the final flush is over, whether or not the writer
    /// finished its last pass: a record pushed from then on is logged, not kept.
    closed: AtomicBool,
    /// The writer task, awaited by [`FlusherHandle::shutdown`] so that the process never
    /// exits under a write in progress. Taken once.
    writer: Mutex<Option<JoinHandle<()>>>,
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
        let handle = FlusherHandle {
            inner: Arc::new(Shared {
                buffer: Mutex::new(VecDeque::with_capacity(1024)),
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
                stopped: AtomicBool::new(false),
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
    /// After a graceful shutdown's final flush, nothing more reaches the ledger: the record is
    /// then logged as an error with its cost, so that no usage is lost without a trace.
    pub(crate) fn push(&self, record: UsageRecord) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.inner.closed.load(Ordering::Acquire) {
            drop(buffer);
            tracing::error!(
                account_id = %record.account_id,
                request_id = %record.request_id,
                cost = %record.cost,
                "a settle arrived after the final flush; its usage is not recorded"
            );
            return;
        }
        buffer.push_back(record);
        self.inner.pushed.fetch_add(1, Ordering::AcqRel);
        let writing = self.inner.writing.load(Ordering::Relaxed);
        self.inner
            .backlog
            .store(buffer.len() as u64 + writing, Ordering::Relaxed);
    }

    /// Whether the flusher writes nothing more: a graceful shutdown's final flush is over,
    /// or its writer has stopped for good. A flush that gave up on a hung database leaves the
    /// writer waiting on it, and this still holds.
    pub fn has_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire) || self.inner.closed.load(Ordering::Acquire)
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
    /// after in-flight requests have settled. Returns whether the buffer was emptied; what
    /// is pushed after it returns is logged with its cost, not written.
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
        // Under the buffer's lock: a record pushed before is in the backlog the caller
        // reports, one pushed after is logged on its own.
        let _buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        self.inner.closed.store(true, Ordering::Release);
        drained
    }

    /// The buffer's oldest records, at most [`MAX_FLUSH_BATCH`], and the count of `pushed`
    /// they reach to: once they are written, so is every record pushed before them (the
    /// buffer is in the order of pushing, and a failed batch goes back in front).
    fn take_batch(&self) -> TakenBatch {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        let waiting = buffer.len();
        let records: Vec<UsageRecord> = if waiting <= MAX_FLUSH_BATCH {
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
        }
    }

    /// Puts a batch that failed to write back in front of what arrived since, so the next
    /// attempt retries it (the write is idempotent, so a partial success is harmless).
    fn restore_batch(&self, batch: Vec<UsageRecord>) {
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
            let batch = taken.records;
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
                        self.restore_batch(batch);
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
            let stopping = self.inner.stopping.load(Ordering::Acquire);
            if stopping {
                self.inner.stopped.store(true, Ordering::Release);
            }
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
            self.inner.flushed.notify_waiters();
            if stopping {
                break;
            }
        }
    }
}

/// What [`FlusherHandle::take_batch`] took.
struct TakenBatch {
    /// The oldest records waiting, at most [`MAX_FLUSH_BATCH`].
    records: Vec<UsageRecord>,
    /// The count of `pushed` that the batch reaches to.
    upto: u64,
    /// Whether records were left in the buffer behind the batch.
    more_waiting: bool,
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
