//! API keys: generation, keyed hashing, and the in-memory lookup the request path uses.
//!
//! A key is shown once, at creation. Only its HMAC-SHA-256 under the server's key secret is
//! stored, with a short display prefix. The request path hashes the presented key and looks
//! the digest up in a concurrent map that mirrors every active key, so neither a valid key nor
//! a flood of guesses costs a database round trip. Failed attempts count against a per-IP
//! limiter.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::accounts::{ApiKeySecret, KeyPolicy};
use crate::store::ActiveKey;

pub type Digest = [u8; 32];

/// Who a valid key belongs to, and what its policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub account_id: Uuid,
    /// `None` for a key without a policy, the common case: authenticating it then copies two
    /// ids and no reference count is touched. Shared, never copied, per request.
    pub policy: Option<Arc<KeyPolicy>>,
}

/// Why a known key may not be used for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRefusal {
    /// The key's `expires_at` has passed.
    Expired,
    /// The client's address is outside the key's `allowed_ips`.
    Address,
}

impl KeyOwner {
    /// A key's owner; an open policy is not kept at all.
    pub fn new(key_id: Uuid, account_id: Uuid, policy: KeyPolicy) -> KeyOwner {
        KeyOwner {
            key_id,
            account_id,
            policy: (!policy.is_open()).then(|| Arc::new(policy)),
        }
    }

    /// Whether the key may call `model`, the rate card's canonical id.
    pub fn allows_model(&self, model: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|policy| policy.allows_model(model))
    }

    /// Checks expiry and the address allowlist for a request from `client` (`None` when the
    /// peer address is unknown, which an allowlist refuses).
    pub fn check_access(
        &self,
        now: DateTime<Utc>,
        client: Option<IpAddr>,
    ) -> Result<(), AccessRefusal> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        if policy.is_expired(now) {
            return Err(AccessRefusal::Expired);
        }
        let allowed = match client {
            Some(ip) => policy.allows_address(ip),
            None => policy.allowed_ips.is_none(),
        };
        if allowed {
            Ok(())
        } else {
            Err(AccessRefusal::Address)
        }
    }
}

/// A newly created key, before it is stored.
pub struct NewKey {
    /// The full key: shown to its owner once, never stored or logged.
    pub secret: ApiKeySecret,
    pub prefix: String,
    pub digest: Digest,
}

/// Why authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key, a malformed key, an unknown key or a revoked one.
    InvalidKey,
    /// This client has failed too often; try again after the given time.
    TooManyFailures(Duration),
}

#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    mac: Hmac<Sha256>,
    keys: DashMap<Digest, KeyOwner>,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl KeyRing {
    pub fn new(secret: &str, failed_per_minute: u32) -> KeyRing {
        // The config demands a secret of at least 16 characters, but any length would do.
        #[expect(
            clippy::expect_used,
            reason = "HMAC takes keys of any length: new_from_slice never fails for Hmac"
        )]
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes keys of any length");
        KeyRing {
            inner: Arc::new(Inner {
                mac,
                keys: DashMap::new(),
                failures: NonZeroU32::new(failed_per_minute)
                    .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            }),
        }
    }

    pub fn digest(&self, key: &str) -> Digest {
        let mut mac = self.inner.mac.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Generates a fresh key. The caller stores its digest and prefix, then calls
    /// [`KeyRing::insert`].
    pub fn generate(&self) -> NewKey {
        let secret = ApiKeySecret::generate();
        NewKey {
            prefix: secret.display_prefix().to_string(),
            digest: self.digest(secret.expose()),
            secret,
        }
    }

    /// Fills the lookup from the store at startup.
    pub fn load(&self, keys: Vec<ActiveKey>) -> usize {
        let mut loaded = 0;
        for key in keys {
            if let Ok(digest) = Digest::try_from(key.digest.as_slice()) {
                self.insert(
                    digest,
                    KeyOwner::new(key.key_id, key.account_id, key.policy),
                );
                loaded += 1;
            }
        }
        loaded
    }

    pub fn insert(&self, digest: Digest, owner: KeyOwner) {
        self.inner.keys.insert(digest, owner);
    }

    /// Forgets a revoked key: the next request with it is refused.
    pub fn remove(&self, digest: &[u8]) {
        if let Ok(digest) = Digest::try_from(digest) {
            self.inner.keys.remove(&digest);
        }
    }

    /// Forgets failure counts that have fully recovered, so the per-IP limiter's memory
    /// follows the recent failures, not every address ever seen.
    pub fn prune_failures(&self) {
        if let Some(failures) = &self.inner.failures {
            failures.retain_recent();
            failures.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.inner.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.keys.is_empty()
    }

    /// Checks a presented key. A failure is counted against `client`.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        client: IpAddr,
    ) -> Result<KeyOwner, AuthFailure> {
        let found = presented.filter(|key| key.len() <= 256).and_then(|key| {
            self.inner
                .keys
                .get(&self.digest(key))
                .map(|owner| owner.clone())
        });
        match found {
            Some(owner) => Ok(owner),
            None => Err(self.count_failure(client)),
        }
    }

    /// Counts a failed authentication of any kind (an API key, the admin token) against
    /// `client`, and says whether it has now failed too often.
    pub fn count_failure(&self, client: IpAddr) -> AuthFailure {
        let Some(failures) = &self.inner.failures else {
            return AuthFailure::InvalidKey;
        };
        match failures.check_key(&client) {
            Ok(()) => AuthFailure::InvalidKey,
            Err(not_until) => AuthFailure::TooManyFailures(
                not_until.wait_time_from(DefaultClock::default().now()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new("a-test-secret-of-enough-length", 3)
    }

    #[test]
    fn a_generated_key_authenticates_once_inserted_and_not_after_removal() {
        let ring = ring();
        let key = ring.generate();
        assert!(key.secret.expose().starts_with(crate::accounts::KEY_PREFIX));
        assert!(key.secret.expose().starts_with(&key.prefix));
        let owner = KeyOwner::new(Uuid::now_v7(), Uuid::now_v7(), KeyPolicy::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            ring.authenticate(Some(key.secret.expose()), ip),
            Err(AuthFailure::InvalidKey)
        );
        ring.insert(key.digest, owner.clone());
        assert_eq!(ring.authenticate(Some(key.secret.expose()), ip), Ok(owner));
        ring.remove(&key.digest);
        assert_eq!(
            ring.authenticate(Some(key.secret.expose()), ip),
            Err(AuthFailure::InvalidKey)
        );
    }

    #[test]
    fn the_digest_is_keyed_by_the_server_secret() {
        let a = KeyRing::new("secret-number-one-xxxx", 0);
        let b = KeyRing::new("secret-number-two-xxxx", 0);
        assert_ne!(a.digest("sk-tg-same"), b.digest("sk-tg-same"));
        assert_eq!(a.digest("sk-tg-same"), a.digest("sk-tg-same"));
    }

    #[test]
    fn a_malformed_key_is_refused_and_counted_as_a_failure() {
        let ring = KeyRing::new("a-test-secret-of-enough-length", 1);
        let key = ring.generate();
        let owner = KeyOwner::new(Uuid::now_v7(), Uuid::now_v7(), KeyPolicy::default());
        ring.insert(key.digest, owner);
        // Its digest is in the map, but the shape is checked first.
        let mut broken = key.secret.expose().to_string();
        broken.pop();
        broken.push('!');
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            ring.authenticate(Some(&broken), ip),
            Err(AuthFailure::InvalidKey)
        );
        assert!(matches!(
            ring.authenticate(Some(&broken), ip),
            Err(AuthFailure::TooManyFailures(_))
        ));
    }

    #[test]
    fn repeated_failures_from_one_ip_are_throttled_but_other_ips_are_not() {
        let ring = ring();
        let bad: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(
                ring.authenticate(Some("sk-tg-wrong"), bad),
                Err(AuthFailure::InvalidKey)
            );
        }
        assert!(matches!(
            ring.authenticate(Some("sk-tg-wrong"), bad),
            Err(AuthFailure::TooManyFailures(_))
        ));
        assert_eq!(ring.authenticate(None, other), Err(AuthFailure::InvalidKey));
    }
}
