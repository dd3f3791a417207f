//! The format of tollgate's API keys.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Every key starts with this, so it is recognisable in a leaked-secrets scan.
pub const KEY_PREFIX: &str = "sk-tg-";
/// Random characters after the prefix: 40 alphanumerics, about 238 bits.
const KEY_RANDOM_CHARS: usize = 40;
/// Characters of a key shown after creation (the fixed prefix plus 6 random characters).
const DISPLAY_PREFIX_CHARS: usize = KEY_PREFIX.len() + 6;

/// A full API key. It is shown to its owner once, at creation, and is never stored or logged:
/// its `Debug` shows only the display prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn generate() -> ApiKeySecret {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(KEY_RANDOM_CHARS)
            .map(char::from)
            .collect();
        ApiKeySecret(format!("{KEY_PREFIX}{random}"))
    }

    /// What may be shown of the key after creation, to tell keys apart.
    pub fn display_prefix(&self) -> &str {
        // The key is ASCII, so any byte offset is a character boundary.
        self.0.get(..DISPLAY_PREFIX_CHARS).unwrap_or(KEY_PREFIX)
    }

    /// The whole key, for hashing and for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}..)", self.display_prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_the_prefix_random_characters_and_a_short_display_prefix() {
        let key = ApiKeySecret::generate();
        assert!(key.expose().starts_with(KEY_PREFIX));
        assert_eq!(key.expose().len(), KEY_PREFIX.len() + KEY_RANDOM_CHARS);
        assert!(key.expose().starts_with(key.display_prefix()));
        assert_eq!(key.display_prefix().len(), DISPLAY_PREFIX_CHARS);
        assert_ne!(key, ApiKeySecret::generate());
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
