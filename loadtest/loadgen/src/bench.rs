//! The whole measurement: every round runs every mode against every target in turn, so that
//! slow drifts of a noisy machine hit all targets alike; the report takes medians over rounds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::report::{Report, RunRecord};
use super::runner::{self, RunSpec};
use super::target::Target;
use super::workload::{Mode, Workload};

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Measured in this order; the first is the baseline of the comparisons.
    pub targets: Vec<Target>,
    pub modes: Vec<Mode>,
    pub workload: Workload,
    /// Clients of the closed loop.
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub rounds: usize,
    pub timeout: Duration,
    /// Idle time between two runs, so that one target's tail does not overlap the next.
    pub pause: Duration,
    /// Send one request per target and mode before measuring, and stop if one fails.
    pub preflight: bool,
    pub progress: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The HTTP client every run shares: one pool, sized to the clients, without Nagle delays.
pub fn http_client(config: &BenchConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Targets are named outright; a proxy from the environment would be measured too.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(config.concurrency.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .build()
}

/// Runs the benchmark; must be called inside a (multi-threaded) tokio runtime.
pub async fn run_bench(config: &BenchConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(!config.targets.is_empty(), "no target to measure");
    anyhow::ensure!(!config.modes.is_empty(), "no mode to measure");
    let client = http_client(config)?;

    if config.preflight {
        for mode in &config.modes {
            for target in &config.targets {
                runner::probe(&client, target, *mode, config.workload.body(*mode)).await?;
            }
        }
    }

    let mut report = Report::new(config, unix_now());
    let rounds = config.rounds.max(1);
    for round in 1..=rounds {
        for mode in &config.modes {
            let body = config.workload.body(*mode);
            for target in &config.targets {
                let spec = RunSpec {
                    target: target.clone(),
                    mode: *mode,
                    body: body.clone(),
                    concurrency: config.concurrency,
                    warmup: config.warmup,
                    duration: config.duration,
                    timeout: config.timeout,
                    label: format!("round {round}/{rounds} {mode} {}", target.name),
                    progress: config.progress,
                };
                let stats = runner::run(&client, &spec).await?;
                if config.progress {
                    eprintln!(
                        "round {round}/{rounds} {mode} {}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} failed",
                        target.name,
                        stats.rps,
                        stats.total.p50_us as f64 / 1000.0,
                        stats.total.p99_us as f64 / 1000.0,
                        stats.failures()
                    );
                }
                report.runs.push(RunRecord {
                    round,
                    mode: *mode,
                    target: target.name.clone(),
                    stats,
                });
                tokio::time::sleep(config.pause).await;
            }
        }
    }
    report.finished_unix = unix_now();
    report.summarize();
    Ok(report)
}
