//! The gateway's fixed settings ([`Config`]) and the behaviour knobs a test can change at
//! runtime ([`Knobs`], [`KnobsPatch`]).

use serde::{Deserialize, Serialize};

/// Default merchant id (`pid`).
pub const DEFAULT_PID: &str = "1001";
/// Default merchant key.
pub const DEFAULT_KEY: &str = "mock-epay-merchant-key";

/// What the gateway is: the one merchant it knows, and what it calls itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The merchant id (`pid`) the gateway accepts.
    pub pid: String,
    /// The merchant key that signs every request and notify.
    pub key: String,
    /// The base URL the gateway names in its pages (form actions), for example when it sits
    /// behind a reverse proxy. `None` uses `http://<bound address>`.
    pub public_url: Option<String>,
    /// The initial knobs; `PUT /knobs` or [`crate::MockEpay::set_knobs`] change them later.
    pub knobs: Knobs,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pid: DEFAULT_PID.to_owned(),
            key: DEFAULT_KEY.to_owned(),
            public_url: None,
            knobs: Knobs::default(),
        }
    }
}

impl Config {
    /// Checks the fields that can be wrong, naming the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if self.pid.is_empty() {
            return Err("pid: must not be empty".to_owned());
        }
        if self.key.is_empty() {
            return Err("key: must not be empty".to_owned());
        }
        if let Some(url) = &self.public_url {
            if !is_http_url(url) {
                return Err(format!("public_url: {url:?} is not an http(s) URL"));
            }
        }
        self.knobs.validate()
    }
}

/// How the gateway misbehaves, if at all. Read when an order is paid: a payment's notify
/// follows the knobs of that moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Never send the notify (a lost callback); the payment is still recorded, so `api.php`
    /// reports the order paid.
    pub drop_notify: bool,
    /// Wait this long after the payment before the first notify.
    pub notify_delay_ms: u64,
    /// Send the first notify this many times at once (each copy retries on its own).
    pub duplicate_notify: u32,
    /// Corrupt the notify (and, with `tamper_query`, the money `api.php` reports).
    pub tamper: Tamper,
    /// With `tamper: money`, `api.php` reports the tampered amount too (a gateway lying
    /// consistently); otherwise `api.php` always tells the truth.
    pub tamper_query: bool,
    /// GET with the parameters in the query string, or POST them as a form.
    pub notify_method: NotifyMethod,
    /// Attempts per notify in total (first send included) until the merchant answers
    /// `success`.
    pub notify_attempts: u32,
    /// Pause between two attempts of one notify.
    pub notify_retry_ms: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            drop_notify: false,
            notify_delay_ms: 0,
            duplicate_notify: 1,
            tamper: Tamper::None,
            tamper_query: false,
            notify_method: NotifyMethod::Get,
            notify_attempts: 5,
            notify_retry_ms: 1000,
        }
    }
}

impl Knobs {
    /// `duplicate_notify` and `notify_attempts` must be at least 1 (use `drop_notify` for
    /// none).
    pub fn validate(&self) -> Result<(), String> {
        if self.duplicate_notify == 0 {
            return Err("duplicate_notify: must be at least 1 (use drop_notify for none)".into());
        }
        if self.notify_attempts == 0 {
            return Err("notify_attempts: must be at least 1 (use drop_notify for none)".into());
        }
        Ok(())
    }

    /// These knobs with the fields `patch` names replaced.
    pub fn patched(&self, patch: &KnobsPatch) -> Knobs {
        Knobs {
            drop_notify: patch.drop_notify.unwrap_or(self.drop_notify),
            notify_delay_ms: patch.notify_delay_ms.unwrap_or(self.notify_delay_ms),
            duplicate_notify: patch.duplicate_notify.unwrap_or(self.duplicate_notify),
            tamper: patch.tamper.unwrap_or(self.tamper),
            tamper_query: patch.tamper_query.unwrap_or(self.tamper_query),
            notify_method: patch.notify_method.unwrap_or(self.notify_method),
            notify_attempts: patch.notify_attempts.unwrap_or(self.notify_attempts),
            notify_retry_ms: patch.notify_retry_ms.unwrap_or(self.notify_retry_ms),
        }
    }
}

/// The body of `PUT /knobs`: every field optional, unknown fields refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnobsPatch {
    pub drop_notify: Option<bool>,
    pub notify_delay_ms: Option<u64>,
    pub duplicate_notify: Option<u32>,
    pub tamper: Option<Tamper>,
    pub tamper_query: Option<bool>,
    pub notify_method: Option<NotifyMethod>,
    pub notify_attempts: Option<u32>,
    pub notify_retry_ms: Option<u64>,
}

/// How the notify is corrupted. Every variant but `sign` re-signs correctly, so the notify
/// verifies and only a merchant that checks the content notices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// An honest notify.
    #[default]
    None,
    /// `money` is 0.01 more than the order's amount.
    Money,
    /// One hex character of `sign` is changed: the signature does not verify.
    Sign,
    /// `pid` names another merchant.
    Pid,
    /// `trade_status` is `TRADE_CLOSED`.
    Status,
    /// `out_trade_no` is a random id of no order.
    #[value(name = "out_trade_no", alias = "out-trade-no")]
    OutTradeNo,
}

/// How the notify is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum NotifyMethod {
    /// `GET notify_url?<params>` (what most EPay gateways do).
    #[default]
    Get,
    /// `POST notify_url` with an `application/x-www-form-urlencoded` body.
    Post,
}

pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    matches!(rest, Some(rest) if !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let patch: KnobsPatch =
            serde_json::from_str(r#"{"tamper":"out_trade_no","notify_retry_ms":5}"#).unwrap();
        let knobs = Knobs::default().patched(&patch);
        assert_eq!(knobs.tamper, Tamper::OutTradeNo);
        assert_eq!(knobs.notify_retry_ms, 5);
        assert_eq!(knobs.notify_attempts, Knobs::default().notify_attempts);
        assert!(serde_json::from_str::<KnobsPatch>(r#"{"tamperr":"money"}"#).is_err());
    }

    #[test]
    fn zero_attempts_or_copies_are_refused() {
        let knobs = Knobs {
            notify_attempts: 0,
            ..Knobs::default()
        };
        assert!(knobs.validate().unwrap_err().starts_with("notify_attempts"));
        let knobs = Knobs {
            duplicate_notify: 0,
            ..Knobs::default()
        };
        assert!(knobs
            .validate()
            .unwrap_err()
            .starts_with("duplicate_notify"));
    }
}
