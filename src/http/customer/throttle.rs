//! The customer API's abuse throttles: signups per address and per network, failed logins
//! per address and per account.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AccountSettings;

/// The network a signup counts against besides its own address: the /24 of an IPv4 address,
/// the /64 of an IPv6 one (a single host is routinely given a whole /64).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// The address itself, an IPv4-mapped IPv6 address as its IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(
    per: impl Fn(NonZeroU32) -> Quota,
    n: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(per(n)))
}

fn wait_of(not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// Registrations per client address and per its network, each per hour.
pub struct SignupThrottle {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_network: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl SignupThrottle {
    pub fn new(settings: &AccountSettings) -> SignupThrottle {
        SignupThrottle {
            per_ip: keyed(Quota::per_hour, settings.signups_per_ip_per_hour),
            per_network: keyed(Quota::per_hour, settings.signups_per_block_per_hour),
        }
    }

    /// Counts a signup attempt from `ip`: `Err(wait)` when its address or network has had
    /// its hour's share.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        if let Some(limiter) = &self.per_network {
            limiter.check_key(&network_of(ip)).map_err(wait_of)?;
        }
        if let Some(limiter) = &self.per_ip {
            limiter.check_key(&canonical(ip)).map_err(wait_of)?;
        }
        Ok(())
    }

    pub fn prune(&self) {
        for limiter in [&self.per_ip, &self.per_network].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Failed logins per client address and per account, each per minute. A client over either
/// limit is refused before its password is checked, for as long as the limiter says, so a
/// right guess made while throttled is refused too and teaches nothing.
pub struct LoginThrottle {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Keyed by the normalised email, so an unknown email is throttled exactly as a known
    /// one is, and the throttle tells no one which emails exist.
    per_account: Option<DefaultKeyedRateLimiter<String>>,
    blocked_ips: DashMap<IpAddr, Instant>,
    blocked_accounts: DashMap<String, Instant>,
}

impl LoginThrottle {
    pub fn new(settings: &AccountSettings) -> LoginThrottle {
        LoginThrottle {
            per_ip: keyed(Quota::per_minute, settings.login_failures_per_ip_per_minute),
            per_account: keyed(
                Quota::per_minute,
                settings.login_failures_per_account_per_minute,
            ),
            blocked_ips: DashMap::new(),
            blocked_accounts: DashMap::new(),
        }
    }

    /// A throttle of other failures by the same two keys, per minute: a client address, and
    /// the account (any string that names it). 0 disables a side.
    pub fn per_minute(per_ip: u32, per_account: u32) -> LoginThrottle {
        LoginThrottle {
            per_ip: keyed(Quota::per_minute, per_ip),
            per_account: keyed(Quota::per_minute, per_account),
            blocked_ips: DashMap::new(),
            blocked_accounts: DashMap::new(),
        }
    }

    /// `Err(wait)` while the address or the email is blocked.
    pub fn check(&self, ip: IpAddr, email: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let ip_wait = self
            .blocked_ips
            .get(&canonical(ip))
            .map(|until| until.saturating_duration_since(now));
        let account_wait = self
            .blocked_accounts
            .get(email)
            .map(|until| until.saturating_duration_since(now));
        match ip_wait.max(account_wait) {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// Counts a failed login; `Err(wait)` if it was one too many, which blocks the address or
    /// the email for `wait`.
    pub fn fail(&self, ip: IpAddr, email: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let ip = canonical(ip);
        let mut wait = None;
        if let Some(Err(not_until)) = self.per_ip.as_ref().map(|l| l.check_key(&ip)) {
            let for_ip = wait_of(not_until);
            self.blocked_ips.insert(ip, now + for_ip);
            wait = Some(for_ip);
        }
        let email = email.to_string();
        if let Some(Err(not_until)) = self.per_account.as_ref().map(|l| l.check_key(&email)) {
            let for_account = wait_of(not_until);
            self.blocked_accounts.insert(email, now + for_account);
            wait = wait.max(Some(for_account));
        }
        wait.map_or(Ok(()), Err)
    }

    /// Forgets blocks that have ended and counts that have recovered.
    pub fn prune(&self) {
        let now = Instant::now();
        self.blocked_ips.retain(|_, until| *until > now);
        self.blocked_accounts.retain(|_, until| *until > now);
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_account {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn signups_count_per_24_and_per_64() {
        assert_eq!(network_of(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network_of(ip("::ffff:203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        let throttle = SignupThrottle::new(&AccountSettings {
            signups_per_ip_per_hour: 1,
            signups_per_block_per_hour: 2,
            ..AccountSettings::default()
        });
        assert!(throttle.admit(ip("203.0.113.1")).is_ok());
        assert!(throttle.admit(ip("203.0.113.1")).is_err(), "per address");
        assert!(throttle.admit(ip("203.0.113.2")).is_err(), "per network");
        assert!(throttle.admit(ip("198.51.100.1")).is_ok());
    }

    #[test]
    fn failed_logins_block_the_address_and_the_account_until_they_recover() {
        let throttle = LoginThrottle::new(&AccountSettings {
            login_failures_per_ip_per_minute: 100,
            login_failures_per_account_per_minute: 2,
            ..AccountSettings::default()
        });
        let a = ip("10.0.0.1");
        assert!(throttle.fail(a, "x@y.co").is_ok());
        assert!(throttle.fail(a, "x@y.co").is_ok());
        assert!(throttle.check(a, "x@y.co").is_ok());
        let wait = throttle.fail(ip("10.0.0.9"), "x@y.co").unwrap_err();
        assert!(wait > Duration::ZERO);
        assert!(throttle.check(ip("10.0.0.7"), "x@y.co").is_err());
        assert!(throttle.check(a, "other@y.co").is_ok());
    }
}
