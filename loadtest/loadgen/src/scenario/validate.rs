//! [`Scenario::validate`]: the values that cannot work, and the bounds that keep a scenario
//! from asking for more than one machine can schedule.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::{LoopKind, Scenario};

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

pub(super) fn bad(field: &str, message: impl Into<String>) -> ScenarioError {
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

impl Scenario {
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
        if let Some(prices) = &self.prices {
            prices.check().map_err(|e| bad("prices", e.0))?;
        }
        let prices = self.price_table().map_err(|e| bad("", e.0))?;
        for (i, model) in t.models.iter().enumerate() {
            if model.name.trim().is_empty() {
                return Err(bad(
                    &format!("traffic.models[{i}].name"),
                    "must not be empty",
                ));
            }
            if prices.model(&model.name).is_none() {
                return Err(bad(
                    &format!("traffic.models[{i}].name"),
                    format!("{:?} is not a model of loadgen's price table", model.name),
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
}
