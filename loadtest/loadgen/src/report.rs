//! Turning runs into figures: medians over rounds, comparisons between targets, the console
//! table and the JSON document.
//!
//! Every figure of a target is the median of its per-round figures. Comparisons are paired by
//! round: the added latency of a target is, per round, its percentile minus the baseline's
//! percentile (a difference of percentiles, not a percentile of differences), and the reported
//! value is the median of those per-round differences; throughput ratios likewise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::bench::BenchConfig;
use super::stats::RunStats;
use super::workload::{Mode, Workload};

/// The median of `values` (the mean of the two middle ones for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return 0.0;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let upper = sorted.get(mid).copied().unwrap_or_default();
    if sorted.len() % 2 == 1 {
        return upper;
    }
    let lower = mid.checked_sub(1).and_then(|i| sorted.get(i));
    (lower.copied().unwrap_or(upper) + upper) / 2.0
}

/// The settings of the measurement, as recorded in the JSON (keys left out).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub targets: Vec<(String, String)>,
    pub modes: Vec<Mode>,
    pub workload: Workload,
    pub concurrency: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub rounds: usize,
}

/// One run of one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub round: usize,
    pub mode: Mode,
    pub target: String,
    pub stats: RunStats,
}

/// Median over rounds of each percentile, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyMedians {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One target in one mode, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSummary {
    pub target: String,
    pub rounds: usize,
    /// Median of the per-round successful requests per second.
    pub rps: f64,
    /// Sums over rounds.
    pub requests: u64,
    pub successes: u64,
    pub statuses: BTreeMap<String, u64>,
    pub incomplete: u64,
    pub transport_errors: u64,
    pub timeouts: u64,
    pub ttfb: LatencyMedians,
    pub total: LatencyMedians,
}

/// Latency a target adds to the baseline (the first target), in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    pub target: String,
    pub baseline: String,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Throughput of `target` divided by that of `other`.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub target: String,
    pub other: String,
    pub ratio: f64,
}

/// The figures of one mode.
#[derive(Debug, Clone, Serialize)]
pub struct ModeSummary {
    pub mode: Mode,
    pub targets: Vec<TargetSummary>,
    pub added_vs_first: Vec<Added>,
    pub throughput_ratios: Vec<Ratio>,
}

/// Everything measured, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub started_unix: u64,
    pub finished_unix: u64,
    pub runs: Vec<RunRecord>,
    pub summaries: Vec<ModeSummary>,
}

impl Report {
    pub fn new(config: &BenchConfig, started_unix: u64) -> Report {
        Report {
            settings: Settings {
                targets: config
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), t.base_url.clone()))
                    .collect(),
                modes: config.modes.clone(),
                workload: config.workload.clone(),
                concurrency: config.concurrency,
                warmup_secs: config.warmup.as_secs_f64(),
                duration_secs: config.duration.as_secs_f64(),
                rounds: config.rounds,
            },
            started_unix,
            finished_unix: started_unix,
            runs: Vec::new(),
            summaries: Vec::new(),
        }
    }

    fn runs_of<'a>(&'a self, mode: Mode, target: &'a str) -> impl Iterator<Item = &'a RunRecord> {
        self.runs
            .iter()
            .filter(move |r| r.mode == mode && r.target == target)
    }

    /// The stats of `target` in `mode` for `round`.
    fn run(&self, mode: Mode, target: &str, round: usize) -> Option<&RunStats> {
        self.runs
            .iter()
            .find(|r| r.mode == mode && r.target == target && r.round == round)
            .map(|r| &r.stats)
    }

    fn target_summary(&self, mode: Mode, target: &str) -> TargetSummary {
        let runs: Vec<&RunStats> = self.runs_of(mode, target).map(|r| &r.stats).collect();
        let med =
            |f: &dyn Fn(&RunStats) -> f64| median(&runs.iter().map(|s| f(s)).collect::<Vec<_>>());
        let mut statuses = BTreeMap::new();
        for stats in &runs {
            for (status, count) in &stats.statuses {
                *statuses.entry(status.clone()).or_insert(0) += count;
            }
        }
        let latency = |pick: &dyn Fn(&RunStats) -> &super::stats::LatencySummary| LatencyMedians {
            p50_us: med(&|s| pick(s).p50_us as f64),
            p90_us: med(&|s| pick(s).p90_us as f64),
            p99_us: med(&|s| pick(s).p99_us as f64),
            p999_us: med(&|s| pick(s).p999_us as f64),
            max_us: med(&|s| pick(s).max_us as f64),
        };
        TargetSummary {
            target: target.to_string(),
            rounds: runs.len(),
            rps: med(&|s| s.rps),
            requests: runs.iter().map(|s| s.requests).sum(),
            successes: runs.iter().map(|s| s.successes).sum(),
            statuses,
            incomplete: runs.iter().map(|s| s.incomplete).sum(),
            transport_errors: runs.iter().map(|s| s.transport_errors).sum(),
            timeouts: runs.iter().map(|s| s.timeouts).sum(),
            ttfb: latency(&|s| &s.ttfb),
            total: latency(&|s| &s.total),
        }
    }

    /// Median over the rounds in which both ran of `f(target's stats, other's stats)`.
    fn paired(
        &self,
        mode: Mode,
        target: &str,
        other: &str,
        f: impl Fn(&RunStats, &RunStats) -> f64,
    ) -> f64 {
        let values: Vec<f64> = (1..=self.settings.rounds.max(1))
            .filter_map(|round| {
                Some(f(
                    self.run(mode, target, round)?,
                    self.run(mode, other, round)?,
                ))
            })
            .collect();
        median(&values)
    }

    /// Computes [`Report::summaries`] from [`Report::runs`].
    pub fn summarize(&mut self) {
        let names: Vec<String> = self
            .settings
            .targets
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        let mut summaries = Vec::new();
        for mode in self.settings.modes.clone() {
            let targets = names.iter().map(|n| self.target_summary(mode, n)).collect();
            let mut added_vs_first = Vec::new();
            let mut throughput_ratios = Vec::new();
            if let Some(first) = names.first() {
                for name in names.iter().skip(1) {
                    added_vs_first.push(Added {
                        target: name.clone(),
                        baseline: first.clone(),
                        p50_us: self.paired(mode, name, first, |t, b| {
                            t.total.p50_us as f64 - b.total.p50_us as f64
                        }),
                        p99_us: self.paired(mode, name, first, |t, b| {
                            t.total.p99_us as f64 - b.total.p99_us as f64
                        }),
                    });
                }
            }
            for name in &names {
                for other in names.iter().filter(|o| *o != name) {
                    throughput_ratios.push(Ratio {
                        target: name.clone(),
                        other: other.clone(),
                        ratio: self.paired(mode, name, other, |t, o| {
                            if o.rps > 0.0 {
                                t.rps / o.rps
                            } else {
                                f64::NAN
                            }
                        }),
                    });
                }
            }
            summaries.push(ModeSummary {
                mode,
                targets,
                added_vs_first,
                throughput_ratios,
            });
        }
        self.summaries = summaries;
    }

    /// The console report: a table per mode, then the comparisons.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let width = s
            .targets
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(6)
            .max(6);
        for summary in &self.summaries {
            let _ = writeln!(
                out,
                "\n== {} | {} clients, closed loop | {} s measured after {} s warmup | median of {} round(s) ==",
                summary.mode, s.concurrency, s.duration_secs, s.warmup_secs, s.rounds
            );
            let _ = writeln!(
                out,
                "{:<width$} {:>9} {:>9} {:>6} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8}",
                "target",
                "req/s",
                "ok",
                "failed",
                "ttfb p50",
                "ttfb p99",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max"
            );
            for t in &summary.targets {
                let _ = writeln!(
                    out,
                    "{:<width$} {:>9.0} {:>9} {:>6} | {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8}",
                    t.target,
                    t.rps,
                    t.successes,
                    t.requests - t.successes,
                    ms(t.ttfb.p50_us),
                    ms(t.ttfb.p99_us),
                    ms(t.total.p50_us),
                    ms(t.total.p90_us),
                    ms(t.total.p99_us),
                    ms(t.total.p999_us),
                    ms(t.total.max_us),
                );
            }
            let _ = writeln!(
                out,
                "(latencies in ms, of successful requests; req/s counts successes)"
            );
            for t in &summary.targets {
                let failed = t.requests - t.successes;
                if failed > 0 {
                    let statuses: Vec<String> = t
                        .statuses
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  {} failures: statuses {{{}}}, incomplete {}, transport errors {}, timeouts {}",
                        t.target,
                        statuses.join(", "),
                        t.incomplete,
                        t.transport_errors,
                        t.timeouts
                    );
                }
            }
            for added in &summary.added_vs_first {
                let ratios: Vec<String> = summary
                    .throughput_ratios
                    .iter()
                    .filter(|r| r.target == added.target)
                    .map(|r| format!("{:.2}x {}", r.ratio, r.other))
                    .collect();
                let _ = writeln!(
                    out,
                    "{:<width$} vs {}: added p50 {:+.3} ms, p99 {:+.3} ms; throughput {}",
                    added.target,
                    added.baseline,
                    added.p50_us / 1000.0,
                    added.p99_us / 1000.0,
                    ratios.join(", ")
                );
            }
        }
        out
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1000.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::stats::LatencySummary;
    use crate::target::Target;
    use std::time::Duration;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    fn stats(rps: f64, p50: u64, p99: u64) -> RunStats {
        RunStats {
            window_secs: 1.0,
            requests: rps as u64,
            successes: rps as u64,
            rps,
            statuses: BTreeMap::new(),
            incomplete: 0,
            transport_errors: 0,
            timeouts: 0,
            ttfb: LatencySummary::default(),
            total: LatencySummary {
                p50_us: p50,
                p99_us: p99,
                ..LatencySummary::default()
            },
        }
    }

    #[test]
    fn compares_paired_by_round() {
        let config = BenchConfig {
            targets: vec![
                Target::parse("direct=http://a").unwrap(),
                Target::parse("proxy=http://b").unwrap(),
            ],
            modes: vec![Mode::NonStream],
            workload: Workload {
                model: "m".into(),
                max_tokens: 1,
                prompt_bytes: 0,
            },
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            rounds: 3,
            timeout: Duration::from_secs(1),
            pause: Duration::ZERO,
            preflight: false,
            progress: false,
        };
        let mut report = Report::new(&config, 0);
        let rounds = [
            (stats(1000.0, 100, 300), stats(500.0, 200, 900)),
            (stats(800.0, 120, 400), stats(600.0, 150, 500)),
            (stats(900.0, 110, 350), stats(300.0, 400, 2000)),
        ];
        for (i, (direct, proxy)) in rounds.into_iter().enumerate() {
            for (target, stats) in [("direct", direct), ("proxy", proxy)] {
                report.runs.push(RunRecord {
                    round: i + 1,
                    mode: Mode::NonStream,
                    target: target.into(),
                    stats,
                });
            }
        }
        report.summarize();
        let summary = &report.summaries[0];
        assert_eq!(summary.targets[0].rps, 900.0);
        assert_eq!(summary.targets[1].total.p50_us, 200.0);
        // Differences per round: p50 100, 30, 290 -> 100; p99 600, 100, 1650 -> 600.
        assert_eq!(summary.added_vs_first[0].p50_us, 100.0);
        assert_eq!(summary.added_vs_first[0].p99_us, 600.0);
        // Ratios per round: 0.5, 0.75, 1/3 -> 0.5.
        let ratio = &summary.throughput_ratios[1];
        assert_eq!(
            (ratio.target.as_str(), ratio.other.as_str()),
            ("proxy", "direct")
        );
        assert_eq!(ratio.ratio, 0.5);
        assert!(report
            .render()
            .contains("proxy  vs direct: added p50 +0.100 ms"));
    }
}
