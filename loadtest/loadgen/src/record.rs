//! What a scenario run measured: per traffic class (well-behaved or abuser × stream or not)
//! HDR histograms and outcome counts, and per-second buckets for the charts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::LatencySummary;

/// Largest latency kept, in µs (10 minutes); larger values are clamped.
const MAX_TRACKED_US: u64 = 600_000_000;

/// A histogram of latencies in µs, with `figures` significant figures (2 or 3 here).
#[expect(
    clippy::unreachable,
    reason = "the bounds are constants hdrhistogram accepts, and every caller passes 2 or 3 \
              figures (at most 5 are allowed)"
)]
fn histogram(figures: u8) -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_TRACKED_US, figures) {
        Ok(h) => h,
        Err(e) => unreachable!("invalid histogram bounds: {e}"),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    WellBehaved,
    Abuser,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::WellBehaved => "well-behaved",
            Group::Abuser => "abuser",
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 and a complete body (a stream ended with `message_stop`).
    Ok,
    /// A stream the client dropped on purpose after K chunks.
    Disconnected,
    /// A non-200 answer, with its body's `error.type` (empty when unreadable).
    Status { status: u16, error_type: String },
    /// A 200 stream that carried `event: error`, with its `error.type`.
    StreamError(String),
    /// A 200 whose body broke off, or a stream that ended without `message_stop`.
    Cut,
    /// No response: connection refused or reset before the headers.
    Network,
    /// Not finished within the scenario's timeout.
    Timeout,
}

impl Outcome {
    /// The key of the error breakdown: `ok`, `429 rate_limit_error`, `stream_error
    /// overloaded_error`, `cut`, `network_error`, `timeout`, `disconnected`.
    pub fn label(&self) -> String {
        match self {
            Outcome::Ok => "ok".into(),
            Outcome::Disconnected => "disconnected (on purpose)".into(),
            Outcome::Status { status, error_type } if error_type.is_empty() => {
                format!("{status}")
            }
            Outcome::Status { status, error_type } => format!("{status} {error_type}"),
            Outcome::StreamError(t) if t.is_empty() => "stream_error".into(),
            Outcome::StreamError(t) => format!("stream_error {t}"),
            Outcome::Cut => "cut".into(),
            Outcome::Network => "network_error".into(),
            Outcome::Timeout => "timeout".into(),
        }
    }

    pub fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Ok | Outcome::Disconnected)
    }

    pub fn is_429(&self) -> bool {
        matches!(self, Outcome::Status { status: 429, .. })
    }
}

/// One finished request, as the collector receives it. Times are offsets from the start of
/// the run.
#[derive(Debug, Clone)]
pub struct Sample {
    pub group: Group,
    pub stream: bool,
    /// Intended send time (open loop), or actual send time (closed loop).
    pub intended: Duration,
    /// When the first body byte arrived, if one did.
    pub first_byte: Option<Duration>,
    pub done: Duration,
    pub outcome: Outcome,
    /// The mock planned a failure for this request (an injected upstream fault), and it failed.
    pub upstream_fault: bool,
    /// A billed request that timed out while the mock planned a fault for it: what tollgate
    /// billed for it is unknown, so it is left out of the reconciliation.
    pub unreconciled_timeout: bool,
    /// A complete answer whose usage differs from the mock's plan for the request.
    pub usage_mismatch: bool,
}

/// The name of a traffic class, e.g. `well-behaved stream`.
pub fn class_name(group: Group, stream: bool) -> String {
    format!(
        "{} {}",
        group.as_str(),
        if stream { "stream" } else { "non-stream" }
    )
}

#[derive(Debug, Clone)]
struct ClassRecorder {
    ttfb: Histogram<u64>,
    total: Histogram<u64>,
    requests: u64,
    ok: u64,
    disconnected: u64,
    failures: u64,
    upstream_faults: u64,
    outcomes: BTreeMap<String, u64>,
}

impl ClassRecorder {
    fn new() -> ClassRecorder {
        ClassRecorder {
            ttfb: histogram(3),
            total: histogram(3),
            requests: 0,
            ok: 0,
            disconnected: 0,
            failures: 0,
            upstream_faults: 0,
            outcomes: BTreeMap::new(),
        }
    }
}

/// One traffic class over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStats {
    pub class: String,
    pub group: Group,
    pub stream: bool,
    /// Requests whose (intended) send time fell in the measured window.
    pub requests: u64,
    pub ok: u64,
    pub disconnected: u64,
    pub failures: u64,
    /// Failures the mock planned (injected upstream faults): expected.
    pub upstream_faults: u64,
    /// Failures not explained by an injected fault.
    pub unexpected_failures: u64,
    /// Complete successful responses per second of the window.
    pub ok_per_sec: f64,
    /// Outcome label → count (see [`Outcome::label`]).
    pub outcomes: BTreeMap<String, u64>,
    /// Time to the first body byte, successes only, from the intended send time.
    pub ttfb: LatencySummary,
    /// Time to the last byte, successes only, from the intended send time.
    pub total: LatencySummary,
}

#[derive(Debug, Clone)]
struct Bucket {
    well_behaved_ok: u64,
    abuser_ok: u64,
    failures: u64,
    rate_limited: u64,
    total: Histogram<u64>,
    ttfb: Histogram<u64>,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            well_behaved_ok: 0,
            abuser_ok: 0,
            failures: 0,
            rate_limited: 0,
            // Two significant figures keep a bucket small (1% precision).
            total: histogram(2),
            ttfb: histogram(2),
        }
    }
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Seconds from the start of the run (warmup included).
    pub second: u64,
    pub well_behaved_ok: u64,
    pub abuser_ok: u64,
    /// Failed requests of any group (429s included).
    pub failures: u64,
    /// Of those, 429s.
    pub rate_limited: u64,
    /// Well-behaved successes' total latency and TTFB in this second, in ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ttfb_p50_ms: f64,
}

/// Everything the collector keeps.
#[derive(Debug, Clone)]
pub struct RunRecorder {
    warmup: Duration,
    classes: BTreeMap<(Group, bool), ClassRecorder>,
    buckets: Vec<Bucket>,
    /// 429s per group over the whole run, warmup included, except those the mock planned.
    pub all_429: BTreeMap<Group, u64>,
    /// Requests per group over the whole run.
    pub all_requests: BTreeMap<Group, u64>,
    /// Timed-out requests left out of the reconciliation (see [`Sample::unreconciled_timeout`]).
    pub unreconciled_timeouts: u64,
    /// Complete answers whose usage differs from the mock's plan.
    pub usage_mismatches: u64,
}

impl RunRecorder {
    pub fn new(warmup: Duration) -> RunRecorder {
        RunRecorder {
            warmup,
            classes: BTreeMap::new(),
            buckets: Vec::new(),
            all_429: BTreeMap::new(),
            all_requests: BTreeMap::new(),
            unreconciled_timeouts: 0,
            usage_mismatches: 0,
        }
    }

    pub fn record(&mut self, sample: &Sample) {
        *self.all_requests.entry(sample.group).or_default() += 1;
        if sample.unreconciled_timeout {
            self.unreconciled_timeouts += 1;
        }
        if sample.usage_mismatch {
            self.usage_mismatches += 1;
        }
        if sample.outcome.is_429() && !sample.upstream_fault {
            *self.all_429.entry(sample.group).or_default() += 1;
        }

        let second = sample.done.as_secs() as usize;
        if self.buckets.len() <= second {
            self.buckets.resize_with(second + 1, Bucket::new);
        }
        let ok = sample.outcome == Outcome::Ok;
        let latency = sample.done.saturating_sub(sample.intended);
        let ttfb = sample.first_byte.map(|t| t.saturating_sub(sample.intended));
        if let Some(bucket) = self.buckets.get_mut(second) {
            match (ok, sample.group) {
                (true, Group::WellBehaved) => {
                    bucket.well_behaved_ok += 1;
                    bucket.total.saturating_record(micros(latency));
                    if let Some(t) = ttfb {
                        bucket.ttfb.saturating_record(micros(t));
                    }
                }
                (true, Group::Abuser) => bucket.abuser_ok += 1,
                (false, _) if sample.outcome.is_failure() => {
                    bucket.failures += 1;
                    if sample.outcome.is_429() {
                        bucket.rate_limited += 1;
                    }
                }
                (false, _) => {}
            }
        }

        if sample.intended < self.warmup {
            return;
        }
        let class = self
            .classes
            .entry((sample.group, sample.stream))
            .or_insert_with(ClassRecorder::new);
        class.requests += 1;
        *class.outcomes.entry(sample.outcome.label()).or_default() += 1;
        match &sample.outcome {
            Outcome::Ok => {
                class.ok += 1;
                class.total.saturating_record(micros(latency));
                class
                    .ttfb
                    .saturating_record(micros(ttfb.unwrap_or(latency)));
            }
            Outcome::Disconnected => class.disconnected += 1,
            _ => {
                class.failures += 1;
                if sample.upstream_fault {
                    class.upstream_faults += 1;
                }
            }
        }
    }

    /// Per-class figures over a measured window of `window`.
    pub fn classes(&self, window: Duration) -> Vec<ClassStats> {
        let secs = window.as_secs_f64().max(f64::EPSILON);
        self.classes
            .iter()
            .map(|((group, stream), c)| ClassStats {
                class: class_name(*group, *stream),
                group: *group,
                stream: *stream,
                requests: c.requests,
                ok: c.ok,
                disconnected: c.disconnected,
                failures: c.failures,
                upstream_faults: c.upstream_faults,
                unexpected_failures: c.failures - c.upstream_faults,
                ok_per_sec: c.ok as f64 / secs,
                outcomes: c.outcomes.clone(),
                ttfb: LatencySummary::of(&c.ttfb),
                total: LatencySummary::of(&c.total),
            })
            .collect()
    }

    /// Latency summary of every successful request of `group` (both stream kinds), or of one
    /// stream kind.
    pub fn merged(&self, group: Group, stream: Option<bool>) -> (LatencySummary, LatencySummary) {
        let mut ttfb = histogram(3);
        let mut total = histogram(3);
        for ((g, s), c) in &self.classes {
            if *g == group && stream.is_none_or(|want| want == *s) {
                // Same bounds and precision: adding cannot fail.
                let _ = ttfb.add(&c.ttfb);
                let _ = total.add(&c.total);
            }
        }
        (LatencySummary::of(&ttfb), LatencySummary::of(&total))
    }

    /// The per-second series.
    pub fn series(&self) -> Vec<SeriesPoint> {
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1000.0
            }
        };
        self.buckets
            .iter()
            .enumerate()
            .map(|(second, b)| SeriesPoint {
                second: second as u64,
                well_behaved_ok: b.well_behaved_ok,
                abuser_ok: b.abuser_ok,
                failures: b.failures,
                rate_limited: b.rate_limited,
                p50_ms: ms(&b.total, 0.5),
                p99_ms: ms(&b.total, 0.99),
                ttfb_p50_ms: ms(&b.ttfb, 0.5),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(group: Group, intended: u64, done: u64, outcome: Outcome) -> Sample {
        Sample {
            group,
            stream: false,
            intended: ms(intended),
            first_byte: Some(ms(intended + (done - intended) / 2)),
            done: ms(done),
            outcome,
            upstream_fault: false,
            unreconciled_timeout: false,
            usage_mismatch: false,
        }
    }

    #[test]
    fn buckets_by_completion_second_and_measures_from_intended_time() {
        let mut r = RunRecorder::new(ms(1000));
        // Warmup: in the series, not in the classes.
        r.record(&sample(Group::WellBehaved, 100, 200, Outcome::Ok));
        // Sent in second 1, done in second 2: latency 1.5 s from the intended time.
        r.record(&sample(Group::WellBehaved, 1000, 2500, Outcome::Ok));
        for i in 0..100 {
            r.record(&sample(Group::WellBehaved, 2000 + i, 2010 + i, Outcome::Ok));
        }
        let limited = Outcome::Status {
            status: 429,
            error_type: "rate_limit_error".into(),
        };
        r.record(&sample(Group::Abuser, 2000, 2001, limited.clone()));
        r.record(&sample(Group::Abuser, 2000, 3001, Outcome::Ok));

        let series = r.series();
        assert_eq!(series.len(), 4);
        assert_eq!(series[0].well_behaved_ok, 1);
        assert_eq!(series[1].well_behaved_ok, 0);
        assert_eq!(series[2].well_behaved_ok, 101);
        assert_eq!(series[2].failures, 1);
        assert_eq!(series[2].rate_limited, 1);
        assert_eq!(series[3].abuser_ok, 1);
        assert!(
            (series[2].p50_ms - 10.0).abs() < 0.2,
            "{}",
            series[2].p50_ms
        );
        // 100 of 101 took 10 ms: the p99 is still 10 ms; the slow one shows in the max.
        assert!(
            (series[2].p99_ms - 10.0).abs() < 0.2,
            "{}",
            series[2].p99_ms
        );
        assert!((series[0].p50_ms - 100.0).abs() < 1.0);

        let classes = r.classes(Duration::from_secs(2));
        let wb = classes
            .iter()
            .find(|c| c.group == Group::WellBehaved)
            .unwrap();
        assert_eq!(wb.requests, 101);
        assert_eq!(wb.ok, 101);
        assert!((wb.ok_per_sec - 50.5).abs() < 1e-9);
        assert!(wb.total.max_us.abs_diff(1_500_000) < 2_000);
        let ab = classes.iter().find(|c| c.group == Group::Abuser).unwrap();
        assert_eq!(ab.outcomes["429 rate_limit_error"], 1);
        assert_eq!(ab.failures, 1);
        assert_eq!(r.all_429[&Group::Abuser], 1);
        assert_eq!(r.all_requests[&Group::WellBehaved], 102);
    }

    #[test]
    fn labels_outcomes() {
        assert_eq!(
            Outcome::StreamError("overloaded_error".into()).label(),
            "stream_error overloaded_error"
        );
        assert_eq!(Outcome::Network.label(), "network_error");
        assert!(!Outcome::Disconnected.is_failure());
        assert!(Outcome::Cut.is_failure());
    }
}
