//! A load scenario: what a YAML scenario file says, how it is checked, and the library entry
//! point [`run_scenario`] that provisions tenants, drives the load, reconciles the books and
//! builds the [`ScenarioReport`].
//!
//! Every section refuses unknown keys, and [`Scenario::validate`] refuses values that cannot
//! work, naming the field (`traffic.stream_share: must be between 0 and 1`). Nothing touches
//! the network before validation passes.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_actors::pricing::RateCard;

use mock_anthropic::MockConfig;

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports (defaults to the file name).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds the arrival schedule and the traffic mix: same seed, same requests.
    #[serde(default)]
    pub seed: u64,
    /// Measured seconds, after the warmup.
    pub duration_secs: f64,
    /// Seconds of load before the measured window; their requests are billed and reconciled,
    /// but not measured.
    #[serde(default)]
    pub warmup_secs: f64,
    /// A request not finished after this long counts as timed out.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    pub arrival: Arrival,
    pub traffic: Traffic,
    pub tenants: Tenants,
    #[serde(default)]
    pub abusers: Option<Abusers>,
    #[serde(default)]
    pub expect: Expect,
    /// Compare tollgate's books with what the clients received (needs a database URL).
    #[serde(default = "yes")]
    pub reconcile: bool,
    /// Replay the same workload straight against the mock when its URL is given.
    #[serde(default = "yes")]
    pub baseline: bool,
    /// The simulated upstream's settings, for starting the mock and predicting the usage of
    /// requests the client dropped on purpose.
    #[serde(default)]
    pub upstream: MockConfig,
}

fn default_timeout() -> f64 {
    60.0
}

fn yes() -> bool {
    true
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopKind {
    /// Requests are sent at scheduled times whatever the answers; latency counts from the
    /// intended send time.
    Open,
    /// `concurrency` clients each send their next request as soon as one ends.
    Closed,
}

/// Inter-arrival times of an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    Constant,
    Poisson,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrival {
    pub mode: LoopKind,
    /// Open loop: well-behaved requests per second, over all keys.
    #[serde(default)]
    pub rate: f64,
    #[serde(default = "default_distribution")]
    pub distribution: Distribution,
    /// Closed loop: concurrent clients.
    #[serde(default)]
    pub concurrency: usize,
    /// Open loop: requests in flight at most; a send that has to wait for a slot is late.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Open loop: the rate climbs linearly from zero to `rate` over the warm-up instead of
    /// starting at full rate. A step from nothing to thousands of requests a second opens a
    /// new connection for nearly every request until the pools of the client and of the
    /// proxy catch up, which measures a connection storm rather than the steady state. The
    /// measured window is at the full rate either way.
    #[serde(default = "yes")]
    pub ramp_up: bool,
}

fn default_distribution() -> Distribution {
    Distribution::Poisson
}

fn default_max_in_flight() -> usize {
    10_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelWeight {
    pub name: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// Uniform between `min` and `max` bytes, inclusive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    pub min: usize,
    pub max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Share of requests that ask for a stream.
    pub stream_share: f64,
    pub models: Vec<ModelWeight>,
    /// Size of the user message.
    pub prompt_bytes: ByteRange,
    pub max_tokens: u64,
    /// Share of all requests that are streams the client drops after
    /// `disconnect_after_chunks` body chunks; at most `stream_share`.
    #[serde(default)]
    pub disconnect_share: f64,
    #[serde(default = "default_disconnect_after")]
    pub disconnect_after_chunks: u32,
}

fn default_disconnect_after() -> u32 {
    3
}

/// Per-account limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub requests_per_minute: u32,
    #[serde(default)]
    pub tokens_per_minute: u32,
    #[serde(default)]
    pub max_concurrent: u32,
}

/// The well-behaved tenants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenants {
    pub accounts: usize,
    #[serde(default = "one_usize")]
    pub keys_per_account: usize,
    /// Credited to each account before the run, in USD (a decimal string).
    pub balance_usd: String,
    #[serde(default)]
    pub limits: Limits,
}

fn one_usize() -> usize {
    1
}

/// Tenants whose keys send `multiplier` times their account's `requests_per_minute`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abusers {
    pub accounts: usize,
    #[serde(default = "one_usize")]
    pub keys_per_account: usize,
    pub balance_usd: String,
    /// The limit their accounts get (> 0).
    pub requests_per_minute: u32,
    /// Each abusive key sends this many times `requests_per_minute`, open loop.
    pub multiplier: f64,
}

/// Targets the run must meet to pass; a `null` target is not checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Largest share of measured well-behaved requests that may fail (any status but 200,
    /// network errors, cuts, stream errors, timeouts; drops on purpose do not count).
    #[serde(default = "zero_share")]
    pub max_error_share: Option<f64>,
    /// Most 429 answers well-behaved keys may see (measured window and warmup).
    #[serde(default = "zero_count")]
    pub max_well_behaved_429: Option<u64>,
    /// Smallest share of abusive requests that must be refused with 429.
    #[serde(default)]
    pub min_abuser_429_share: Option<f64>,
    /// Largest p99 of well-behaved total latency, in ms.
    #[serde(default)]
    pub max_p99_ms: Option<f64>,
    /// Largest share of open-loop sends that left late (the generator could not keep up).
    #[serde(default)]
    pub max_late_share: Option<f64>,
}

fn zero_share() -> Option<f64> {
    Some(0.0)
}

fn zero_count() -> Option<u64> {
    Some(0)
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            max_error_share: zero_share(),
            max_well_behaved_429: zero_count(),
            min_abuser_429_share: None,
            max_p99_ms: None,
            max_late_share: None,
        }
    }
}

/// A scenario that cannot run, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

fn bad(field: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The largest prompt a scenario may ask for.
const MAX_PROMPT_BYTES: usize = 16 << 20;
/// The longest duration, warmup or timeout: one day.
const MAX_SECS: f64 = 86_400.0;
/// The most requests one schedule (well-behaved, or abusive) may hold.
const MAX_SCHEDULED: u64 = 10_000_000;
/// The most requests in flight of an open loop.
const MAX_IN_FLIGHT: usize = 1_000_000;
/// The most clients of a closed loop.
const MAX_CONCURRENCY: usize = 100_000;
/// The most keys of one section (accounts × keys per account).
const MAX_KEYS: usize = 100_000;

fn check_at_most(field: &str, value: f64, max: f64) -> Result<(), ScenarioError> {
    if value.is_finite() && value <= max {
        Ok(())
    } else {
        Err(bad(field, format!("must be at most {max}")))
    }
}

/// `accounts × keys_per_account`, at most [`MAX_KEYS`].
fn check_keys(
    field: &str,
    accounts: usize,
    keys_per_account: usize,
) -> Result<usize, ScenarioError> {
    accounts
        .checked_mul(keys_per_account)
        .filter(|keys| *keys <= MAX_KEYS)
        .ok_or_else(|| {
            bad(
                field,
                format!("accounts × keys_per_account must be at most {MAX_KEYS}"),
            )
        })
}

fn check_share(field: &str, value: f64) -> Result<(), ScenarioError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(bad(field, "must be between 0 and 1"))
    }
}

fn check_positive(field: &str, value: f64) -> Result<(), ScenarioError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(bad(field, "must be a positive number"))
    }
}

fn check_balance(field: &str, value: &str) -> Result<Decimal, ScenarioError> {
    let amount = Decimal::from_str(value.trim())
        .map_err(|_| bad(field, format!("{value:?} is not a decimal number of USD")))?;
    if amount.is_sign_negative() {
        return Err(bad(field, "must not be negative"));
    }
    Ok(amount)
}

/// The keys of `upstream` that [`MockConfig`] does not know: it does not refuse unknown keys
/// itself, so they are found by comparing with what it serializes back.
fn unknown_upstream_keys(raw: &serde_yaml::Value) -> Result<Vec<String>, ScenarioError> {
    let Some(map) = raw.as_mapping() else {
        return Ok(Vec::new());
    };
    let known: MockConfig = match serde_yaml::from_value(raw.clone()) {
        Ok(known) => known,
        Err(e) => {
            let text = e.to_string();
            if let Some(rest) = text.strip_prefix("unknown field `") {
                if let Some((name, _)) = rest.split_once('`') {
                    return Ok(vec![name.to_string()]);
                }
            }
            return Err(bad("upstream", text));
        }
    };
    let back = serde_yaml::to_value(&known).map_err(|e| bad("upstream", e.to_string()))?;
    let known_keys: BTreeSet<String> = back
        .as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(map
        .keys()
        .filter_map(|k| k.as_str())
        .filter(|k| !known_keys.contains(*k))
        .map(str::to_string)
        .collect())
}

/// `message` without the path serde_yaml puts in front of it (`traffic: unknown field …`),
/// when that path is `path` or one of its parents: [`ScenarioError`] names the field itself.
fn strip_path<'a>(message: &'a str, path: &str) -> &'a str {
    let Some((head, rest)) = message.split_once(": ") else {
        return message;
    };
    let parent = path
        .strip_prefix(head)
        .is_some_and(|tail| tail.is_empty() || tail.starts_with(['.', '[']));
    if parent {
        rest
    } else {
        message
    }
}

impl Scenario {
    /// Parses and validates a scenario from YAML text.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| bad("", format!("invalid YAML: {e}")))?;
        if let Some(upstream) = raw.get("upstream") {
            if let Some(key) = unknown_upstream_keys(upstream)?.first() {
                return Err(bad(&format!("upstream.{key}"), "unknown field"));
            }
        }
        let scenario: Scenario = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(text),
        )
        .map_err(|e| {
            let path = e.path().to_string();
            let text = e.into_inner().to_string();
            if path.is_empty() || path == "." {
                bad("", format!("invalid scenario: {text}"))
            } else {
                bad(&path, strip_path(&text, &path))
            }
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file; its name defaults to the file stem.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("", format!("{}: {e}", path.display())))?;
        let mut scenario = Scenario::from_yaml(&text)
            .map_err(|e| bad(&e.field, format!("{} ({})", e.message, path.display())))?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        Ok(scenario)
    }

    /// Refuses values that cannot work, naming the field.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        check_positive("duration_secs", self.duration_secs)?;
        check_at_most("duration_secs", self.duration_secs, MAX_SECS)?;
        if !(self.warmup_secs.is_finite() && self.warmup_secs >= 0.0) {
            return Err(bad("warmup_secs", "must be zero or more"));
        }
        check_at_most("warmup_secs", self.warmup_secs, MAX_SECS)?;
        check_positive("timeout_secs", self.timeout_secs)?;
        check_at_most("timeout_secs", self.timeout_secs, MAX_SECS)?;
        let span = self.warmup_secs + self.duration_secs;

        match self.arrival.mode {
            LoopKind::Open => {
                check_positive("arrival.rate", self.arrival.rate)?;
                let scheduled = self.arrival.rate * span;
                if scheduled > MAX_SCHEDULED as f64 {
                    return Err(bad(
                        "arrival.rate",
                        format!(
                            "{} req/s over {span} s is about {scheduled:.0} requests, more than \
                             {MAX_SCHEDULED}",
                            self.arrival.rate
                        ),
                    ));
                }
            }
            LoopKind::Closed => {
                if self.arrival.concurrency == 0 {
                    return Err(bad(
                        "arrival.concurrency",
                        "must be at least 1 in a closed loop",
                    ));
                }
            }
        }
        if self.arrival.rate < 0.0 || !self.arrival.rate.is_finite() {
            return Err(bad("arrival.rate", "must be a positive number"));
        }
        if self.arrival.concurrency > MAX_CONCURRENCY {
            return Err(bad(
                "arrival.concurrency",
                format!("must be at most {MAX_CONCURRENCY}"),
            ));
        }
        if self.arrival.max_in_flight > MAX_IN_FLIGHT {
            return Err(bad(
                "arrival.max_in_flight",
                format!("must be at most {MAX_IN_FLIGHT}"),
            ));
        }
        if self.arrival.max_in_flight == 0 {
            return Err(bad("arrival.max_in_flight", "must be at least 1"));
        }

        let t = &self.traffic;
        check_share("traffic.stream_share", t.stream_share)?;
        check_share("traffic.disconnect_share", t.disconnect_share)?;
        if t.disconnect_share > t.stream_share {
            return Err(bad(
                "traffic.disconnect_share",
                "must not exceed traffic.stream_share (only streams are dropped mid-way)",
            ));
        }
        if t.disconnect_share > 0.0 && t.disconnect_after_chunks == 0 {
            return Err(bad("traffic.disconnect_after_chunks", "must be at least 1"));
        }
        if t.models.is_empty() {
            return Err(bad("traffic.models", "must name at least one model"));
        }
        let card = RateCard::builtin().map_err(|error| {
            bad(
                "traffic.models",
                format!("tollgate's builtin rate card cannot be read: {error}"),
            )
        })?;
        for (i, model) in t.models.iter().enumerate() {
            if model.name.trim().is_empty() {
                return Err(bad(
                    &format!("traffic.models[{i}].name"),
                    "must not be empty",
                ));
            }
            if card.model(&model.name).is_none() {
                return Err(bad(
                    &format!("traffic.models[{i}].name"),
                    format!(
                        "{:?} is not a model of tollgate's builtin rate card",
                        model.name
                    ),
                ));
            }
            if !(model.weight.is_finite() && model.weight >= 0.0) {
                return Err(bad(
                    &format!("traffic.models[{i}].weight"),
                    "must be zero or more",
                ));
            }
        }
        if t.models.iter().map(|m| m.weight).sum::<f64>() <= 0.0 {
            return Err(bad("traffic.models", "the weights must not all be zero"));
        }
        if t.prompt_bytes.min > t.prompt_bytes.max {
            return Err(bad(
                "traffic.prompt_bytes.min",
                format!(
                    "{} is more than traffic.prompt_bytes.max ({})",
                    t.prompt_bytes.min, t.prompt_bytes.max
                ),
            ));
        }
        if t.prompt_bytes.max > MAX_PROMPT_BYTES {
            return Err(bad(
                "traffic.prompt_bytes.max",
                format!("must be at most {MAX_PROMPT_BYTES}"),
            ));
        }
        if t.max_tokens == 0 {
            return Err(bad("traffic.max_tokens", "must be at least 1"));
        }

        if self.tenants.accounts == 0 {
            return Err(bad("tenants.accounts", "must be at least 1"));
        }
        if self.tenants.keys_per_account == 0 {
            return Err(bad("tenants.keys_per_account", "must be at least 1"));
        }
        check_keys(
            "tenants.keys_per_account",
            self.tenants.accounts,
            self.tenants.keys_per_account,
        )?;
        check_balance("tenants.balance_usd", &self.tenants.balance_usd)?;

        if let Some(abusers) = &self.abusers {
            if abusers.keys_per_account == 0 {
                return Err(bad("abusers.keys_per_account", "must be at least 1"));
            }
            let keys = check_keys(
                "abusers.keys_per_account",
                abusers.accounts,
                abusers.keys_per_account,
            )?;
            check_balance("abusers.balance_usd", &abusers.balance_usd)?;
            if abusers.requests_per_minute == 0 {
                return Err(bad(
                    "abusers.requests_per_minute",
                    "must be at least 1 (abusers exceed a limit)",
                ));
            }
            check_positive("abusers.multiplier", abusers.multiplier)?;
            let scheduled = keys as f64 * f64::from(abusers.requests_per_minute) / 60.0
                * abusers.multiplier
                * span;
            if !scheduled.is_finite() || scheduled > MAX_SCHEDULED as f64 {
                return Err(bad(
                    "abusers.multiplier",
                    format!(
                        "{keys} abusive key(s) at {} × {} req/min over {span} s is about \
                         {scheduled:.0} requests, more than {MAX_SCHEDULED}",
                        abusers.multiplier, abusers.requests_per_minute
                    ),
                ));
            }
        }

        let e = &self.expect;
        for (field, share) in [
            ("expect.max_error_share", e.max_error_share),
            ("expect.min_abuser_429_share", e.min_abuser_429_share),
            ("expect.max_late_share", e.max_late_share),
        ] {
            if let Some(share) = share {
                check_share(field, share)?;
            }
        }
        if let Some(p99) = e.max_p99_ms {
            check_positive("expect.max_p99_ms", p99)?;
        }
        self.upstream
            .validate()
            .map_err(|e| bad("", format!("upstream.{e}")))?;
        Ok(())
    }

    /// The warmup ([`Duration::ZERO`] if `warmup_secs` is not valid; see [`Self::validate`]).
    pub fn warmup(&self) -> Duration {
        Duration::try_from_secs_f64(self.warmup_secs).unwrap_or_default()
    }

    /// How long an open loop's rate climbs before it is at full rate: the warm-up when
    /// `arrival.ramp_up` is on, zero otherwise (and for a closed loop).
    pub fn ramp(&self) -> Duration {
        if self.arrival.mode == LoopKind::Open && self.arrival.ramp_up {
            self.warmup()
        } else {
            Duration::ZERO
        }
    }

    /// The measured window ([`Duration::ZERO`] if `duration_secs` is not valid).
    pub fn duration(&self) -> Duration {
        Duration::try_from_secs_f64(self.duration_secs).unwrap_or_default()
    }

    /// The request timeout ([`Duration::ZERO`] if `timeout_secs` is not valid).
    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout_secs).unwrap_or_default()
    }

    /// Active abusers, if any.
    pub fn abusers(&self) -> Option<&Abusers> {
        self.abusers.as_ref().filter(|a| a.accounts > 0)
    }

    /// The mock's command-line flags for `upstream` (`--ttft-ms 5` …), one argument a line:
    /// how `run-scenario.sh` starts the mock with the scenario's knobs.
    pub fn mock_args(&self) -> anyhow::Result<Vec<String>> {
        let value = serde_json::to_value(&self.upstream)?;
        let mut args = Vec::new();
        if let Some(map) = value.as_object() {
            for (key, value) in map {
                let text = match value {
                    serde_json::Value::Null => continue,
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                args.push(format!("--{}", key.replace('_', "-")));
                args.push(text);
            }
        }
        Ok(args)
    }
}

/// Where the scenario runs.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// tollgate's base URL.
    pub tollgate: String,
    pub admin_token: String,
    /// tollgate's database, for reconciliation; `None` skips it.
    pub database_url: Option<String>,
    /// The mock's base URL, for the baseline run; `None` skips it.
    pub direct: Option<String>,
    /// A pass-through hop in front of the mock, measured like the baseline when given.
    pub passthrough: Option<String>,
}

pub use super::drive::run_scenario;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    pub(crate) const SMOKE: &str = r#"
name: t
seed: 7
duration_secs: 2
warmup_secs: 0.5
arrival: { mode: open, rate: 20, distribution: poisson }
traffic:
  stream_share: 0.5
  models: [{ name: claude-sonnet-4-5, weight: 2 }, { name: claude-haiku-4-5 }]
  prompt_bytes: { min: 100, max: 1000 }
  max_tokens: 32
  disconnect_share: 0.1
tenants: { accounts: 2, keys_per_account: 2, balance_usd: "10.5" }
upstream: { output_tokens: 8, seed: 3 }
"#;

    fn with(path: &str, value: &str) -> String {
        // Rewrites one `key: value` of SMOKE, found by its last path segment.
        let key = path.rsplit('.').next().unwrap();
        let mut out = String::new();
        let mut done = false;
        for line in SMOKE.lines() {
            if !done && line.contains(&format!("{key}:")) {
                let at = line.find(&format!("{key}:")).unwrap();
                let rest = &line[at + key.len() + 1..];
                let end = rest
                    .find([',', '}'])
                    .map(|i| at + key.len() + 1 + i)
                    .unwrap_or(line.len());
                out.push_str(&line[..at]);
                out.push_str(&format!("{key}: {value}"));
                out.push_str(&line[end..]);
                done = true;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        assert!(done, "{path} not in SMOKE");
        out
    }

    fn error_of(text: &str) -> String {
        Scenario::from_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_example() {
        let s = Scenario::from_yaml(SMOKE).unwrap();
        assert_eq!(s.arrival.mode, LoopKind::Open);
        assert_eq!(s.traffic.models[1].weight, 1.0);
        assert_eq!(s.upstream.output_tokens, 8);
        assert_eq!(s.expect.max_error_share, Some(0.0));
        assert!(s.reconcile && s.baseline);
        assert_eq!(s.timeout_secs, 60.0);
    }

    #[test]
    fn refuses_impossible_values_naming_the_field() {
        for (path, value, wanted) in [
            (
                "traffic.stream_share",
                "1.5",
                "traffic.stream_share: must be between 0 and 1",
            ),
            (
                "arrival.rate",
                "-3",
                "arrival.rate: must be a positive number",
            ),
            (
                "duration_secs",
                "0",
                "duration_secs: must be a positive number",
            ),
            (
                "traffic.prompt_bytes.min",
                "5000",
                "traffic.prompt_bytes.min: 5000 is more than",
            ),
            (
                "traffic.disconnect_share",
                "0.6",
                "traffic.disconnect_share: must not exceed",
            ),
            (
                "tenants.balance_usd",
                "\"-1\"",
                "tenants.balance_usd: must not be negative",
            ),
            (
                "tenants.balance_usd",
                "\"ten\"",
                "tenants.balance_usd: \"ten\" is not a decimal",
            ),
            (
                "tenants.accounts",
                "0",
                "tenants.accounts: must be at least 1",
            ),
            (
                "traffic.max_tokens",
                "0",
                "traffic.max_tokens: must be at least 1",
            ),
        ] {
            let error = error_of(&with(path, value));
            assert!(error.starts_with(wanted), "{path}={value}: {error}");
        }
    }

    #[test]
    fn refuses_unknown_keys_everywhere() {
        let top = format!("{SMOKE}colour: blue\n");
        assert!(error_of(&top).contains("unknown field `colour`"));
        let nested = SMOKE.replace("max_tokens: 32", "max_tokens: 32\n  max_tokenz: 3");
        assert!(error_of(&nested).starts_with("traffic.max_tokenz: unknown field `max_tokenz`"));
        let model = SMOKE.replace("{ name: claude-haiku-4-5 }", "{ name: x, wieght: 2 }");
        assert!(error_of(&model).starts_with("traffic.models[1].wieght: unknown field"));
        let limits = SMOKE.replace(
            "balance_usd: \"10.5\"",
            "balance_usd: \"1\", limits: { rpm: 3 }",
        );
        assert!(error_of(&limits).starts_with("tenants.limits.rpm: unknown field `rpm`"));
        let upstream = SMOKE.replace("seed: 3 }", "seed: 3, ttft: 4 }");
        assert_eq!(error_of(&upstream), "upstream.ttft: unknown field");
    }

    #[test]
    fn checks_abusers_and_closed_loops() {
        let abusive = format!(
            "{SMOKE}abusers: {{ accounts: 1, balance_usd: \"1\", requests_per_minute: 0, multiplier: 20 }}\n"
        );
        assert!(error_of(&abusive).starts_with("abusers.requests_per_minute: must be at least 1"));
        let closed = SMOKE.replace("mode: open, rate: 20", "mode: closed");
        assert!(error_of(&closed).starts_with("arrival.concurrency: must be at least 1"));
        let ok = SMOKE.replace("mode: open, rate: 20", "mode: closed, concurrency: 4");
        assert!(Scenario::from_yaml(&ok).is_ok());
    }

    #[test]
    fn refuses_values_out_of_bounds() {
        for (path, value, wanted) in [
            (
                "duration_secs",
                "86401",
                "duration_secs: must be at most 86400",
            ),
            (
                "duration_secs",
                ".inf",
                "duration_secs: must be a positive number",
            ),
            (
                "duration_secs",
                ".nan",
                "duration_secs: must be a positive number",
            ),
            ("warmup_secs", "1e9", "warmup_secs: must be at most 86400"),
            ("warmup_secs", ".inf", "warmup_secs: must be zero or more"),
            (
                "arrival.rate",
                ".inf",
                "arrival.rate: must be a positive number",
            ),
            (
                "arrival.rate",
                ".nan",
                "arrival.rate: must be a positive number",
            ),
            (
                "arrival.rate",
                "0",
                "arrival.rate: must be a positive number",
            ),
            (
                "arrival.rate",
                "5000000",
                "arrival.rate: 5000000 req/s over 2.5 s",
            ),
            (
                "tenants.keys_per_account",
                "50001",
                "tenants.keys_per_account: accounts ×",
            ),
        ] {
            let error = error_of(&with(path, value));
            assert!(error.starts_with(wanted), "{path}={value}: {error}");
        }
        let timeout = format!("{SMOKE}timeout_secs: 1e300\n");
        assert!(error_of(&timeout).starts_with("timeout_secs: must be at most 86400"));
        let timeout = format!("{SMOKE}timeout_secs: .inf\n");
        assert!(error_of(&timeout).starts_with("timeout_secs: must be a positive number"));
        let in_flight = SMOKE.replace("distribution: poisson", "max_in_flight: 1000001");
        assert!(error_of(&in_flight).starts_with("arrival.max_in_flight: must be at most"));
        let closed = SMOKE.replace("mode: open, rate: 20", "mode: closed, concurrency: 100001");
        assert!(error_of(&closed).starts_with("arrival.concurrency: must be at most"));
        let keys = SMOKE.replace(
            "accounts: 2, keys_per_account: 2",
            &format!("accounts: {}, keys_per_account: 2", usize::MAX),
        );
        assert!(error_of(&keys).starts_with("tenants.keys_per_account: accounts ×"));
        // Durations of an unvalidated scenario never panic.
        let mut s = Scenario::from_yaml(SMOKE).unwrap();
        s.duration_secs = f64::NAN;
        s.warmup_secs = -1.0;
        s.timeout_secs = f64::INFINITY;
        assert!(s.validate().is_err());
        assert_eq!(s.duration() + s.warmup() + s.timeout(), Duration::ZERO);
    }

    #[test]
    fn bounds_the_abusers_even_without_accounts() {
        let abusers = |fields: &str| format!("{SMOKE}abusers: {{ {fields} }}\n");
        for (fields, wanted) in [
            (
                "accounts: 0, balance_usd: \"1\", requests_per_minute: 0, multiplier: 2",
                "abusers.requests_per_minute: must be at least 1",
            ),
            (
                "accounts: 0, balance_usd: \"x\", requests_per_minute: 1, multiplier: 2",
                "abusers.balance_usd:",
            ),
            (
                "accounts: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: -2",
                "abusers.multiplier: must be a positive number",
            ),
            (
                "accounts: 0, keys_per_account: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2",
                "abusers.keys_per_account: must be at least 1",
            ),
            (
                "accounts: 1000, keys_per_account: 101, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2",
                "abusers.keys_per_account: accounts ×",
            ),
            (
                "accounts: 1, balance_usd: \"1\", requests_per_minute: 4000000000, multiplier: 1e300",
                "abusers.multiplier: 1 abusive key(s)",
            ),
            (
                "accounts: 10, balance_usd: \"1\", requests_per_minute: 1000000, multiplier: 100",
                "abusers.multiplier: 10 abusive key(s)",
            ),
        ] {
            let error = error_of(&abusers(fields));
            assert!(error.starts_with(wanted), "{fields}: {error}");
        }
        let none =
            abusers("accounts: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2");
        assert!(Scenario::from_yaml(&none).is_ok());
    }

    #[test]
    fn refuses_unknown_models() {
        let text = SMOKE.replace("{ name: claude-haiku-4-5 }", "{ name: claude-haiku-9 }");
        assert_eq!(
            error_of(&text),
            "traffic.models[1].name: \"claude-haiku-9\" is not a model of tollgate's builtin \
             rate card"
        );
        let dated = SMOKE.replace("claude-haiku-4-5", "claude-haiku-4-5-20251001");
        assert!(Scenario::from_yaml(&dated).is_ok());
    }

    #[test]
    fn type_errors_name_their_path() {
        let negative = SMOKE.replace("max_tokens: 32", "max_tokens: -8");
        let error = error_of(&negative);
        assert!(
            error.starts_with("traffic.max_tokens: invalid type: integer `-8`, expected u64"),
            "{error}"
        );
        let misplaced = SMOKE.replace("rate: 20,", "rate: 20, reconcile: true,");
        let error = error_of(&misplaced);
        assert!(
            error.starts_with("arrival.reconcile: unknown field `reconcile`"),
            "{error}"
        );
        let variant = SMOKE.replace("mode: open", "mode: opne");
        let error = error_of(&variant);
        assert!(
            error.starts_with("arrival.mode: unknown variant `opne`"),
            "{error}"
        );
        let text = SMOKE.replace(
            "{ name: claude-haiku-4-5 }",
            "{ name: claude-haiku-4-5, weight: heavy }",
        );
        let error = Scenario::from_yaml(&text).unwrap_err();
        assert_eq!(error.field, "traffic.models[1].weight");
        assert!(error.message.starts_with("invalid type: string"), "{error}");
        let missing = SMOKE.replace("duration_secs: 2\n", "");
        assert!(error_of(&missing).starts_with("invalid scenario: missing field `duration_secs`"));
    }

    #[test]
    fn mock_args_name_every_knob() {
        let s = Scenario::from_yaml(SMOKE).unwrap();
        let args = s.mock_args().unwrap();
        let at = args.iter().position(|a| a == "--output-tokens").unwrap();
        assert_eq!(args[at + 1], "8");
        assert!(!args.iter().any(|a| a == "--api-key"));
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 6, "only {seen} scenarios");
    }
}
