//! Idempotent balance changes whose write failed without saying whether it committed
//! (docs/adr/0016-idempotent-operator-writes.md). A retry with the same key learns from the
//! store which change, if any, went through, and the actor's balance follows.

use std::collections::HashMap;

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::ledger::ChangeApplied;

/// How many unconfirmed changes one account's actor remembers. Each is a failed write to
/// Postgres, so reaching this takes a long outage with many distinct keys; past it the
/// oldest key is forgotten (with a warning), and a retry of that key can no longer correct
/// the live balance until the account's actor is started again from the stored balance.
pub(crate) const MAX_UNCERTAIN_CHANGES: usize = 1024;

/// A key is per account and route: (scope, key).
type Slot = (&'static str, String);

/// Every change tried under a key while its outcome is unknown: any one of them may be the
/// one that committed, and the store names which.
struct Tried {
    /// When the key was first remembered, to forget the oldest first.
    since: u64,
    changes: Vec<(Uuid, Decimal)>,
}

#[derive(Default)]
pub(crate) struct UncertainChanges {
    slots: HashMap<Slot, Tried>,
    /// Changes remembered, over all keys.
    count: usize,
    next: u64,
}

impl UncertainChanges {
    /// A write of change `id` under `slot` failed; it may have committed. Returns the slot
    /// forgotten to make room, if one was.
    /// Whether every change this actor wrote is known to have committed or not.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn remember(&mut self, slot: Slot, id: Uuid, amount: Decimal) -> Option<Slot> {
        let forgotten = if self.count >= MAX_UNCERTAIN_CHANGES {
            self.forget_oldest()
        } else {
            None
        };
        let since = self.next;
        self.next += 1;
        self.slots
            .entry(slot)
            .or_insert_with(|| Tried {
                since,
                changes: Vec::new(),
            })
            .changes
            .push((id, amount));
        self.count += 1;
        forgotten
    }

    /// The store answered a change under `slot`: the amount the actor has yet to add for an
    /// earlier write of its own that committed unconfirmed (zero if none did). The slot is
    /// settled either way: an applied claim means none of the earlier writes committed.
    pub(crate) fn resolve(&mut self, slot: &Slot, applied: ChangeApplied) -> Decimal {
        let Some(tried) = self.slots.remove(slot) else {
            return Decimal::ZERO;
        };
        self.count -= tried.changes.len();
        match applied {
            ChangeApplied::Applied | ChangeApplied::Refused => Decimal::ZERO,
            ChangeApplied::AlreadyApplied { change_id } => tried
                .changes
                .iter()
                .find(|(id, _)| *id == change_id)
                .map_or(Decimal::ZERO, |(_, amount)| *amount),
        }
    }

    fn forget_oldest(&mut self) -> Option<Slot> {
        let oldest = self
            .slots
            .iter()
            .min_by_key(|(_, tried)| tried.since)
            .map(|(slot, _)| slot.clone())?;
        if let Some(tried) = self.slots.remove(&oldest) {
            self.count -= tried.changes.len();
        }
        Some(oldest)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn slot(key: &str) -> Slot {
        ("credit", key.to_string())
    }

    #[test]
    fn every_change_tried_under_a_key_is_kept_until_the_store_names_one() {
        let mut uncertain = UncertainChanges::default();
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        uncertain.remember(slot("k"), first, dec!(5));
        uncertain.remember(slot("k"), second, dec!(7));
        let committed = ChangeApplied::AlreadyApplied { change_id: first };
        assert_eq!(uncertain.resolve(&slot("k"), committed), dec!(5));
        // Settled: a further retry adds nothing.
        assert_eq!(uncertain.resolve(&slot("k"), committed), Decimal::ZERO);
        assert_eq!(uncertain.len(), 0);
    }

    #[test]
    fn the_changes_remembered_are_bounded_and_the_oldest_go_first() {
        let mut uncertain = UncertainChanges::default();
        let oldest = Uuid::new_v4();
        uncertain.remember(slot("oldest"), oldest, dec!(1));
        let mut forgotten = Vec::new();
        for n in 0..MAX_UNCERTAIN_CHANGES + 10 {
            forgotten.extend(uncertain.remember(slot(&n.to_string()), Uuid::new_v4(), dec!(1)));
        }
        assert_eq!(uncertain.len(), MAX_UNCERTAIN_CHANGES);
        assert_eq!(forgotten.first(), Some(&slot("oldest")));
        let committed = ChangeApplied::AlreadyApplied { change_id: oldest };
        assert_eq!(uncertain.resolve(&slot("oldest"), committed), Decimal::ZERO);
    }
}
