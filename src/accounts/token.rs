//! Secrets tollgate hands to a customer and keeps only as a hash: login sessions and the
//! single-use tokens of verification and reset emails.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Random bytes in a token: 256 bits, far past guessing.
const TOKEN_BYTES: usize = 32;
/// Marks a session token, so that it is recognisable in a leaked-secrets scan and never
/// mistaken for an API key (`sk-tg-`).
pub const SESSION_PREFIX: &str = "tgs_";

/// A token as the customer holds it. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// A fresh session token.
    pub fn session() -> SecretToken {
        SecretToken(format!("{SESSION_PREFIX}{}", random_hex()))
    }

    /// A fresh token for an emailed link.
    pub fn link() -> SecretToken {
        SecretToken(random_hex())
    }

    /// The token, for the one answer or email that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(..)")
    }
}

/// The SHA-256 of a token, the only form in which one is stored. A token has 256 random
/// bits, so a plain hash is as strong as a keyed or slow one would be.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(Vec<u8>);

impl TokenHash {
    /// The hash of a token a client presented.
    pub fn of(presented: &str) -> TokenHash {
        TokenHash(Sha256::digest(presented.as_bytes()).to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hidden_from_debug() {
        let session = SecretToken::session();
        assert!(session.expose().starts_with(SESSION_PREFIX));
        assert_eq!(
            session.expose().len(),
            SESSION_PREFIX.len() + 2 * TOKEN_BYTES
        );
        assert_ne!(session, SecretToken::session());
        assert_eq!(format!("{session:?}"), "SecretToken(..)");
        assert_eq!(session.hash(), TokenHash::of(session.expose()));
        assert_eq!(session.hash().as_bytes().len(), 32);
        assert!(!SecretToken::link().expose().starts_with(SESSION_PREFIX));
    }
}
