//! Passwords: the terms' rule, and argon2id hashing off the async runtime.

use std::fmt;

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The terms' minimum length.
const MIN_PASSWORD_CHARS: usize = 8;
/// Longer inputs only cost hashing time; no one types more.
const MAX_PASSWORD_CHARS: usize = 1024;

/// OWASP's argon2id parameters: 19 MiB of memory, 2 iterations, parallelism 1.
const ARGON2_MEMORY_KIB: u32 = 19_456;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_PARALLELISM: u32 = 1;

/// A hash of a password nobody knows, at the same parameters: verified in place of a real
/// hash when a login names an unknown email, so that the answer takes as long as for a wrong
/// password and does not tell which emails have accounts.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRmb3J0b2xsZ2F0ZQ$eMCRMtv6kiA6VyJnB6CgCk9Q5sShDzJdBQ5VwNDTJZo";

/// argon2id at [`ARGON2_MEMORY_KIB`], [`ARGON2_ITERATIONS`] and [`ARGON2_PARALLELISM`],
/// written out rather than left to the crate's defaults, which may change.
fn argon2id() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A password that meets the terms: at least 8 characters, with letters and digits. Its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// A PHC-format argon2id hash, the only form in which a password is stored. Its `Debug`
/// never shows it: a hash is an offline-guessing target.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("needs at least 8 characters, with letters and digits")]
    TooWeak,
    #[error("longer than 1024 characters")]
    TooLong,
    #[error("hashing failed: {0}")]
    Hashing(String),
}

impl Password {
    pub fn new(raw: &str) -> Result<Password, PasswordError> {
        let chars = raw.chars().count();
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordError::TooLong);
        }
        let strong = chars >= MIN_PASSWORD_CHARS
            && raw.chars().any(char::is_alphabetic)
            && raw.chars().any(|c| c.is_ascii_digit());
        if strong {
            Ok(Password(raw.to_string()))
        } else {
            Err(PasswordError::TooWeak)
        }
    }

    /// Hashes with argon2id and a fresh salt on the blocking pool: a hash takes tens of
    /// milliseconds of CPU, which would stall every request sharing an HTTP worker.
    pub async fn hash(self) -> Result<PasswordHash, PasswordError> {
        tokio::task::spawn_blocking(move || {
            argon2id()?
                .hash_password(self.0.as_bytes(), &SaltString::generate(&mut OsRng))
                .map(|hash| PasswordHash(hash.to_string()))
                .map_err(|error| PasswordError::Hashing(error.to_string()))
        })
        .await
        .map_err(|error| PasswordError::Hashing(error.to_string()))?
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// A hash as stored.
    pub fn stored(phc: String) -> PasswordHash {
        PasswordHash(phc)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `presented` is the password of `stored`, checked on the blocking pool. With no
/// stored hash (an unknown email, or an account without a login), a dummy hash is verified
/// instead, so the answer takes the same time, and is `false`.
pub async fn verify_password(
    presented: String,
    stored: Option<PasswordHash>,
) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let phc = stored.map_or_else(|| DUMMY_HASH.to_string(), |hash| hash.0);
        let parsed = argon2::PasswordHash::new(&phc)
            .map_err(|error| PasswordError::Hashing(error.to_string()))?;
        let matches = argon2id()?
            .verify_password(presented.as_bytes(), &parsed)
            .is_ok();
        Ok(real && matches)
    })
    .await
    .map_err(|error| PasswordError::Hashing(error.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[test]
    fn passwords_follow_the_terms() {
        assert!(Password::new("abcdefg1").is_ok());
        for bad in ["abc1", "abcdefgh", "12345678"] {
            assert!(
                matches!(Password::new(bad), Err(PasswordError::TooWeak)),
                "{bad}"
            );
        }
        assert!(matches!(
            Password::new(&format!("a1{}", "x".repeat(MAX_PASSWORD_CHARS))),
            Err(PasswordError::TooLong)
        ));
        assert_eq!(
            format!("{:?}", Password::new("abcdefg1").unwrap()),
            "Password(..)"
        );
    }

    #[tokio::test]
    async fn verification_accepts_only_the_password_and_never_without_a_hash() {
        let hash = Password::new("abcdefg1").unwrap().hash().await.unwrap();
        assert!(verify_password("abcdefg1".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify_password("abcdefg2".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify_password("abcdefg1".into(), None).await.unwrap());
        // The dummy hash is a real one at the same cost.
        let dummy = argon2::PasswordHash::new(DUMMY_HASH).unwrap();
        let params = Params::try_from(&dummy).unwrap();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM)
        );
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_only_it() {
        let hash = Password::new("abcdefg1").unwrap().hash().await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(format!("{hash:?}"), "PasswordHash(..)");
        let parsed = argon2::PasswordHash::new(hash.as_str()).unwrap();
        assert!(Argon2::default()
            .verify_password(b"abcdefg1", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"abcdefg2", &parsed)
            .is_err());
    }
}
