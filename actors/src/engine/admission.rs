//! Letting a request in, in two steps (docs/adr/0013-check-before-reading.md):
//!
//! 1. [`Engine::check_in`], before the request's body is read: the request is tracked for
//!    shutdown, and its account's gate refuses it at once if the account is suspended, has
//!    nothing available or has no concurrency slot free. Lock-free, no actor round trip.
//! 2. [`Admission::pre_authorize`], once the body is priced: the account's actor takes the
//!    hold, in one mailbox round trip, and the slot and the tracking go into the ticket.
//!
//! A request that is never billed (`count_tokens`) takes only the first step's tracking and
//! standing, through [`Engine::check_in_unbilled`]: no concurrency slot, no hold.

use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{mailbox_error, Active, AdmitError, Engine, EngineError, HoldRequest, MAILBOX_WAIT};
use crate::account::actor::PreAuthorize;
use crate::account::AccountId;
use crate::engine::HoldTicket;
use crate::limits::Slot;

/// A request let in before its body was read: it holds one of its account's concurrency
/// slots and keeps a graceful shutdown waiting, until it is dropped or its hold's ticket is.
#[must_use = "dropping it gives its slot back and stops shutdown waiting for the request"]
pub struct Admission {
    engine: Engine,
    account_id: AccountId,
    active: Active,
    passes: Passes,
}

/// What a request holds from the moment it is let in until its hold is settled or released.
pub(crate) struct Passes {
    /// One of the account's concurrency slots.
    _slot: Slot,
    /// Keeps shutdown's drain waiting, so that no settle of this request can come after the
    /// final flush.
    _tracked: TaskTrackerToken,
}

/// A request that is never billed (`count_tokens`), let in before its body was read: it
/// keeps a graceful shutdown waiting until it is dropped, and holds no concurrency slot.
#[must_use = "hold it until the request is answered: dropping it stops shutdown waiting for it"]
pub struct UnbilledAdmission {
    _tracked: TaskTrackerToken,
}

impl Engine {
    /// Lets a request of `account_id` in, before its body is read. Refuses it at once when
    /// shutdown has begun, too much usage waits for the ledger, the journal cannot be
    /// written, the account is suspended, nothing of its balance is available, or its
    /// concurrency slots are all taken.
    pub async fn check_in(&self, account_id: AccountId) -> Result<Admission, AdmitError> {
        let tracked = self.track()?;
        let flusher = self.inner.flusher.stats();
        // A backlog past the bound is refused whether the last flush failed or not: a ledger
        // written more slowly than requests settle grows it as surely as an outage
        // (docs/adr/0017-bounded-flush-batches.md).
        if flusher.backlog >= self.inner.config.max_unflushed {
            return Err(EngineError::LedgerUnavailable.into());
        }
        // A journal that cannot take a settle must not see new requests: what they would be
        // answered might never be billed after a crash (fail closed; ADR 0019).
        if let Some(journal) = &self.inner.config.journal {
            let health = journal.health();
            if !health.admits() {
                return Err(EngineError::JournalUnavailable(health).into());
            }
        }
        let active = self.active(account_id).await?;
        let slot = active.gate.let_in()?;
        Ok(Admission {
            engine: self.clone(),
            account_id,
            active,
            passes: Passes {
                _slot: slot,
                _tracked: tracked,
            },
        })
    }

    /// Lets a request of `account_id` that is never billed in, before its body is read: as
    /// [`Engine::check_in`], it is refused at once when shutdown has begun, the account is
    /// suspended or nothing of its balance is available, but it takes no concurrency slot and
    /// is not refused for a ledger backlog, to which it adds nothing
    /// (docs/adr/0013-check-before-reading.md).
    pub async fn check_in_unbilled(
        &self,
        account_id: AccountId,
    ) -> Result<UnbilledAdmission, AdmitError> {
        let tracked = self.track()?;
        self.active(account_id).await?.gate.check_standing()?;
        Ok(UnbilledAdmission { _tracked: tracked })
    }

    /// Tracks a request for shutdown's drain, or refuses it if shutdown has begun.
    fn track(&self) -> Result<TaskTrackerToken, EngineError> {
        // Tracked first, then checked for shutdown: closing the tracker and taking a token
        // change the same atomic, so either shutdown sees this request and waits for it, or
        // this request sees the tracker closed.
        let tracked = self.inner.in_flight.token();
        if self.inner.in_flight.is_closed() {
            return Err(EngineError::Stopped);
        }
        Ok(tracked)
    }
}

impl Admission {
    /// Reserves the worst-case cost of the request, which must be this admission's account's.
    /// On success the returned ticket must be settled or released; dropping it releases the
    /// hold. The ticket keeps the concurrency slot and the shutdown's tracking.
    pub async fn pre_authorize(self, request: HoldRequest) -> Result<HoldTicket, AdmitError> {
        if request.account_id != self.account_id {
            return Err(EngineError::AccountNotFound.into());
        }
        let policy = &self.engine.inner.config.hold_policy;
        let amount = policy.initial_hold(&request.version, &request.shape);
        let tokens = policy
            .estimate_prompt_tokens(&request.shape)
            .saturating_add(request.shape.max_tokens);
        // From here on a hold may exist even if this future is dropped (the client went away,
        // or the mailbox wait timed out just as the actor admitted the request): the ticket
        // releases it on drop. A release of a hold that was never granted is a no-op, and the
        // mailbox keeps it behind the admission.
        let mut ticket = HoldTicket {
            engine: self.engine,
            addr: self.active.addr,
            amount,
            request,
            done: false,
            _passes: self.passes,
        };
        let admitted = ticket
            .addr
            .send(PreAuthorize {
                request_id: ticket.request.request_id,
                amount,
                tokens,
                key_id: ticket.request.key_id,
                caps: ticket.request.spend_caps,
                key_limits: ticket.request.key_limits,
            })
            .timeout(MAILBOX_WAIT)
            .await;
        match admitted {
            Ok(Ok(())) => Ok(ticket),
            Ok(Err(refusal)) => {
                // Nothing was held.
                ticket.done = true;
                Err(refusal.into())
            }
            Err(error) => Err(mailbox_error(error).into()),
        }
    }
}
