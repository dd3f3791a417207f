//! Graceful shutdown: drain the requests in flight, then make sure every settle reached the
//! ledger.

use std::time::Duration;

use super::Engine;
use crate::account::actor::Snapshot;

/// After the drain bound, interrupted requests settle what they saw, and upstream calls
/// already under way for whole messages may still finish; this bounds how long that takes.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// How long shutdown waits for every account actor to prove it has applied the settles queued
/// to it, before the final flush.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(1);

impl Engine {
    /// Graceful shutdown:
    /// 1. refuses new requests;
    /// 2. waits (at most `drain`) for in-flight requests to finish and settle;
    /// 3. past that bound, interrupts the rest, which settle the usage they have seen, and
    ///    waits at most [`INTERRUPT_GRACE`] for them (a non-streaming request whose upstream
    ///    answers within it is still answered and billed);
    /// 4. waits until every account actor has applied every settle sent to it;
    /// 5. flushes everything (at most `flush_deadline`).
    ///
    /// Call it while the runtimes the requests run on are still up (before stopping the HTTP
    /// server's workers). Returns whether every request finished and everything was flushed.
    pub async fn shutdown(&self, drain: Duration, flush_deadline: Duration) -> bool {
        // Closing the tracker is what refuses new requests (`Engine::check_in`).
        self.inner.in_flight.close();
        let drained = tokio::time::timeout(drain, self.inner.in_flight.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.inner.in_flight.len(),
                "in-flight requests did not finish within the drain bound; settling what they saw"
            );
            self.inner.interrupt.cancel();
            if tokio::time::timeout(INTERRUPT_GRACE, self.inner.in_flight.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    remaining = self.inner.in_flight.len(),
                    "requests still running after the interrupt"
                );
            }
        }
        // Settles are queued without waiting; a round trip to every actor proves that each
        // one has applied (and so handed to the flusher) every settle queued before it.
        let actors: Vec<_> = self
            .inner
            .accounts
            .iter()
            .filter_map(|entry| entry.value().get().map(|active| active.addr.clone()))
            .collect();
        // All at once and bounded: an actor waiting on a hung Postgres write must not hold up
        // the others, nor the final flush, past the orchestrator's grace period.
        let snapshots =
            futures_util::future::join_all(actors.iter().map(|addr| addr.send(Snapshot)));
        match tokio::time::timeout(SNAPSHOT_DEADLINE, snapshots).await {
            Ok(answers) => {
                let stopped = answers.iter().filter(|answer| answer.is_err()).count();
                if stopped > 0 {
                    tracing::error!(stopped, "account actors stopped before shutdown finished");
                }
            }
            Err(_) => tracing::error!(
                "account actors did not all answer within the snapshot deadline; \
                 their last settles may miss the final flush"
            ),
        }
        let flushed = self.inner.flusher.shutdown(flush_deadline).await;
        drained && flushed
    }
}
