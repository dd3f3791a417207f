//! A scenario's results: per-run figures, the comparison with the references, the verdict,
//! the console summary and the JSON document (the HTML page is in [`super::html`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::drive::SendStats;
use super::reconcile::Reconciliation;
use super::record::{ClassStats, Group, RunRecorder, SeriesPoint};
use super::scenario::Scenario;
use super::stats::LatencySummary;

/// One group's latency over the measured window (successes only).
#[derive(Debug, Clone, Serialize)]
pub struct GroupLatency {
    pub ttfb: LatencySummary,
    pub total: LatencySummary,
}

/// One run of the workload against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub target: String,
    pub window_secs: f64,
    pub classes: Vec<ClassStats>,
    /// Well-behaved latency: all, non-stream, stream.
    pub well_behaved: BTreeMap<String, GroupLatency>,
    /// Per-second series over the whole run (warmup included).
    pub series: Vec<SeriesPoint>,
    pub sends: SendStats,
    /// Requests over the whole run, per group (`well_behaved`, `abuser`).
    pub requests_by_group: BTreeMap<Group, u64>,
    /// 429s over the whole run per group, those the mock injected left out.
    pub refused_429_by_group: BTreeMap<Group, u64>,
    /// Billed requests that timed out while the mock planned a fault for them: left out of
    /// the reconciliation, which may then differ by what tollgate billed for them.
    pub unreconciled_timeouts: u64,
    /// Complete answers (whole run) whose usage, as the client parsed it, differs from the
    /// mock's plan for the request.
    pub usage_mismatches: u64,
}

impl RunResult {
    pub fn new(
        target: &str,
        recorder: &RunRecorder,
        window: Duration,
        sends: SendStats,
    ) -> RunResult {
        let mut well_behaved = BTreeMap::new();
        for (name, stream) in [
            ("all", None),
            ("non-stream", Some(false)),
            ("stream", Some(true)),
        ] {
            let (ttfb, total) = recorder.merged(Group::WellBehaved, stream);
            well_behaved.insert(name.to_string(), GroupLatency { ttfb, total });
        }
        RunResult {
            target: target.to_string(),
            window_secs: window.as_secs_f64(),
            classes: recorder.classes(window),
            well_behaved,
            series: recorder.series(),
            sends,
            requests_by_group: recorder.all_requests.clone(),
            refused_429_by_group: recorder.all_429.clone(),
            unreconciled_timeouts: recorder.unreconciled_timeouts,
            usage_mismatches: recorder.usage_mismatches,
        }
    }

    fn sum(&self, group: Group, f: impl Fn(&ClassStats) -> u64) -> u64 {
        self.classes
            .iter()
            .filter(|c| c.group == group)
            .map(f)
            .sum()
    }

    /// Measured requests of `group`.
    pub fn requests(&self, group: Group) -> u64 {
        self.sum(group, |c| c.requests)
    }

    pub fn unexpected_failures(&self, group: Group) -> u64 {
        self.sum(group, |c| c.unexpected_failures)
    }

    /// Measured 429 answers of `group` that the mock did not inject.
    pub fn measured_429(&self, group: Group) -> u64 {
        self.sum(group, |c| {
            c.outcomes
                .iter()
                .filter(|(k, _)| k.starts_with("429"))
                .map(|(_, v)| *v)
                .sum::<u64>()
        })
    }

    /// Successful requests per second, all groups.
    pub fn ok_per_sec(&self) -> f64 {
        self.classes.iter().map(|c| c.ok_per_sec).sum()
    }

    /// Outcome counts over every class, for the error breakdown.
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for class in &self.classes {
            for (k, v) in &class.outcomes {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    }
}

/// tollgate minus a reference, per percentile, in ms (a difference of percentiles).
#[derive(Debug, Clone, Serialize)]
pub struct AddedLatency {
    pub reference: String,
    /// `all`, `non-stream`, `stream`.
    pub traffic: String,
    pub ttfb_p50_ms: f64,
    pub ttfb_p99_ms: f64,
    pub total_p50_ms: f64,
    pub total_p90_ms: f64,
    pub total_p99_ms: f64,
    pub total_p999_ms: f64,
}

fn diff_ms(a: u64, b: u64) -> f64 {
    (a as f64 - b as f64) / 1000.0
}

/// One target the run was held to.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// Informative only: says what was not checked; neither a pass nor a failure.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub informative: bool,
}

/// Everything a scenario run produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub accounts: usize,
    /// Requests tollgate billed (records handed to reconciliation).
    pub billed_requests: usize,
    pub tollgate: RunResult,
    pub references: Vec<RunResult>,
    pub added_latency: Vec<AddedLatency>,
    pub reconciliation: Option<Reconciliation>,
    pub checks: Vec<Check>,
}

impl ScenarioReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scenario: &Scenario,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        accounts: usize,
        billed_requests: usize,
        tollgate: RunResult,
        references: Vec<RunResult>,
        reconciliation: Option<Reconciliation>,
    ) -> ScenarioReport {
        let mut added_latency = Vec::new();
        for reference in &references {
            for (traffic, ours) in &tollgate.well_behaved {
                let Some(theirs) = reference.well_behaved.get(traffic) else {
                    continue;
                };
                if ours.total.count == 0 || theirs.total.count == 0 {
                    continue;
                }
                added_latency.push(AddedLatency {
                    reference: reference.target.clone(),
                    traffic: traffic.clone(),
                    ttfb_p50_ms: diff_ms(ours.ttfb.p50_us, theirs.ttfb.p50_us),
                    ttfb_p99_ms: diff_ms(ours.ttfb.p99_us, theirs.ttfb.p99_us),
                    total_p50_ms: diff_ms(ours.total.p50_us, theirs.total.p50_us),
                    total_p90_ms: diff_ms(ours.total.p90_us, theirs.total.p90_us),
                    total_p99_ms: diff_ms(ours.total.p99_us, theirs.total.p99_us),
                    total_p999_ms: diff_ms(ours.total.p999_us, theirs.total.p999_us),
                });
            }
        }
        let mut report = ScenarioReport {
            scenario: scenario.clone(),
            started_at,
            finished_at,
            accounts,
            billed_requests,
            tollgate,
            references,
            added_latency,
            reconciliation,
            checks: Vec::new(),
        };
        report.checks = report.evaluate();
        report
    }

    fn evaluate(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let run = &self.tollgate;
        let expect = &self.scenario.expect;
        if let Some(reconciliation) = &self.reconciliation {
            let wrong = reconciliation.accounts.iter().filter(|a| !a.exact).count();
            checks.push(Check {
                name: "reconciliation exact".into(),
                passed: reconciliation.exact,
                detail: format!(
                    "{} account(s), {wrong} differ; {} billed requests",
                    reconciliation.accounts.len(),
                    self.billed_requests
                ),
                informative: false,
            });
        } else if !self.scenario.reconcile {
            checks.push(Check {
                name: "reconciliation".into(),
                passed: true,
                detail: "skipped (reconcile: false)".into(),
                informative: true,
            });
        }
        // Independent of tollgate's parser: the usage each client read in a complete answer
        // against what the mock planned to report.
        let mismatches: Vec<String> = std::iter::once(run)
            .chain(&self.references)
            .map(|r| format!("{}: {}", r.target, r.usage_mismatches))
            .collect();
        let mismatched: u64 = std::iter::once(run)
            .chain(&self.references)
            .map(|r| r.usage_mismatches)
            .sum();
        checks.push(Check {
            name: "client-seen usage matches the upstream's plan".into(),
            passed: mismatched == 0,
            detail: format!("complete answers that differ: {}", mismatches.join(", ")),
            informative: false,
        });
        let requests = run.requests(Group::WellBehaved);
        checks.push(Check {
            name: "well-behaved requests measured".into(),
            passed: requests > 0,
            detail: format!("{requests}"),
            informative: false,
        });
        if let Some(max) = expect.max_error_share {
            let failures = run.unexpected_failures(Group::WellBehaved);
            let share = failures as f64 / requests.max(1) as f64;
            checks.push(Check {
                name: format!("well-behaved unexpected failures <= {:.2}%", max * 100.0),
                passed: share <= max,
                detail: format!("{failures} of {requests} ({:.2}%)", share * 100.0),
                informative: false,
            });
        }
        if let Some(max) = expect.max_well_behaved_429 {
            let seen = run
                .refused_429_by_group
                .get(&Group::WellBehaved)
                .copied()
                .unwrap_or(0);
            checks.push(Check {
                name: format!("well-behaved 429s <= {max}"),
                passed: seen <= max,
                detail: format!("{seen} (warmup included; upstream-injected 429s left out)"),
                informative: false,
            });
        }
        if let Some(min) = expect.min_abuser_429_share {
            let total = run
                .requests_by_group
                .get(&Group::Abuser)
                .copied()
                .unwrap_or(0);
            let refused = run
                .refused_429_by_group
                .get(&Group::Abuser)
                .copied()
                .unwrap_or(0);
            let share = refused as f64 / total.max(1) as f64;
            checks.push(Check {
                name: format!("abusers refused (429) >= {:.0}%", min * 100.0),
                passed: total > 0 && share >= min,
                detail: format!("{refused} of {total} ({:.1}%)", share * 100.0),
                informative: false,
            });
        }
        if let Some(max) = expect.max_p99_ms {
            let p99 = run
                .well_behaved
                .get("all")
                .map_or(0.0, |l| l.total.p99_us as f64 / 1000.0);
            checks.push(Check {
                name: format!("well-behaved p99 <= {max} ms"),
                passed: p99 <= max,
                detail: format!("{p99:.3} ms"),
                informative: false,
            });
        }
        if let Some(max) = expect.max_late_share {
            let share = run.sends.late as f64 / run.sends.scheduled.max(1) as f64;
            checks.push(Check {
                name: format!("late sends <= {:.1}%", max * 100.0),
                passed: share <= max,
                detail: format!(
                    "{} of {} (max lag {:.1} ms)",
                    run.sends.late, run.sends.scheduled, run.sends.max_lag_ms
                ),
                informative: false,
            });
        }
        checks
    }

    /// Reconciliation exact (when it ran) and every target of the scenario met.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed) && self.reconciliation.as_ref().is_none_or(|r| r.exact)
    }

    /// A warning when timed-out requests with a planned fault were left out of the
    /// reconciliation (its result may then be indeterminate).
    pub fn timeout_warning(&self) -> Option<String> {
        let n = self.tollgate.unreconciled_timeouts;
        (n > 0).then(|| {
            format!(
                "{n} billed request(s) timed out while the upstream was to fail them; they are \
                 left out of the reconciliation, which may differ by what tollgate billed for them"
            )
        })
    }

    /// The console summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.scenario;
        let _ = writeln!(
            out,
            "scenario {}: {} loop{}, {}+{} s, stream share {:.0}%, {} account(s)",
            s.name,
            match s.arrival.mode {
                super::scenario::LoopKind::Open => "open",
                super::scenario::LoopKind::Closed => "closed",
            },
            match s.arrival.mode {
                super::scenario::LoopKind::Open => format!(" at {} req/s", s.arrival.rate),
                super::scenario::LoopKind::Closed =>
                    format!(" with {} clients", s.arrival.concurrency),
            },
            s.warmup_secs,
            s.duration_secs,
            s.traffic.stream_share * 100.0,
            self.accounts
        );
        for run in std::iter::once(&self.tollgate).chain(&self.references) {
            let _ = writeln!(
                out,
                "\n{} ({:.0} ok/s; {} sends, {} late, max lag {:.1} ms)",
                run.target,
                run.ok_per_sec(),
                run.sends.scheduled,
                run.sends.late,
                run.sends.max_lag_ms
            );
            let _ = writeln!(
                out,
                "  {:<24} {:>7} {:>7} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "class", "reqs", "ok", "drop", "failed", "ttfb p50", "p50", "p99", "p99.9", "max"
            );
            for c in &run.classes {
                let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
                let _ = writeln!(
                    out,
                    "  {:<24} {:>7} {:>7} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    c.class,
                    c.requests,
                    c.ok,
                    c.disconnected,
                    c.failures,
                    ms(c.ttfb.p50_us),
                    ms(c.total.p50_us),
                    ms(c.total.p99_us),
                    ms(c.total.p999_us),
                    ms(c.total.max_us)
                );
            }
            let failures: Vec<String> = run
                .outcomes()
                .into_iter()
                .filter(|(k, _)| k != "ok" && !k.starts_with("disconnected"))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            if !failures.is_empty() {
                let _ = writeln!(out, "  outcomes: {}", failures.join(", "));
            }
        }
        if !self.added_latency.is_empty() {
            let _ = writeln!(
                out,
                "\nadded latency of tollgate (difference of percentiles, ms):"
            );
            for a in &self.added_latency {
                let _ = writeln!(
                    out,
                    "  vs {:<12} {:<10} p50 {:+.3}  p90 {:+.3}  p99 {:+.3}  p99.9 {:+.3}  ttfb p50 {:+.3}",
                    a.reference, a.traffic, a.total_p50_ms, a.total_p90_ms, a.total_p99_ms, a.total_p999_ms, a.ttfb_p50_ms
                );
            }
        }
        if let Some(warning) = self.timeout_warning() {
            let _ = writeln!(out, "\nwarning: {warning}");
        }
        if let Some(r) = &self.reconciliation {
            let _ = writeln!(out, "\n{}", r.render().trim_end());
        } else if !s.reconcile {
            let _ = writeln!(out, "\nreconciliation: skipped (reconcile: false)");
        }
        let _ = writeln!(out, "\nchecks:");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                if c.informative {
                    "--"
                } else if c.passed {
                    "ok"
                } else {
                    "FAIL"
                },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(
            out,
            "verdict: {}",
            if self.passed() { "PASSED" } else { "FAILED" }
        );
        out
    }
}
