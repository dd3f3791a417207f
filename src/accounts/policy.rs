//! What one API key may do beyond what its account may: the models it may call, the addresses
//! it may call from, when it stops working, how much it may spend, and how fast it may go.
//!
//! A policy is checked once, when the key is created ([`KeyPolicyInput::validate`]), and then
//! held in memory beside the key's digest, so the request path enforces it without a database
//! round trip.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::limits::AccountLimits;

/// The longest model id a policy may name.
const MAX_MODEL_ID_CHARS: usize = 100;
/// How many models or networks one list may hold: enough for any real allowlist, and a bound
/// on the linear scan the request path does over it.
const MAX_LIST_ENTRIES: usize = 100;
/// Money has at most this many fractional digits in a cap: a micro-dollar.
const MAX_CAP_DECIMALS: u32 = 6;

/// The optional policy fields of a key-creation request, as the client sent them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct KeyPolicyInput {
    pub models: Option<Vec<String>>,
    pub allowed_ips: Option<Vec<String>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub daily_spend_usd: Option<Decimal>,
    pub total_spend_usd: Option<Decimal>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// A policy input refused: the field to blame and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct PolicyError {
    pub field: &'static str,
    pub problem: String,
}

fn refuse(field: &'static str, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        field,
        problem: problem.into(),
    }
}

/// A checked policy. `None` and `0` mean "no restriction beyond the account's". Its schema
/// is part of a key as the APIs show it (docs/adr/0020-openapi-generated-with-utoipa.md).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyPolicy {
    /// The model ids the key may call; `None` allows every model of the rate card.
    pub models: Option<Vec<String>>,
    /// The networks the key may be used from; `None` allows any address.
    #[serde(serialize_with = "networks_as_strings")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Vec<IpNet>>,
    /// From this instant on the key is refused as expired.
    pub expires_at: Option<DateTime<Utc>>,
    /// Most the key may spend per UTC day.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub daily_spend_usd: Option<Decimal>,
    /// Most the key may spend over its life.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>)]
    pub total_spend_usd: Option<Decimal>,
    /// 0 inherits the account's limit.
    pub requests_per_minute: u32,
    /// 0 inherits the account's limit.
    pub tokens_per_minute: u32,
    /// 0 inherits the account's limit.
    pub max_concurrent: u32,
}

fn networks_as_strings<S: serde::Serializer>(
    networks: &Option<Vec<IpNet>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match networks {
        Some(networks) => serializer.collect_seq(networks.iter().map(ToString::to_string)),
        None => serializer.serialize_none(),
    }
}

impl KeyPolicyInput {
    /// Checks every field against `now` and the account's `limits`. `canonical` maps a model id
    /// to the rate card's canonical id, so an alias and its model match; an id the card does
    /// not know is refused, since a key allowed only models it can never call is a typing
    /// error, not a policy.
    pub fn validate(
        self,
        now: DateTime<Utc>,
        limits: &AccountLimits,
        canonical: impl Fn(&str) -> Option<String>,
    ) -> Result<KeyPolicy, PolicyError> {
        let models = match self.models {
            None => None,
            Some(models) => {
                check_list_size("models", models.len())?;
                let mut checked = Vec::with_capacity(models.len());
                for model in models {
                    let model = model.trim();
                    if model.is_empty() || model.chars().count() > MAX_MODEL_ID_CHARS {
                        return Err(refuse(
                            "models",
                            format!("each model id has 1 to {MAX_MODEL_ID_CHARS} characters"),
                        ));
                    }
                    let id = canonical(model).ok_or_else(|| {
                        refuse(
                            "models",
                            format!("`{model}` is not a model on the rate card"),
                        )
                    })?;
                    if !checked.contains(&id) {
                        checked.push(id);
                    }
                }
                Some(checked)
            }
        };
        let allowed_ips = match self.allowed_ips {
            None => None,
            Some(entries) => {
                check_list_size("allowed_ips", entries.len())?;
                let mut networks = Vec::with_capacity(entries.len());
                for entry in &entries {
                    networks.push(parse_network(entry).ok_or_else(|| {
                        refuse(
                            "allowed_ips",
                            format!("`{entry}` is not an IP address or a CIDR network"),
                        )
                    })?);
                }
                Some(networks)
            }
        };
        if let Some(expires_at) = self.expires_at {
            if expires_at <= now {
                return Err(refuse("expires_at", "must be in the future"));
            }
        }
        let daily_spend_usd = check_cap("daily_spend_usd", self.daily_spend_usd)?;
        let total_spend_usd = check_cap("total_spend_usd", self.total_spend_usd)?;
        Ok(KeyPolicy {
            models,
            allowed_ips,
            expires_at: self.expires_at,
            daily_spend_usd,
            total_spend_usd,
            requests_per_minute: check_limit(
                "requests_per_minute",
                self.requests_per_minute,
                limits.requests_per_minute,
            )?,
            tokens_per_minute: check_limit(
                "tokens_per_minute",
                self.tokens_per_minute,
                limits.tokens_per_minute,
            )?,
            max_concurrent: check_limit(
                "max_concurrent",
                self.max_concurrent,
                limits.max_concurrent,
            )?,
        })
    }
}

fn check_list_size(field: &'static str, len: usize) -> Result<(), PolicyError> {
    if len == 0 {
        // An empty allowlist would allow nothing; leaving the field out allows everything.
        return Err(refuse(
            field,
            "must list at least one entry (leave it out to allow all)",
        ));
    }
    if len > MAX_LIST_ENTRIES {
        return Err(refuse(field, format!("at most {MAX_LIST_ENTRIES} entries")));
    }
    Ok(())
}

/// An address (a network of one) or a CIDR network. Host bits under the mask are refused,
/// since `10.1.2.3/8` more likely hides a typing error than means `10.0.0.0/8`.
fn parse_network(raw: &str) -> Option<IpNet> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    let network = raw.parse::<IpNet>().ok()?;
    (network.trunc() == network).then_some(network)
}

fn check_cap(field: &'static str, cap: Option<Decimal>) -> Result<Option<Decimal>, PolicyError> {
    match cap {
        None => Ok(None),
        Some(cap) if cap <= Decimal::ZERO => Err(refuse(field, "must be greater than 0")),
        Some(cap) if cap.normalize().scale() > MAX_CAP_DECIMALS => Err(refuse(
            field,
            format!("at most {MAX_CAP_DECIMALS} decimal places"),
        )),
        Some(cap) => Ok(Some(cap.normalize())),
    }
}

/// A per-key limit: 0 or absent inherits the account's; otherwise it may only be tighter than
/// the account's, which bounds the key anyway. An account limit of 0 is unlimited, so any key
/// value is tighter.
fn check_limit(field: &'static str, key: Option<u32>, account: u32) -> Result<u32, PolicyError> {
    let key = key.unwrap_or(0);
    // Stored as a Postgres INTEGER.
    if key > i32::MAX as u32 {
        return Err(refuse(field, format!("at most {}", i32::MAX)));
    }
    if key != 0 && account != 0 && key > account {
        return Err(refuse(
            field,
            format!("must not exceed the account's limit of {account} (0 inherits it)"),
        ));
    }
    Ok(key)
}

impl KeyPolicy {
    /// Whether the policy restricts nothing, so the key needs no policy in memory.
    pub fn is_open(&self) -> bool {
        *self == KeyPolicy::default()
    }

    /// Whether the key may call `model` (the rate card's canonical id).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|allowed| allowed == model))
    }

    /// Whether the key may be used from `client`. An IPv4 address mapped into IPv6 is judged
    /// as the IPv4 address it is.
    pub fn allows_address(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        self.allowed_ips
            .as_ref()
            .is_none_or(|networks| networks.iter().any(|network| network.contains(&client)))
    }

    /// The key's own rate limits, if it sets any (0 in a field inherits the account's).
    pub fn limits(&self) -> Option<AccountLimits> {
        let limits = AccountLimits {
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            max_concurrent: self.max_concurrent,
        };
        (limits.requests_per_minute | limits.tokens_per_minute | limits.max_concurrent != 0)
            .then_some(limits)
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn limits(rpm: u32) -> AccountLimits {
        AccountLimits {
            requests_per_minute: rpm,
            tokens_per_minute: 1000,
            max_concurrent: 4,
        }
    }

    /// A rate card of two models, `m` (alias `m-alias`) and `other`.
    fn card(id: &str) -> Option<String> {
        match id {
            "m" | "m-alias" => Some("m".into()),
            "other" => Some("other".into()),
            _ => None,
        }
    }

    fn check(input: KeyPolicyInput) -> Result<KeyPolicy, PolicyError> {
        input.validate(Utc::now(), &limits(60), card)
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let cases = [
            (
                KeyPolicyInput {
                    allowed_ips: Some(vec!["10.0.0.0/33".into()]),
                    ..Default::default()
                },
                "allowed_ips",
            ),
            (
                KeyPolicyInput {
                    allowed_ips: Some(vec!["10.1.0.0/8".into()]),
                    ..Default::default()
                },
                "allowed_ips",
            ),
            (
                KeyPolicyInput {
                    models: Some(vec![]),
                    ..Default::default()
                },
                "models",
            ),
            (
                KeyPolicyInput {
                    models: Some(vec!["x".repeat(101)]),
                    ..Default::default()
                },
                "models",
            ),
            (
                KeyPolicyInput {
                    models: Some(vec!["m".into(), "no-such-model".into()]),
                    ..Default::default()
                },
                "models",
            ),
            (
                KeyPolicyInput {
                    expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                    ..Default::default()
                },
                "expires_at",
            ),
            (
                KeyPolicyInput {
                    daily_spend_usd: Some(Decimal::ZERO),
                    ..Default::default()
                },
                "daily_spend_usd",
            ),
            (
                KeyPolicyInput {
                    total_spend_usd: Some(Decimal::from_str("0.0000001").unwrap()),
                    ..Default::default()
                },
                "total_spend_usd",
            ),
            (
                KeyPolicyInput {
                    requests_per_minute: Some(61),
                    ..Default::default()
                },
                "requests_per_minute",
            ),
            (
                KeyPolicyInput {
                    max_concurrent: Some(5),
                    ..Default::default()
                },
                "max_concurrent",
            ),
        ];
        for (input, field) in cases {
            assert_eq!(check(input).unwrap_err().field, field);
        }
    }

    #[test]
    fn limits_inherit_at_zero_and_anything_fits_an_unlimited_account() {
        let tight = KeyPolicyInput {
            requests_per_minute: Some(0),
            tokens_per_minute: Some(1000),
            ..Default::default()
        };
        let policy = check(tight).unwrap();
        assert_eq!(policy.requests_per_minute, 0);
        assert_eq!(policy.tokens_per_minute, 1000);
        assert!(!policy.is_open());
        let big = KeyPolicyInput {
            requests_per_minute: Some(1_000_000),
            ..Default::default()
        };
        assert!(big.validate(Utc::now(), &limits(0), card).is_ok());
        let past_the_column = KeyPolicyInput {
            requests_per_minute: Some(u32::MAX),
            ..Default::default()
        };
        assert_eq!(
            past_the_column
                .validate(Utc::now(), &limits(0), card)
                .unwrap_err()
                .field,
            "requests_per_minute"
        );
    }

    #[test]
    fn addresses_and_models_are_matched() {
        let policy = check(KeyPolicyInput {
            models: Some(vec!["m-alias".into(), "other".into()]),
            allowed_ips: Some(vec!["10.0.0.0/8".into(), "2001:db8::1".into()]),
            ..Default::default()
        })
        .unwrap();
        assert!(policy.allows_address("10.2.3.4".parse().unwrap()));
        assert!(policy.allows_address("::ffff:10.2.3.4".parse().unwrap()));
        assert!(policy.allows_address("2001:db8::1".parse().unwrap()));
        assert!(!policy.allows_address("127.0.0.1".parse().unwrap()));
        assert!(!policy.allows_address("2001:db8::2".parse().unwrap()));
        assert!(policy.allows_model("other"));
        assert!(!policy.allows_model("third"));
        let canonical = check(KeyPolicyInput {
            models: Some(vec!["m-alias".into()]),
            ..Default::default()
        })
        .unwrap();
        assert!(canonical.allows_model("m"));
        assert!(KeyPolicy::default().allows_model("anything"));
        assert!(KeyPolicy::default().is_open());
    }
}
