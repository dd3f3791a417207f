//! The format of tollgate's API keys.
//!
//! A key is `sk-tg-`, 32 random base62 characters (about 190 bits) and a 6-character base62
//! checksum: the CRC-32 of the random part. The checksum is no secret and proves nothing
//! about a key's validity; it lets the request path refuse a mistyped, truncated or made-up
//! key before it spends an HMAC and a map lookup on it, and lets a secret scanner tell a real
//! key from a look-alike. Keys issued before the checksum (40 random characters, no
//! checksum) keep working: their shape is recognised and they go to the lookup as before.

use std::fmt;

use rand::distributions::Alphanumeric;
use rand::Rng;

/// Every key starts with this, so it is recognisable in a leaked-secrets scan.
pub const KEY_PREFIX: &str = "sk-tg-";
/// Random characters after the prefix: 32 base62 characters, about 190 bits.
const KEY_RANDOM_CHARS: usize = 32;
/// The checksum's characters: base62 of a CRC-32 (62^6 > 2^32).
const CHECKSUM_CHARS: usize = 6;
/// Random characters of a key issued before the checksum, which had none.
const LEGACY_RANDOM_CHARS: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
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
        let checksum = checksum(random.as_bytes());
        ApiKeySecret(format!("{KEY_PREFIX}{random}{}", as_str(&checksum)))
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

/// The base62 CRC-32 of a key's random part, fixed width.
fn checksum(random: &[u8]) -> [u8; CHECKSUM_CHARS] {
    let mut value = crc32fast::hash(random);
    let mut out = [b'0'; CHECKSUM_CHARS];
    for digit in out.iter_mut().rev() {
        // `value % 62` is always a valid index; `get` keeps the lint's promise anyway.
        *digit = BASE62.get((value % 62) as usize).copied().unwrap_or(b'0');
        value /= 62;
    }
    out
}

fn as_str(checksum: &[u8; CHECKSUM_CHARS]) -> &str {
    // Base62 digits are ASCII.
    std::str::from_utf8(checksum).unwrap_or_default()
}

/// Whether `presented` has the shape of a key tollgate issued: the current one with a checksum
/// that matches, or the older one without a checksum. Anything else cannot be a key, and is
/// refused before it is hashed or looked up. No allocation; a few dozen byte operations.
pub fn is_well_formed(presented: &str) -> bool {
    let Some(rest) = presented.strip_prefix(KEY_PREFIX) else {
        return false;
    };
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    match rest.len() {
        LEGACY_RANDOM_CHARS => true,
        n if n == KEY_RANDOM_CHARS + CHECKSUM_CHARS => {
            let (random, sum) = rest.as_bytes().split_at(KEY_RANDOM_CHARS);
            checksum(random) == sum
        }
        _ => false,
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
    fn a_generated_key_is_well_formed_and_one_changed_character_is_not() {
        for _ in 0..100 {
            let key = ApiKeySecret::generate();
            assert!(is_well_formed(key.expose()), "{}", key.expose());
            let mut bytes = key.expose().as_bytes().to_vec();
            for at in KEY_PREFIX.len()..bytes.len() {
                let original = bytes[at];
                bytes[at] = if original == b'a' { b'b' } else { b'a' };
                let changed = String::from_utf8(bytes.clone()).unwrap();
                assert!(!is_well_formed(&changed), "{changed}");
                bytes[at] = original;
            }
        }
    }

    #[test]
    fn the_checksum_is_a_fixed_width_base62_crc32() {
        // CRC-32 of "123456789" is 0xCBF43926 = 3421780262, which is 3jZRME in base62.
        assert_eq!(as_str(&checksum(b"123456789")), "3jZRME");
        assert_eq!(as_str(&checksum(b"")), "000000");
    }

    #[test]
    fn keys_of_the_old_shape_pass_and_other_shapes_do_not() {
        let legacy = format!("{KEY_PREFIX}{}", "A1b2".repeat(10));
        assert!(is_well_formed(&legacy));
        for bad in [
            "",
            "sk-tg-",
            "sk-tg-guess",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
            &format!("{KEY_PREFIX}{}", "A".repeat(39)),
            &format!("{KEY_PREFIX}{}-", "A".repeat(39)),
            &format!("{KEY_PREFIX}{}", "é".repeat(19)),
            &format!("{KEY_PREFIX}{}", "A".repeat(38)),
        ] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn a_key_has_the_prefix_random_characters_and_a_short_display_prefix() {
        let key = ApiKeySecret::generate();
        assert!(key.expose().starts_with(KEY_PREFIX));
        assert_eq!(
            key.expose().len(),
            KEY_PREFIX.len() + KEY_RANDOM_CHARS + CHECKSUM_CHARS
        );
        assert!(key.expose().starts_with(key.display_prefix()));
        assert_eq!(key.display_prefix().len(), DISPLAY_PREFIX_CHARS);
        assert_ne!(key, ApiKeySecret::generate());
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
