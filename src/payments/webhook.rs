//! The signed webhook of any payment provider that is not EPay (docs/PAYMENTS.md):
//! `tollgate-signature: t=<unix seconds>,v1=<hex HMAC-SHA-256 of "<t>.<raw body>">` under
//! `payments.webhook.secret`, within 300 s of now.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "tollgate-signature";
/// How far a signature's time may be from now, either way.
pub const TOLERANCE_SECS: u64 = 300;
/// `v1` entries checked at most: one per secret while secrets rotate, and each costs an HMAC
/// of the body before anything is authenticated.
const MAX_SIGNATURES: usize = 4;

/// Why a webhook's signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No header, or not `t=…,v1=…`.
    Malformed,
    /// Its time is more than [`TOLERANCE_SECS`] from now: a replay, or a clock far off.
    Stale,
    /// No `v1` matches the body under the secret.
    Mismatch,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Malformed => {
                "the tollgate-signature header is missing or malformed (t=<unix seconds>,v1=<hex>, at most 4 v1)"
            }
            Refused::Stale => "the signature's time is more than 300 s from now",
            Refused::Mismatch => "the signature does not match the body",
        }
    }
}

/// Checks `header` against `body` at `now` (unix seconds). Several `v1` entries are allowed
/// (a provider rotating its secret sends one per secret); one match is enough.
pub fn verify(header: Option<&str>, body: &[u8], secret: &str, now: i64) -> Result<(), Refused> {
    let header = header.ok_or(Refused::Malformed)?;
    let mut time = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or(Refused::Malformed)?;
        match name {
            "t" => time = Some(value),
            "v1" if signatures.len() < MAX_SIGNATURES => signatures.push(value),
            "v1" => return Err(Refused::Malformed),
            _ => {}
        }
    }
    let time_text = time.ok_or(Refused::Malformed)?;
    let time: i64 = time_text.parse().map_err(|_| Refused::Malformed)?;
    if signatures.is_empty() {
        return Err(Refused::Malformed);
    }
    if now.abs_diff(time) > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    for signature in signatures {
        let Some(given) = unhex(signature) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if mac(secret, time_text, body)?.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(Refused::Mismatch)
}

fn mac(secret: &str, time: &str, body: &[u8]) -> Result<Hmac<Sha256>, Refused> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| Refused::Mismatch)?;
    mac.update(time.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The header value a provider sends for `body` at `time`: for tests and for operators
/// checking their provider's integration.
pub fn signature_header(secret: &str, time: i64, body: &[u8]) -> String {
    let time = time.to_string();
    let digest = mac(secret, &time, body)
        .map(|mac| mac.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    format!("t={time},v1={}", super::hex(&digest))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec-test-secret-of-at-least-32-chars";

    #[test]
    fn a_signature_of_the_body_within_the_window_verifies() {
        let body = br#"{"order_id":"x"}"#;
        let header = signature_header(SECRET, 1_000, body);
        assert_eq!(verify(Some(&header), body, SECRET, 1_000), Ok(()));
        assert_eq!(verify(Some(&header), body, SECRET, 1_300), Ok(()));
        assert_eq!(
            verify(Some(&header), body, SECRET, 1_301),
            Err(Refused::Stale)
        );
        assert_eq!(
            verify(Some(&header), body, SECRET, 699),
            Err(Refused::Stale)
        );
    }

    #[test]
    fn another_body_secret_or_time_does_not_verify() {
        let body = br#"{"amount_cny":"10.00"}"#;
        let header = signature_header(SECRET, 1_000, body);
        let tampered = br#"{"amount_cny":"99.00"}"#;
        assert_eq!(
            verify(Some(&header), tampered, SECRET, 1_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(
                Some(&header),
                body,
                "another-secret-of-32-characters-xx",
                1_000
            ),
            Err(Refused::Mismatch)
        );
        // The time is signed: moving it breaks the signature.
        let moved = header.replacen("t=1000", "t=1001", 1);
        assert_eq!(
            verify(Some(&moved), body, SECRET, 1_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(verify(None, body, SECRET, 1_000), Err(Refused::Malformed));
        assert_eq!(
            verify(Some("v1=00"), body, SECRET, 1_000),
            Err(Refused::Malformed)
        );
        assert_eq!(
            verify(Some("t=1000,v1=zz"), body, SECRET, 1_000),
            Err(Refused::Mismatch)
        );
        // A time far from now, even at the edge of i64, is stale, not a crash.
        let far = format!("t={},v1=00", i64::MIN);
        assert_eq!(verify(Some(&far), body, SECRET, 1_000), Err(Refused::Stale));
        let many = format!("t=1000{}", ",v1=00".repeat(5));
        assert_eq!(
            verify(Some(&many), body, SECRET, 1_000),
            Err(Refused::Malformed)
        );
    }
}
