//! The EPay signature: MD5 over the sorted, non-empty parameters followed by the merchant key.

use md5::{Digest, Md5};

/// Signs EPay parameters with the merchant key.
///
/// The rule, as EPay gateways apply it: leave out `sign` and `sign_type` and every parameter
/// whose value is empty, sort the rest by key (byte order; equal keys by value), join them as
/// `k=v&k=v` with the raw values (not URL-encoded), append the key directly (no separator),
/// and take the MD5 as lowercase hex.
pub fn sign<I, K, V>(params: I, key: &str) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut kept: Vec<(K, V)> = params
        .into_iter()
        .filter(|(k, v)| {
            let k = k.as_ref();
            k != "sign" && k != "sign_type" && !v.as_ref().is_empty()
        })
        .collect();
    kept.sort_by(|(ka, va), (kb, vb)| {
        (ka.as_ref().as_bytes(), va.as_ref().as_bytes())
            .cmp(&(kb.as_ref().as_bytes(), vb.as_ref().as_bytes()))
    });
    let mut text = String::new();
    for (i, (k, v)) in kept.iter().enumerate() {
        if i > 0 {
            text.push('&');
        }
        text.push_str(k.as_ref());
        text.push('=');
        text.push_str(v.as_ref());
    }
    text.push_str(key);
    md5_hex(text.as_bytes())
}

/// Whether `signature` is the [`sign`] of `params` under `key`, compared in constant time
/// (case-insensitively, as the hex may arrive in upper case).
pub fn verify<I, K, V>(params: I, key: &str, signature: &str) -> bool
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let expected = sign(params, key);
    constant_time_eq(
        expected.as_bytes(),
        signature.to_ascii_lowercase().as_bytes(),
    )
}

/// `params` plus `sign` and `sign_type=MD5`, URL-encoded as a query string (or form body):
/// what a merchant sends to `submit.php`, or what the gateway appends to a return URL.
pub fn signed_query<K, V>(params: &[(K, V)], key: &str) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let signature = sign(params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())), key);
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, _)| *k != "sign" && *k != "sign_type")
        .collect();
    pairs.push(("sign", &signature));
    pairs.push(("sign_type", "MD5"));
    encode_pairs(&pairs)
}

/// `k=v&k=v`, each side `application/x-www-form-urlencoded`.
pub(crate) fn encode_pairs(pairs: &[(&str, &str)]) -> String {
    // Encoding a sequence of string pairs cannot fail; an empty string is the safe fallback.
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// Equality of two byte strings that does not stop at the first difference (the length is
/// not secret: every EPay signature is 32 hex characters).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn md5_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Md5::digest(bytes);
    let mut out = String::with_capacity(32);
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_and_the_sign_fields_are_left_out() {
        let with = sign(
            [
                ("b", "2"),
                ("a", "1"),
                ("c", ""),
                ("sign", "x"),
                ("sign_type", "MD5"),
            ],
            "K",
        );
        assert_eq!(with, md5_hex(b"a=1&b=2K"));
    }

    #[test]
    fn verification_ignores_case_and_refuses_other_lengths() {
        let params = [("a", "1")];
        let good = sign(params, "K");
        assert!(verify(params, "K", &good));
        assert!(verify(params, "K", &good.to_ascii_uppercase()));
        assert!(!verify(params, "K", &good[..31]));
        assert!(!verify(params, "other", &good));
    }
}
