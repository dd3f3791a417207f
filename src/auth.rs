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

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::accounts::ApiKeySecret;
use crate::store::ActiveKey;

pub type Digest = [u8; 32];

/// Who a valid key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub account_id: Uuid,
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
                    KeyOwner {
                        key_id: key.key_id,
                        account_id: key.account_id,
                    },
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
        let found = presented
            .filter(|key| key.len() <= 256)
            .and_then(|key| self.inner.keys.get(&self.digest(key)).map(|owner| *owner));
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
        let owner = KeyOwner {
            key_id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
        };
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            ring.authenticate(Some(key.secret.expose()), ip),
            Err(AuthFailure::InvalidKey)
        );
        ring.insert(key.digest, owner);
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
