//! Email addresses, normalised once so that lookups and uniqueness agree.

use std::fmt;

/// The longest address SMTP can carry, in octets (RFC 5321's path limit, less the brackets).
const MAX_EMAIL_BYTES: usize = 254;

/// A plausible email address, trimmed and lower-cased: one `@`, something before it, a dotted
/// domain after it, no spaces or control characters. Whether it receives mail is for a
/// verification email to find out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address")]
pub struct EmailError;

impl Email {
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let email = raw.trim().to_lowercase();
        let (local, domain) = email.split_once('@').ok_or(EmailError)?;
        let plausible = !local.is_empty()
            && email.len() <= MAX_EMAIL_BYTES
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if plausible {
            Ok(Email(email))
        } else {
            Err(EmailError)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_addresses_are_accepted_and_normalised() {
        assert_eq!(Email::parse(" A@B.co ").unwrap().as_str(), "a@b.co");
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.co", "a@.co", "a@co.",
        ] {
            assert_eq!(Email::parse(bad), Err(EmailError), "{bad}");
        }
        let long = format!("{}@b.co", "a".repeat(MAX_EMAIL_BYTES));
        assert!(Email::parse(&long).is_err());
    }
}
