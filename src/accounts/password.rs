//! Passwords: the terms' rule, and argon2id hashing off the async runtime.

use std::fmt;

use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
use argon2::Argon2;

/// The terms' minimum length.
const MIN_PASSWORD_CHARS: usize = 8;
/// Longer inputs only cost hashing time; no one types more.
const MAX_PASSWORD_CHARS: usize = 1024;

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
            Argon2::default()
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
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
    async fn a_hash_verifies_its_password_and_only_it() {
        let hash = Password::new("abcdefg1").unwrap().hash().await.unwrap();
        assert!(hash.as_str().starts_with("$argon2id$"));
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
