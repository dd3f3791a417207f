//! The flusher: settled usage waits here until the next flush writes it to the ledger in one
//! transaction. Account actors have already applied each debit to their in-memory balance
//! before it arrives, so what sits in the buffer is exactly the "unflushed debits".

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ledger::UsageRecord;
use crate::store::{LedgerStore, StoreError};

/// Settled usage waiting for the ledger, and the state of the writer that drains it.
#[derive(Clone)]
pub struct FlusherHandle {
    inner: Arc<Shared>,
}

struct Shared {
    buffer: Mutex<Vec<UsageRecord>>,
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
    pub failing: bool,
}

impl FlusherHandle {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(store: Arc<dyn LedgerStore>, interval: Duration) -> FlusherHandle {
        let handle = FlusherHandle {
            inner: Arc::new(Shared {
                buffer: Mutex::new(Vec::with_capacity(1024)),
                wake: Notify::new(),
                failing: AtomicBool::new(false),
                backlog: AtomicU64::new(0),
                writing: AtomicU64::new(0),
                flushed_total: AtomicU64::new(0),
                flushes: AtomicU64::new(0),
                pushed: AtomicU64::new(0),
                written: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                flushed: Notify::new(),
                stopping: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
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

    /// Queues one settled request. Never drops it: the buffer is bounded by the request rate
    /// times the flush interval while the ledger is healthy, and new holds are refused when
    /// it is not (see [`FlusherHandle::is_failing`]).
    pub(crate) fn push(&self, record: UsageRecord) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        buffer.push(record);
        self.inner.pushed.fetch_add(1, Ordering::AcqRel);
        let writing = self.inner.writing.load(Ordering::Relaxed);
        self.inner
            .backlog
            .store(buffer.len() as u64 + writing, Ordering::Relaxed);
    }

    /// Whether the writer has stopped for good (after a graceful shutdown's final flush).
    pub fn has_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> FlusherStats {
        FlusherStats {
            backlog: self.inner.backlog.load(Ordering::Relaxed),
            flushed_records: self.inner.flushed_total.load(Ordering::Relaxed),
            flushes: self.inner.flushes.load(Ordering::Relaxed),
            failing: self.is_failing(),
        }
    }

    /// Asks for a flush now and waits until every record pushed before the call is on disk,
    /// or a flush attempt that began after the call has failed. Returns whether the records
    /// are on disk. Records pushed meanwhile do not hold it up, so it answers within about
    /// two flushes however busy the service is.
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
            // An attempt that began after the call, and still left them unwritten, failed.
            if self.inner.generation.load(Ordering::Acquire) >= first + 2
                || self.inner.stopped.load(Ordering::Acquire)
            {
                return false;
            }
            self.inner.wake.notify_one();
            notified.await;
        }
    }

    /// Flushes until the buffer is empty or `deadline` passes; stops the writer and waits,
    /// within the same deadline, for its last pass to end. Called once at graceful shutdown,
    /// after in-flight requests have settled. Returns whether the buffer was emptied.
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
        drained
    }

    /// The buffer's records, and the count of `pushed` they reach to: once they are written,
    /// so is every record pushed before them (a failed batch goes back in front).
    fn take_batch(&self) -> (Vec<UsageRecord>, u64) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        let upto = self.inner.pushed.load(Ordering::Acquire);
        let batch = std::mem::take(&mut *buffer);
        self.inner
            .writing
            .store(batch.len() as u64, Ordering::Relaxed);
        self.inner
            .backlog
            .store(batch.len() as u64, Ordering::Relaxed);
        (batch, upto)
    }

    /// Puts a batch that failed to write back in front of what arrived since, so the next
    /// attempt retries it (the write is idempotent, so a partial success is harmless).
    fn restore_batch(&self, mut batch: Vec<UsageRecord>) {
        let mut buffer = match self.inner.buffer.lock() {
            Ok(buffer) => buffer,
            Err(poisoned) => poisoned.into_inner(),
        };
        batch.append(&mut buffer);
        *buffer = batch;
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
        // A database that stops answering (rather than failing) must still count as failing,
        // so that admission's backlog bound and the health check see it.
        let write_timeout = (interval * 20).max(Duration::from_secs(10));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.inner.wake.notified() => {}
            }
            let (batch, upto) = self.take_batch();
            if batch.is_empty() {
                self.inner.written.fetch_max(upto, Ordering::AcqRel);
            } else {
                let written = tokio::time::timeout(write_timeout, store.write_batch(&batch))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError(format!("no answer within {write_timeout:?}")))
                    });
                match written {
                    Ok(outcome) => {
                        self.mark_written();
                        self.inner.written.fetch_max(upto, Ordering::AcqRel);
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
                    }
                    Err(error) => {
                        tracing::error!(%error, records = batch.len(), "usage flush failed; will retry");
                        self.inner.failing.store(true, Ordering::Relaxed);
                        self.restore_batch(batch);
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
