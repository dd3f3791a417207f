//! Recording one run: each client owns a [`Recorder`] (no shared state on the request path);
//! the runner merges them when the run ends and reads a [`RunStats`] from the result.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram holds (larger values are clamped to it): 10 minutes, in µs.
const MAX_TRACKED_US: u64 = 600_000_000;
/// Significant figures kept by the histograms: 3 gives 0.1% precision at any magnitude.
const SIGNIFICANT_FIGURES: u8 = 3;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status 200 and a complete body (for a stream: its last event was `message_stop`).
    Success { ttfb: Duration, total: Duration },
    /// A complete response with another status.
    Status(u16),
    /// Status 200 but the body broke off, or a stream ended without `message_stop`.
    Incomplete(u16),
    /// No response: connection refused or reset before the headers, protocol error.
    Transport,
    /// No complete response within the request timeout.
    Timeout,
}

/// Everything one client saw during the measured window.
#[derive(Debug, Clone)]
pub struct Recorder {
    ttfb: Histogram<u64>,
    total: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    successes: u64,
    incomplete: u64,
    transport_errors: u64,
    timeouts: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

#[expect(
    clippy::unreachable,
    reason = "the bounds and the significant figures are constants that hdrhistogram accepts"
)]
fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGNIFICANT_FIGURES) {
        Ok(histogram) => histogram,
        Err(e) => unreachable!("invalid histogram bounds: {e}"),
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            ttfb: new_histogram(),
            total: new_histogram(),
            statuses: BTreeMap::new(),
            successes: 0,
            incomplete: 0,
            transport_errors: 0,
            timeouts: 0,
        }
    }

    /// Counts one request. Latencies are recorded for successes only, so that fast refusals
    /// do not flatter a target's percentiles.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success { ttfb, total } => {
                self.successes += 1;
                *self.statuses.entry(200).or_default() += 1;
                self.ttfb.saturating_record(micros(ttfb).max(1));
                self.total.saturating_record(micros(total).max(1));
            }
            Outcome::Status(status) => *self.statuses.entry(status).or_default() += 1,
            Outcome::Incomplete(status) => {
                self.incomplete += 1;
                *self.statuses.entry(status).or_default() += 1;
            }
            Outcome::Transport => self.transport_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }

    /// Adds another client's counts to this one.
    pub fn merge(&mut self, other: &Recorder) -> Result<(), hdrhistogram::AdditionError> {
        self.ttfb.add(&other.ttfb)?;
        self.total.add(&other.total)?;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_default() += count;
        }
        self.successes += other.successes;
        self.incomplete += other.incomplete;
        self.transport_errors += other.transport_errors;
        self.timeouts += other.timeouts;
        Ok(())
    }

    pub fn successes(&self) -> u64 {
        self.successes
    }

    /// Every request that ended in the window, however it ended.
    pub fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors + self.timeouts
    }

    /// The summary of a run whose measured window lasted `window`.
    pub fn stats(&self, window: Duration) -> RunStats {
        let secs = window.as_secs_f64().max(f64::EPSILON);
        let requests = self.requests();
        RunStats {
            window_secs: window.as_secs_f64(),
            requests,
            successes: self.successes,
            rps: self.successes as f64 / secs,
            statuses: self
                .statuses
                .iter()
                .map(|(status, count)| (status.to_string(), *count))
                .collect(),
            incomplete: self.incomplete,
            transport_errors: self.transport_errors,
            timeouts: self.timeouts,
            ttfb: LatencySummary::of(&self.ttfb),
            total: LatencySummary::of(&self.total),
        }
    }
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// What one run of one target measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// Length of the measured window (warmup excluded).
    pub window_secs: f64,
    /// Requests that ended inside the window.
    pub requests: u64,
    /// Of those, the successful ones.
    pub successes: u64,
    /// Successful requests per second of the window: the throughput that counts.
    pub rps: f64,
    /// HTTP statuses of the responses received (incomplete ones included).
    pub statuses: BTreeMap<String, u64>,
    /// 200 responses whose body broke off or whose stream lacked `message_stop`.
    pub incomplete: u64,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Time to the first byte of the response body (successes only).
    pub ttfb: LatencySummary,
    /// Time to the last byte of the response (successes only).
    pub total: LatencySummary,
}

impl RunStats {
    /// Requests that did not succeed, whatever the reason.
    pub fn failures(&self) -> u64 {
        self.requests - self.successes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn records_and_merges() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for i in 1..=100 {
            a.record(Outcome::Success {
                ttfb: ms(i),
                total: ms(i * 2),
            });
        }
        b.record(Outcome::Status(429));
        b.record(Outcome::Incomplete(200));
        b.record(Outcome::Transport);
        b.record(Outcome::Timeout);
        a.merge(&b).unwrap();
        let stats = a.stats(Duration::from_secs(10));
        assert_eq!(stats.requests, 104);
        assert_eq!(stats.successes, 100);
        assert_eq!(stats.failures(), 4);
        assert!((stats.rps - 10.0).abs() < 1e-9);
        assert_eq!(stats.statuses["200"], 101);
        assert_eq!(stats.statuses["429"], 1);
        assert_eq!(stats.total.count, 100);
        // 0.1% precision: p50 of 2..200 ms is 100 ms.
        assert!(stats.total.p50_us.abs_diff(100_000) <= 100);
        assert!(stats.ttfb.max_us.abs_diff(100_000) <= 100);
    }

    #[test]
    fn empty_summary_is_zero() {
        let stats = Recorder::new().stats(Duration::from_secs(1));
        assert_eq!(stats.total, LatencySummary::default());
        assert_eq!(stats.requests, 0);
    }
}
