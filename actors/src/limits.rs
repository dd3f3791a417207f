//! Per-account throttles: requests per minute and tokens per minute (governor GCRA limiters),
//! and a concurrency cap that the account actor counts itself.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
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

/// The live limiter state behind [`AccountLimits`].
pub(crate) struct Limiters {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<DefaultDirectRateLimiter>,
    tokens_burst: u32,
}

/// When a concurrency slot frees up is unknown; clients are told to come back after this.
pub(crate) const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

fn per_minute(n: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(n).map(|n| RateLimiter::direct(Quota::per_minute(n)))
}

impl Limiters {
    pub(crate) fn new(limits: &AccountLimits) -> Limiters {
        Limiters {
            requests: per_minute(limits.requests_per_minute),
            tokens: per_minute(limits.tokens_per_minute),
            tokens_burst: limits.tokens_per_minute,
        }
    }

    /// Admits one request against both rate limits. The request limit spends one cell; the
    /// token limit is only checked for being exhausted here (tokens are charged at settle,
    /// when the real count is known), at the cost of one cell.
    pub(crate) fn admit(&self) -> Result<(), (Throttle, Duration)> {
        // A clock is only read on refusal: building one costs a CPUID, which traps to the
        // hypervisor on a virtual machine.
        let wait = |not_until: governor::NotUntil<_>| {
            not_until.wait_time_from(DefaultClock::default().now())
        };
        if let Some(requests) = &self.requests {
            requests
                .check()
                .map_err(|not_until| (Throttle::Requests, wait(not_until)))?;
        }
        if let Some(tokens) = &self.tokens {
            tokens
                .check()
                .map_err(|not_until| (Throttle::Tokens, wait(not_until)))?;
        }
        Ok(())
    }

    /// Charges the tokens a request really used. GCRA cannot go into debt, so when the bucket
    /// holds fewer cells than were used it is drained to empty: the next request then waits
    /// for the bucket to refill, which is what the limit promises.
    pub(crate) fn charge_tokens(&self, used: u64) {
        let Some(tokens) = &self.tokens else { return };
        let mut remaining = used.min(u64::from(self.tokens_burst));
        let mut step = remaining;
        while remaining > 0 && step > 0 {
            let n = u32::try_from(step.min(remaining)).unwrap_or(u32::MAX);
            let Some(n) = NonZeroU32::new(n) else { break };
            match tokens.check_n(n) {
                Ok(Ok(())) => remaining -= u64::from(n.get()),
                // Not that many cells left: try half as many.
                _ => step /= 2,
            }
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
            assert!(limiters.admit().is_ok());
        }
        let (which, retry_after) = limiters.admit().unwrap_err();
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
        assert!(limiters.admit().is_ok());
        limiters.charge_tokens(5_000);
        let (which, _) = limiters.admit().unwrap_err();
        assert_eq!(which, Throttle::Tokens);
    }

    #[test]
    fn zero_means_unlimited() {
        let limiters = Limiters::new(&AccountLimits {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            max_concurrent: 0,
        });
        for _ in 0..10_000 {
            assert!(limiters.admit().is_ok());
        }
        limiters.charge_tokens(u64::MAX);
    }
}
