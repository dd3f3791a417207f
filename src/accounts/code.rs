//! The format of redemption codes (兑换码): what a reseller sells through a card shop and a
//! customer types in (docs/PAYMENTS.md, "Redemption codes").
//!
//! A code is `TG-` and 20 random characters of Crockford's base32 (100 bits), then 4 check
//! characters: the CRC-32 of the 20, in base32. Written in groups of five for reading aloud:
//! `TG-7K2QD-M9XRT-4HZ0P-WCV3N-8F6A`. Typed back, case, spaces, dashes and the look-alikes
//! Crockford folds (O for 0, I and L for 1) do not matter. The check characters let a typo
//! be refused without a database lookup; they prove nothing about a code's validity. Only a
//! keyed hash of the normalised code is stored.

use rand::Rng;

const PREFIX: &str = "TG";
/// Crockford's base32: no I, L, O or U.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_CHARS: usize = 20;
const CHECK_CHARS: usize = 4;
/// Characters of a code shown after it is made (the prefix and its first group).
pub const DISPLAY_CHARS: usize = 8;

/// A new code, as shown once to the operator who made it.
pub fn generate() -> String {
    let mut rng = rand::thread_rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| char::from(ALPHABET.get(rng.gen_range(0..32)).copied().unwrap_or(b'0')))
        .collect();
    let whole = format!("{random}{}", check(&random));
    let groups: Vec<&str> = (0..whole.len())
        .step_by(5)
        .filter_map(|start| whole.get(start..(start + 5).min(whole.len())))
        .collect();
    format!("{PREFIX}-{}", groups.join("-"))
}

/// The code's canonical form (its 24 characters, no prefix), if it is well formed and its
/// check characters match; what is hashed and stored.
pub fn normalize(typed: &str) -> Option<String> {
    let mut chars: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    if chars.len() == PREFIX.len() + RANDOM_CHARS + CHECK_CHARS && chars.starts_with(PREFIX) {
        chars.drain(..PREFIX.len());
    }
    if chars.len() != RANDOM_CHARS + CHECK_CHARS || !chars.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    let (random, given) = chars.split_at(RANDOM_CHARS);
    (check(random) == given).then_some(chars)
}

/// What may be shown of a code after it is made, to tell codes apart.
pub fn display_prefix(code: &str) -> String {
    code.chars().take(DISPLAY_CHARS).collect()
}

fn check(random: &str) -> String {
    let mut value = crc32fast::hash(random.as_bytes());
    let mut out = [b'0'; CHECK_CHARS];
    for digit in out.iter_mut().rev() {
        *digit = ALPHABET.get((value % 32) as usize).copied().unwrap_or(b'0');
        value /= 32;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_normalizes_however_it_is_typed_and_a_changed_character_is_refused() {
        let code = generate();
        assert_eq!(code.len(), "TG-".len() + 24 + 4, "{code}");
        let canonical = normalize(&code).unwrap();
        assert_eq!(canonical.len(), 24);
        assert_eq!(normalize(&code.to_lowercase()), Some(canonical.clone()));
        assert_eq!(normalize(&code.replace('-', " ")), Some(canonical.clone()));
        assert_eq!(
            normalize(&canonical),
            Some(canonical.clone()),
            "without the prefix"
        );
        let mut changed = canonical.clone().into_bytes();
        changed[3] = if changed[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(normalize(std::str::from_utf8(&changed).unwrap()), None);
        assert_eq!(normalize(&canonical[..23]), None, "truncated");
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("sk-tg-not-a-code"), None);
    }

    #[test]
    fn look_alikes_fold_to_their_digits() {
        let code = generate();
        let typed = code.replace('0', "O").replace('1', "l");
        assert_eq!(normalize(&typed), normalize(&code));
    }
}
