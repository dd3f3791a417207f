//! Settles and releases that a stopped actor dropped unhandled: the engine sends them again,
//! to the account's next actor, so that no debit is lost or counted twice.

use std::sync::Arc;

use uuid::Uuid;

use super::{Engine, Inner};
use crate::account::actor::{Redeliver, Redelivery, Release, Settle};
use crate::account::AccountId;
use crate::journal::Lsn;
use crate::ledger::UsageRecord;

impl Engine {
    /// The handle every settle and release carries, to come back here if dropped unhandled.
    pub(super) fn redelivery(&self) -> Redelivery {
        Redelivery::new(self.inner.clone())
    }

    /// A settle dropped unhandled because its actor stopped (the actor's thread did). The
    /// debit goes through the account's next actor, which applies it to the balance it
    /// loads after the flush and drops the hold it carried over; if no actor can be started,
    /// the usage goes straight to the ledger.
    ///
    /// Once the flusher has closed (the final flush took its last batch, or gave up on a
    /// hung writer), the settle goes straight to it, and it logs the settle with its cost: a
    /// new actor would wait to load on a flush that never comes, and the process exits
    /// meanwhile. The flusher checks the close under the lock that set it, so a settle that
    /// comes just after is logged, never left in a buffer nobody writes. So it goes for a
    /// settle left in the mailbox of an actor that missed the snapshot deadline (one waiting
    /// on a hung database write), dropped as its HTTP worker stops.
    fn redeliver_settle(&self, record: UsageRecord, lsn: Option<Lsn>) {
        if self.inner.flusher.has_stopped() {
            self.inner.flusher.push(record, lsn);
            return;
        }
        let engine = self.clone();
        self.redeliver(async move {
            let id = record.account_id;
            match engine.actor(id).await {
                Ok(addr) => addr.do_send(Settle::new(record, lsn, engine.redelivery())),
                // Logged with its cost, not recorded.
                Err(_) if engine.inner.flusher.has_stopped() => {
                    engine.inner.flusher.push(record, lsn)
                }
                Err(error) => {
                    tracing::error!(account_id = %id, %error, "no actor for a settle; its usage goes straight to the ledger");
                    engine.forget_carried_hold(id, record.request_id);
                    engine.inner.flusher.push(record, lsn);
                }
            }
        });
    }

    /// A release dropped unhandled because its actor stopped: the account's next actor drops
    /// the hold it carried over.
    fn redeliver_release(&self, account_id: AccountId, request_id: Uuid) {
        let engine = self.clone();
        self.redeliver(async move {
            match engine.actor(account_id).await {
                Ok(addr) => addr.do_send(Release::new(account_id, request_id, engine.redelivery())),
                Err(_) => engine.forget_carried_hold(account_id, request_id),
            }
        });
    }

    /// Runs a re-send on the engine's own runtime, tracked so that shutdown waits for it.
    fn redeliver(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.in_flight.spawn_on(work, &self.inner.runtime);
    }

    /// No actor could take over the account: the hold is dropped from what the next one
    /// will carry over.
    fn forget_carried_hold(&self, account_id: AccountId, request_id: Uuid) {
        if let Some(mut orphan) = self.inner.orphaned.get_mut(&account_id) {
            orphan.holds.retain(|(id, _)| *id != request_id);
        }
    }
}

impl Redeliver for Inner {
    fn settle(self: Arc<Self>, record: UsageRecord, lsn: Option<Lsn>) {
        Engine { inner: self }.redeliver_settle(record, lsn);
    }

    fn release(self: Arc<Self>, account_id: AccountId, request_id: Uuid) {
        Engine { inner: self }.redeliver_release(account_id, request_id);
    }
}
