//! Per-key rate limits, kept by the account's actor beside the account's own: requests per
//! minute, tokens per minute and requests at once, each only tighter than the account's. A key
//! without its own limits is never entered, so an account whose keys inherit everything pays
//! one `None` check per request.
//!
//! The account's concurrency is counted at its gate before the body is read
//! (docs/adr/0013-check-before-reading.md); a key's is counted here, at admission, because the
//! gate is per account. Either way the refusal comes before any upstream call.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use crate::limits::{AccountLimits, KeyLimiters, Throttle};

/// One limited key's state.
struct KeyThrottle {
    limits: AccountLimits,
    limiters: KeyLimiters,
    /// Its requests admitted and not yet settled or released.
    running: u32,
    /// Their token estimates.
    pending_tokens: u64,
}

/// Every limited key of one account that has made a request since the actor started. The
/// map is bounded by the account's keys.
#[derive(Default)]
pub(crate) struct KeyThrottles {
    keys: HashMap<Uuid, KeyThrottle>,
}

impl KeyThrottles {
    /// Whether one more request of `key`, under `limits`, estimating `tokens`, fits. Spends
    /// nothing: [`KeyThrottles::admit`] does once the account's checks have passed too.
    pub(crate) fn check(
        &mut self,
        key: Uuid,
        limits: AccountLimits,
        tokens: u64,
    ) -> Result<(), (Throttle, Duration)> {
        let throttle = self.keys.entry(key).or_insert_with(|| KeyThrottle {
            limits,
            limiters: KeyLimiters::new(&limits),
            running: 0,
            pending_tokens: 0,
        });
        if throttle.limits != limits {
            // An operator changed the key's limits: the allowance starts afresh under them.
            throttle.limits = limits;
            throttle.limiters = KeyLimiters::new(&limits);
        }
        throttle
            .limiters
            .check(tokens, throttle.pending_tokens, throttle.running)
    }

    /// Counts an admitted request of a checked key and spends its request cell.
    pub(crate) fn admit(&mut self, key: Uuid, tokens: u64) {
        if let Some(throttle) = self.keys.get_mut(&key) {
            throttle.limiters.admitted();
            throttle.running = throttle.running.saturating_add(1);
            throttle.pending_tokens = throttle.pending_tokens.saturating_add(tokens);
        }
    }

    /// A request of `key` that estimated `tokens` ended, having used `used` (0 when released).
    pub(crate) fn finish(&mut self, key: Uuid, tokens: u64, used: u64) {
        if let Some(throttle) = self.keys.get_mut(&key) {
            throttle.running = throttle.running.saturating_sub(1);
            throttle.pending_tokens = throttle.pending_tokens.saturating_sub(tokens);
            throttle.limiters.charge_tokens(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_counts_its_running_requests_until_they_finish() {
        let mut keys = KeyThrottles::default();
        let key = Uuid::now_v7();
        let limits = AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            max_concurrent: 1,
        };
        assert!(keys.check(key, limits, 10).is_ok());
        keys.admit(key, 10);
        assert_eq!(
            keys.check(key, limits, 10).unwrap_err().0,
            Throttle::Concurrency
        );
        let other = Uuid::now_v7();
        assert!(keys.check(other, limits, 10).is_ok(), "keys count apart");
        keys.finish(key, 10, 0);
        assert!(keys.check(key, limits, 10).is_ok());
    }

    #[test]
    fn new_limits_for_a_key_replace_its_allowance() {
        let mut keys = KeyThrottles::default();
        let key = Uuid::now_v7();
        let tight = AccountLimits {
            requests_per_minute: 1,
            tokens_per_minute: 0,
            max_concurrent: 0,
        };
        assert!(keys.check(key, tight, 1).is_ok());
        keys.admit(key, 1);
        keys.finish(key, 1, 1);
        assert_eq!(keys.check(key, tight, 1).unwrap_err().0, Throttle::Requests);
        let looser = AccountLimits {
            requests_per_minute: 5,
            ..tight
        };
        assert!(keys.check(key, looser, 1).is_ok());
    }
}
