//! Per-account throttles: requests per minute and tokens per minute (governor GCRA limiters),
//! and [`Slots`], the lock-free count behind the concurrency cap (and, in the service, the
//! per-key cap on uploads in progress).

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// An account's throttles. Zero means "no limit" for each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimits {
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    pub max_concurrent: u32,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            requests_per_minute: 600,
            tokens_per_minute: 2_000_000,
            max_concurrent: 32,
        }
    }
}

/// Which throttle refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    Requests,
    Tokens,
    Concurrency,
}

impl Throttle {
    pub fn as_str(self) -> &'static str {
        match self {
            Throttle::Requests => "requests per minute",
            Throttle::Tokens => "tokens per minute",
            Throttle::Concurrency => "concurrent requests",
        }
    }
}

/// A count of things in progress (requests of an account, uploads of a key) bounded by a limit
/// that may change while slots are taken. Taking and giving back a slot is one
/// compare-and-swap and one subtraction, so it can be checked on the HTTP side before a
/// request's body is read (docs/adr/0013-check-before-reading.md). A semaphore would do
/// the counting, but not a limit lowered while its permits are out, nor "0 = no limit".
#[derive(Debug, Default)]
pub struct Slots {
    taken: AtomicU32,
    /// 0 means no limit; taken slots are counted all the same, so that a limit set later
    /// counts what is already running.
    limit: AtomicU32,
}

/// One taken slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Slots {
    pub fn new(limit: u32) -> Slots {
        Slots {
            taken: AtomicU32::new(0),
            limit: AtomicU32::new(limit),
        }
    }

    /// Changes the limit. Slots already taken stay taken; a lower limit refuses new ones
    /// until enough are given back.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Slots taken now.
    pub fn taken(&self) -> u32 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Takes a slot, unless the limit's worth are taken already.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            if limit > 0 && taken >= limit {
                return None;
            }
            // With no limit, a count at u32::MAX refuses rather than counting one slot twice.
            let next = taken.checked_add(1)?;
            match self.taken.compare_exchange_weak(
                taken,
                next,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(now) => taken = now,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::Release);
    }
}

/// The live limiter state behind [`AccountLimits`].
pub(crate) struct Limiters {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<Allowance>,
}

/// A per-minute allowance that can be asked whether an amount fits without spending it, and
/// charged once the amount is known (docs/adr/0014-limiter-order.md).
struct Allowance {
    limiter: TokenLimiter,
    burst: u32,
    /// Nanoseconds the limiter takes to refill one cell.
    interval: u64,
}

impl Allowance {
    fn per_minute(n: u32) -> Option<Allowance> {
        let n = NonZeroU32::new(n)?;
        let quota = Quota::per_minute(n);
        Some(Allowance {
            interval: u64::try_from(quota.replenish_interval().as_nanos()).unwrap_or(u64::MAX),
            limiter: RateLimiter::new(quota, TokenBucket::default(), DefaultClock::default()),
            burst: n.get(),
        })
    }

    /// Whether `amount` fits beside `pending`, spending nothing. An amount larger than the
    /// whole allowance is asked as the allowance, so it fits a full bucket with nothing
    /// pending rather than never.
    fn ask(&self, which: Throttle, amount: u64, pending: u64) -> Result<(), (Throttle, Duration)> {
        let burst = u64::from(self.burst);
        let asked = pending.saturating_add(amount.clamp(1, burst));
        if asked > burst {
            // More than the whole allowance is pending: wait for some of it to settle.
            return Err((which, PENDING_RETRY_AFTER));
        }
        let n =
            NonZeroU32::new(u32::try_from(asked).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&TokenUse::Ask, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err((which, wait(&not_until))),
            // Not reachable with the ask at most the burst; refused all the same.
            Err(_) => Err((which, Duration::from_secs(60))),
        }
    }

    /// Spends `used` cells in one step. When the bucket holds fewer, the rest is a debt: the
    /// next ask waits until the bucket has refilled past it, which is what the limit promises.
    fn charge(&self, used: u64) {
        if used == 0 {
            return;
        }
        let charge = TokenUse::Charge {
            debt: used.saturating_mul(self.interval),
            interval: self.interval,
        };
        // The outcome is the store's to record; refused or not, the debt is stored.
        let _ = self.limiter.check_key_n(&charge, NonZeroU32::MIN);
    }
}

/// When a concurrency slot frees up is unknown; clients are told to come back after this.
pub(crate) const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// When requests admitted earlier settle is unknown too; a request whose estimate does not fit
/// beside theirs is told to come back after this.
const PENDING_RETRY_AFTER: Duration = Duration::from_secs(1);

fn per_minute(n: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(n).map(|n| RateLimiter::direct(Quota::per_minute(n)))
}

/// The tokens-per-minute limiter: governor's GCRA over a state that can be asked whether a
/// request's estimate fits without spending it (docs/adr/0014-limiter-order.md).
type TokenLimiter = RateLimiter<TokenUse, TokenBucket, DefaultClock>;

/// What a check of the token limiter does with the cells it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TokenUse {
    /// Only asks whether they fit: admission, before the real count is known.
    Ask,
    /// Charges the count the upstream reported, at settlement, as a debt when the bucket
    /// holds fewer: the store sets the arrival time to `max(tat, now) + debt` (nanoseconds,
    /// the tokens used times governor's interval per token). Checked as one cell, so that
    /// governor computes `max(tat, now)` for the store.
    Charge { debt: u64, interval: u64 },
}

/// The token limiter's GCRA state: the theoretical arrival time, in nanoseconds since the
/// limiter started (0 for never), as governor's own in-memory state keeps it. Only the account
/// actor touches it, one message at a time, so a load and a store need no compare-and-swap.
#[derive(Default)]
struct TokenBucket(AtomicU64);

impl StateStore for TokenBucket {
    type Key = TokenUse;

    fn measure_and_replace<T, F, E>(&self, key: &TokenUse, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let tat = NonZeroU64::new(self.0.load(Ordering::Relaxed)).map(|n| Nanos::from(n.get()));
        let decided = f(tat);
        if let TokenUse::Charge { debt, interval } = *key {
            let next = match &decided {
                // Allowed one cell: governor's next is `max(tat, now) + interval`.
                Ok((_, next)) => next.as_u64().saturating_sub(interval),
                // Refused even one cell: the arrival time is past now already.
                Err(_) => tat.map_or(0, |tat| tat.as_u64()),
            };
            self.0.store(next.saturating_add(debt), Ordering::Relaxed);
        }
        decided.map(|(outcome, _)| outcome)
    }
}

/// How long until `not_until` allows. A clock is only read on refusal: building one costs a
/// CPUID, which traps to the hypervisor on a virtual machine.
fn wait(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

impl Limiters {
    pub(crate) fn new(limits: &AccountLimits) -> Limiters {
        Limiters {
            requests: per_minute(limits.requests_per_minute),
            tokens: Allowance::per_minute(limits.tokens_per_minute),
        }
    }

    /// Admits one request whose every other check has passed (docs/adr/0014-limiter-order.md):
    /// the token limit must have room for the request's own estimate, `tokens`, on top of
    /// `pending`, the estimates of the account's requests admitted and not yet settled, so
    /// that requests running at once cannot together pass the allowance. Nothing is spent
    /// for tokens here (they are charged at settle, when the real count is known); then the
    /// request limit spends one cell. Refused by either, the request spends nothing.
    pub(crate) fn admit(&self, tokens: u64, pending: u64) -> Result<(), (Throttle, Duration)> {
        if let Some(allowance) = &self.tokens {
            allowance.ask(Throttle::Tokens, tokens, pending)?;
        }
        if let Some(requests) = &self.requests {
            requests
                .check()
                .map_err(|not_until| (Throttle::Requests, wait(&not_until)))?;
        }
        Ok(())
    }

    /// Charges the tokens a request really used, in one step, as a debt past what the bucket
    /// holds.
    pub(crate) fn charge_tokens(&self, used: u64) {
        if let Some(allowance) = &self.tokens {
            allowance.charge(used);
        }
    }
}

/// The live state behind one API key's own limits, which may only be tighter than its
/// account's. Every check only asks, so that a request the account's limits then refuse has
/// spent none of the key's allowance; [`KeyLimiters::admitted`] spends the request's cell.
pub(crate) struct KeyLimiters {
    requests: Option<Allowance>,
    tokens: Option<Allowance>,
    max_concurrent: u32,
}

impl KeyLimiters {
    pub(crate) fn new(limits: &AccountLimits) -> KeyLimiters {
        KeyLimiters {
            requests: Allowance::per_minute(limits.requests_per_minute),
            tokens: Allowance::per_minute(limits.tokens_per_minute),
            max_concurrent: limits.max_concurrent,
        }
    }

    /// Whether one more request of the key fits: `running` of its requests hold a slot,
    /// `pending` tokens are estimated for them, and this one estimates `tokens`.
    pub(crate) fn check(
        &self,
        tokens: u64,
        pending: u64,
        running: u32,
    ) -> Result<(), (Throttle, Duration)> {
        if self.max_concurrent != 0 && running >= self.max_concurrent {
            return Err((Throttle::Concurrency, CONCURRENCY_RETRY_AFTER));
        }
        if let Some(allowance) = &self.tokens {
            allowance.ask(Throttle::Tokens, tokens, pending)?;
        }
        if let Some(allowance) = &self.requests {
            allowance.ask(Throttle::Requests, 1, 0)?;
        }
        Ok(())
    }

    /// Spends the request cell of a request that every check admitted.
    pub(crate) fn admitted(&self) {
        if let Some(allowance) = &self.requests {
            allowance.charge(1);
        }
    }

    /// Charges the tokens a request of the key really used.
    pub(crate) fn charge_tokens(&self, used: u64) {
        if let Some(allowance) = &self.tokens {
            allowance.charge(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_limit_refuses_past_its_burst_and_says_when_to_retry() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 3,
            tokens_per_minute: 0,
            max_concurrent: 0,
        });
        for _ in 0..3 {
            assert!(limiters.admit(1, 0).is_ok());
        }
        let (which, retry_after) = limiters.admit(1, 0).unwrap_err();
        assert_eq!(which, Throttle::Requests);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(20));
    }

    #[test]
    fn tokens_used_past_the_bucket_exhaust_the_token_limit() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 1_000,
            max_concurrent: 0,
        });
        assert!(limiters.admit(1, 0).is_ok());
        limiters.charge_tokens(5_000);
        let (which, _) = limiters.admit(1, 0).unwrap_err();
        assert_eq!(which, Throttle::Tokens);
    }

    #[test]
    fn the_token_limit_refuses_an_estimate_larger_than_what_is_left_and_asking_spends_nothing() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 1_000,
            max_concurrent: 0,
        });
        // Asking whether 1,000 fit spends none of them.
        for _ in 0..3 {
            assert!(limiters.admit(1_000, 0).is_ok());
        }
        limiters.charge_tokens(600);
        let (which, retry_after) = limiters.admit(500, 0).unwrap_err();
        assert_eq!(which, Throttle::Tokens);
        assert!(retry_after > Duration::ZERO);
        assert!(limiters.admit(350, 0).is_ok());
        // An estimate past the whole allowance waits for a full bucket, not forever.
        let fresh = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 1_000,
            max_concurrent: 0,
        });
        assert!(fresh.admit(50_000, 0).is_ok());
    }

    #[test]
    fn tokens_used_past_the_bucket_are_a_debt_repaid_before_the_next_request() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 1_000,
            max_concurrent: 0,
        });
        // Three minutes' worth used at once: the bucket refills the two past the first
        // before a single token fits again.
        limiters.charge_tokens(3_000);
        let (which, retry_after) = limiters.admit(1, 0).unwrap_err();
        assert_eq!(which, Throttle::Tokens);
        assert!(retry_after > Duration::from_secs(110), "{retry_after:?}");
        assert!(retry_after <= Duration::from_secs(121), "{retry_after:?}");
    }

    #[test]
    fn a_request_refused_for_tokens_spends_no_request_allowance() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 1,
            tokens_per_minute: 1_000,
            max_concurrent: 0,
        });
        limiters.charge_tokens(900);
        for _ in 0..5 {
            assert_eq!(limiters.admit(500, 0).unwrap_err().0, Throttle::Tokens);
        }
        assert!(
            limiters.admit(50, 0).is_ok(),
            "the one request allowance is left"
        );
        assert_eq!(limiters.admit(50, 0).unwrap_err().0, Throttle::Requests);
    }

    #[test]
    fn slots_without_a_limit_refuse_at_the_counts_end_rather_than_miscount() {
        let slots = Arc::new(Slots {
            taken: AtomicU32::new(u32::MAX),
            limit: AtomicU32::new(0),
        });
        assert!(slots.try_take().is_none());
        assert_eq!(slots.taken(), u32::MAX);
    }

    #[test]
    fn slots_are_bounded_by_a_limit_that_can_change_while_they_are_taken() {
        let slots = Arc::new(Slots::new(2));
        let first = slots.try_take().unwrap();
        let second = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(first);
        let third = slots.try_take().unwrap();
        slots.set_limit(1);
        drop(third);
        assert!(
            slots.try_take().is_none(),
            "one still taken under a limit of one"
        );
        drop(second);
        assert_eq!(slots.taken(), 0);
        slots.set_limit(0);
        let many: Vec<_> = (0..100).map(|_| slots.try_take().unwrap()).collect();
        assert_eq!(slots.taken(), 100);
        drop(many);
        assert_eq!(slots.taken(), 0);
    }

    #[test]
    fn zero_means_unlimited() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            max_concurrent: 0,
        });
        for _ in 0..10_000 {
            assert!(limiters.admit(1, 0).is_ok());
        }
        limiters.charge_tokens(u64::MAX);
    }

    #[test]
    fn a_key_limit_asks_without_spending_until_the_request_is_admitted() {
        let key = KeyLimiters::new(&AccountLimits {
            requests_per_minute: 2,
            tokens_per_minute: 1_000,
            max_concurrent: 2,
        });
        // Asked any number of times, nothing is spent.
        for _ in 0..10 {
            assert!(key.check(100, 0, 0).is_ok());
        }
        key.admitted();
        key.admitted();
        assert_eq!(key.check(100, 0, 0).unwrap_err().0, Throttle::Requests);
        let fresh = KeyLimiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 1_000,
            max_concurrent: 2,
        });
        assert_eq!(fresh.check(1, 0, 2).unwrap_err().0, Throttle::Concurrency);
        assert_eq!(fresh.check(600, 500, 1).unwrap_err().0, Throttle::Tokens);
        fresh.charge_tokens(900);
        assert_eq!(fresh.check(200, 0, 0).unwrap_err().0, Throttle::Tokens);
        assert!(fresh.check(50, 0, 0).is_ok());
    }
}
