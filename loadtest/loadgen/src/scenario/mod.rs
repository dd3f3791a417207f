//! A load scenario: what a YAML scenario file says ([`Scenario`] and its sections), where
//! it runs ([`Endpoints`]), and the library entry point [`run_scenario`] that provisions
//! tenants, drives the load, reconciles the books and builds the report.
//!
//! - `parse`: reading a file or text, with errors that name the field at fault, and the price
//!   file a scenario names.
//! - `validate`: [`Scenario::validate`], the values that cannot work and the bounds.
//!
//! Every section refuses unknown keys, and [`Scenario::validate`] refuses values that cannot
//! work, naming the field (`traffic.stream_share: must be between 0 and 1`). Nothing touches
//! the network before validation passes.

mod parse;
#[cfg(test)]
mod tests;
mod validate;

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use mock_anthropic::MockConfig;
use serde::{Deserialize, Serialize};

use crate::prices::{PriceError, PriceTable};

pub use validate::ScenarioError;

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
    /// The prices reconciliation expects tollgate to bill, inline, in the shape of
    /// `loadtest/loadgen/prices.yaml`; that shipped table when neither this nor
    /// `prices_file` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<PriceTable>,
    /// A price file instead of `prices`, relative to the scenario file. Loading the scenario
    /// reads it into `prices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices_file: Option<PathBuf>,
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

impl Scenario {
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

    /// The prices this run is reconciled with: `prices` (inline, or read from `prices_file` or
    /// `--prices`), else the table shipped with loadgen.
    pub fn price_table(&self) -> Result<Cow<'_, PriceTable>, PriceError> {
        match &self.prices {
            Some(table) => Ok(Cow::Borrowed(table)),
            None => PriceTable::shipped().map(Cow::Owned),
        }
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
