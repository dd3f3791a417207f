//! Per-key spend caps, kept by the account's actor beside the balance: what each capped key
//! has spent (in all, and on the current UTC day) and what its requests in flight hold. A
//! hold is admitted only if it fits under each cap less what the key spent and holds, so, as
//! with the balance, parallel requests cannot pass a cap together; only a request whose cost
//! exceeds its own hold can, and only by that excess.

use std::collections::HashMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{KeySpent, Refusal, SpendCap, SpendCaps};

/// One capped key's money, as the actor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySpend {
    total: Decimal,
    /// Spent by requests that started on `day`.
    today: Decimal,
    day: NaiveDate,
    held: Decimal,
}

impl KeySpend {
    fn new(day: NaiveDate) -> KeySpend {
        KeySpend {
            total: Decimal::ZERO,
            today: Decimal::ZERO,
            day,
            held: Decimal::ZERO,
        }
    }

    /// A new UTC day starts the daily cap afresh.
    fn roll(&mut self, day: NaiveDate) {
        if day > self.day {
            self.day = day;
            self.today = Decimal::ZERO;
        }
    }
}

/// Every capped key of one account. Keys without caps are never entered, so an account
/// without capped keys pays one empty-map check per request.
#[derive(Debug, Default)]
pub(crate) struct KeySpends {
    keys: HashMap<Uuid, KeySpend>,
}

impl KeySpends {
    /// What the store summed when the actor loaded.
    pub(crate) fn load(spent: Vec<KeySpent>) -> KeySpends {
        let keys = spent
            .into_iter()
            .map(|key| {
                let spend = KeySpend {
                    total: key.total,
                    today: key.today,
                    day: key.day,
                    held: Decimal::ZERO,
                };
                (key.key_id, spend)
            })
            .collect();
        KeySpends { keys }
    }

    /// Admits a hold of `amount` for `key` under `caps` on `day` and counts it held, or says
    /// which cap it does not fit under.
    #[cfg(test)]
    fn admit(
        &mut self,
        key: Uuid,
        caps: SpendCaps,
        amount: Decimal,
        day: NaiveDate,
    ) -> Result<(), Refusal> {
        self.check(key, caps, amount, day)?;
        self.hold(key, amount);
        Ok(())
    }

    /// Says whether a hold of `amount` for `key` fits under `caps` on `day`, holding nothing
    /// yet ([`KeySpends::hold`] does, once every other check has passed). A key the actor has
    /// not seen has spent nothing since the actor loaded, and the store knew of no spend
    /// before: it was created since.
    pub(crate) fn check(
        &mut self,
        key: Uuid,
        caps: SpendCaps,
        amount: Decimal,
        day: NaiveDate,
    ) -> Result<(), Refusal> {
        let spend = self.keys.entry(key).or_insert_with(|| KeySpend::new(day));
        spend.roll(day);
        for (cap, limit, spent) in [
            (SpendCap::Total, caps.total, spend.total),
            (SpendCap::Daily, caps.daily, spend.today),
        ] {
            let Some(limit) = limit else { continue };
            let available = limit - spent - spend.held;
            if amount > available {
                return Err(Refusal::SpendCapReached {
                    cap,
                    limit,
                    required: amount,
                    available: available.max(Decimal::ZERO),
                });
            }
        }
        Ok(())
    }

    /// Counts a checked hold of `key`.
    pub(crate) fn hold(&mut self, key: Uuid, amount: Decimal) {
        if let Some(spend) = self.keys.get_mut(&key) {
            spend.held += amount;
        }
    }

    /// A hold of `key` changed by `delta` (resized once the real prompt was known).
    pub(crate) fn resize(&mut self, key: Uuid, delta: Decimal) {
        if let Some(spend) = self.keys.get_mut(&key) {
            spend.held += delta;
        }
    }

    /// A hold of `key` ended without a debit.
    pub(crate) fn release(&mut self, key: Uuid, held: Decimal) {
        if let Some(spend) = self.keys.get_mut(&key) {
            spend.held = (spend.held - held).max(Decimal::ZERO);
        }
    }

    /// A request of `key` that started on `started` settled at `cost`; `held` is what its
    /// hold counted against the key (zero for a hold the key never counted).
    pub(crate) fn settle(
        &mut self,
        key: Uuid,
        held: Decimal,
        cost: Decimal,
        started: NaiveDate,
        day: NaiveDate,
    ) {
        if let Some(spend) = self.keys.get_mut(&key) {
            spend.held = (spend.held - held).max(Decimal::ZERO);
            spend.total += cost;
            spend.roll(day);
            if started == spend.day {
                spend.today += cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, d).unwrap()
    }

    #[test]
    fn holds_and_spend_together_never_pass_the_total_cap() {
        let key = Uuid::now_v7();
        let caps = SpendCaps {
            daily: None,
            total: Some(dec!(1)),
        };
        let mut spends = KeySpends::load(vec![KeySpent {
            key_id: key,
            total: dec!(0.4),
            today: dec!(0),
            day: day(3),
        }]);
        spends.admit(key, caps, dec!(0.3), day(3)).unwrap();
        let refused = spends.admit(key, caps, dec!(0.31), day(3)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::SpendCapReached {
                cap: SpendCap::Total,
                limit: dec!(1),
                required: dec!(0.31),
                available: dec!(0.3),
            }
        );
        spends.admit(key, caps, dec!(0.3), day(3)).unwrap();
        spends.settle(key, dec!(0.3), dec!(0.1), day(3), day(3));
        spends.release(key, dec!(0.3));
        // 0.5 spent, nothing held.
        spends.admit(key, caps, dec!(0.5), day(4)).unwrap();
        assert!(spends.admit(key, caps, dec!(0.01), day(4)).is_err());
    }

    #[test]
    fn the_daily_cap_starts_afresh_each_utc_day() {
        let key = Uuid::now_v7();
        let caps = SpendCaps {
            daily: Some(dec!(1)),
            total: None,
        };
        let mut spends = KeySpends::default();
        spends.admit(key, caps, dec!(1), day(3)).unwrap();
        spends.settle(key, dec!(1), dec!(0.9), day(3), day(3));
        let refused = spends.admit(key, caps, dec!(0.2), day(3)).unwrap_err();
        assert!(matches!(
            refused,
            Refusal::SpendCapReached {
                cap: SpendCap::Daily,
                ..
            }
        ));
        spends.admit(key, caps, dec!(1), day(4)).unwrap();
        // A request that started yesterday counts in the total, not today.
        spends.settle(key, dec!(1), dec!(0.5), day(3), day(4));
        spends.admit(key, caps, dec!(1), day(4)).unwrap();
    }
}
