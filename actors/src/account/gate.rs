//! The account's gate: what the HTTP side checks before it reads a request's body, without a
//! round trip to the account's actor (docs/adr/0013-check-before-reading.md).
//!
//! The actor is still the one writer of money. It publishes here, after every change, what
//! a new request would find (suspended, nothing available, or open), and the concurrency
//! limit; the HTTP side reads that and takes a concurrency slot, both lock-free. A reading
//! may be a moment stale in either direction, which is the same as the request arriving a
//! moment earlier or later: the actor still decides every hold.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use rust_decimal::Decimal;

use super::{AccountStatus, Refusal};
use crate::limits::{Slot, Slots, Throttle, CONCURRENCY_RETRY_AFTER};

/// What a new request of the account would find, as its actor last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Standing {
    Open = 0,
    Suspended = 1,
    /// The balance is at or below zero, or every dollar of it is held: no hold can fit.
    NothingAvailable = 2,
}

#[derive(Debug, Default)]
pub(crate) struct AccountGate {
    standing: AtomicU8,
    /// Requests admitted and not yet finished, from before their body is read until they
    /// settle or release.
    concurrency: Arc<Slots>,
}

impl AccountGate {
    /// Called by the actor after every change of status, balance, holds or limits.
    pub(crate) fn publish(&self, status: AccountStatus, balance: Decimal, available: Decimal) {
        let standing = if status != AccountStatus::Active {
            Standing::Suspended
        } else if balance <= Decimal::ZERO || available <= Decimal::ZERO {
            Standing::NothingAvailable
        } else {
            Standing::Open
        };
        self.standing.store(standing as u8, Ordering::Release);
    }

    pub(crate) fn set_max_concurrent(&self, max_concurrent: u32) {
        self.concurrency.set_limit(max_concurrent);
    }

    /// Refuses a request of a suspended account, then one of an account with nothing
    /// available, as the actor would; takes nothing.
    pub(crate) fn check_standing(&self) -> Result<(), Refusal> {
        match self.standing.load(Ordering::Acquire) {
            s if s == Standing::Suspended as u8 => Err(Refusal::Suspended),
            s if s == Standing::NothingAvailable as u8 => Err(Refusal::NothingAvailable),
            _ => Ok(()),
        }
    }

    /// Lets a request in, in the order the actor would refuse it: the standing
    /// ([`AccountGate::check_standing`]), then no concurrency slot free. The slot is held until
    /// the request settles or releases its hold.
    pub(crate) fn let_in(&self) -> Result<Slot, Refusal> {
        self.check_standing()?;
        self.concurrency.try_take().ok_or(Refusal::Throttled {
            which: Throttle::Concurrency,
            retry_after: CONCURRENCY_RETRY_AFTER,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_refuses_as_the_actor_would_and_counts_concurrency() {
        let gate = AccountGate::default();
        gate.set_max_concurrent(1);
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ONE);
        let slot = gate.let_in().unwrap();
        assert!(matches!(
            gate.let_in(),
            Err(Refusal::Throttled {
                which: Throttle::Concurrency,
                ..
            })
        ));
        drop(slot);
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ZERO);
        assert_eq!(gate.let_in().unwrap_err(), Refusal::NothingAvailable);
        gate.publish(AccountStatus::Active, -Decimal::ONE, -Decimal::ONE);
        assert_eq!(gate.let_in().unwrap_err(), Refusal::NothingAvailable);
        gate.publish(AccountStatus::Suspended, Decimal::ONE, Decimal::ONE);
        assert_eq!(gate.let_in().unwrap_err(), Refusal::Suspended);
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ONE);
        assert!(gate.let_in().is_ok());
    }

    #[test]
    fn the_standing_alone_refuses_as_the_actor_would_and_takes_no_slot() {
        let gate = AccountGate::default();
        gate.set_max_concurrent(1);
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ONE);
        let slot = gate.let_in().unwrap();
        assert_eq!(
            gate.check_standing(),
            Ok(()),
            "every slot taken is no refusal"
        );
        drop(slot);
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ZERO);
        assert_eq!(gate.check_standing(), Err(Refusal::NothingAvailable));
        gate.publish(AccountStatus::Suspended, Decimal::ONE, Decimal::ONE);
        assert_eq!(gate.check_standing(), Err(Refusal::Suspended));
        gate.publish(AccountStatus::Active, Decimal::ONE, Decimal::ONE);
        assert!(gate.let_in().is_ok(), "checking took no slot");
    }
}
