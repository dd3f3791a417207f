//! A measured endpoint: a name for the report, a base URL, and the key sent as `x-api-key`.

use std::fmt;

/// One endpoint under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Short label used in reports, e.g. `direct`, `passthrough`, `tollgate`.
    pub name: String,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Sent as `x-api-key` when present.
    pub key: Option<String>,
}

/// Why a `NAME=VALUE` argument was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Splits `NAME=VALUE`; both sides must be non-empty.
pub fn split_named(arg: &str) -> Result<(String, String), ParseError> {
    match arg.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
            Ok((name.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(ParseError(format!("expected NAME=VALUE, got {arg:?}"))),
    }
}

impl Target {
    /// Parses `NAME=URL`, e.g. `tollgate=http://127.0.0.1:8080`.
    pub fn parse(arg: &str) -> Result<Target, ParseError> {
        let (name, url) = split_named(arg)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ParseError(format!(
                "target {name}: URL must start with http:// or https://, got {url:?}"
            )));
        }
        Ok(Target {
            name,
            base_url: url.trim_end_matches('/').to_string(),
            key: None,
        })
    }

    /// The Messages endpoint of this target.
    pub fn messages_url(&self) -> String {
        format!("{}/v1/messages", self.base_url)
    }
}

/// Gives every target its key: the one named for it by `key_for` (`NAME=KEY` pairs), or else
/// `default_key`. A `key_for` entry naming no target is an error, as it is surely a typo.
pub fn assign_keys(
    targets: &mut [Target],
    default_key: Option<&str>,
    key_for: &[(String, String)],
) -> Result<(), ParseError> {
    for (name, _) in key_for {
        if !targets.iter().any(|t| &t.name == name) {
            return Err(ParseError(format!("--key-for names no target: {name}")));
        }
    }
    for target in targets.iter_mut() {
        target.key = key_for
            .iter()
            .rev()
            .find(|(name, _)| name == &target.name)
            .map(|(_, key)| key.clone())
            .or_else(|| default_key.map(str::to_string));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("tollgate=http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.name, "tollgate");
        assert_eq!(t.messages_url(), "http://127.0.0.1:8080/v1/messages");
        assert!(Target::parse("nourl").is_err());
        assert!(Target::parse("x=ftp://a").is_err());
        assert!(Target::parse("=http://a").is_err());
    }

    #[test]
    fn assigns_keys() {
        let mut targets = vec![
            Target::parse("direct=http://a").unwrap(),
            Target::parse("tollgate=http://b").unwrap(),
        ];
        let key_for = vec![("tollgate".to_string(), "tg-key".to_string())];
        assign_keys(&mut targets, Some("k"), &key_for).unwrap();
        assert_eq!(targets[0].key.as_deref(), Some("k"));
        assert_eq!(targets[1].key.as_deref(), Some("tg-key"));
        let bad = vec![("nope".to_string(), "x".to_string())];
        assert!(assign_keys(&mut targets, None, &bad).is_err());
    }
}
