//! Driving a scenario: one run of the workload against one target (open loop with intended
//! send times, or closed loop), and [`run_scenario`], which chains preflight, provisioning,
//! the tollgate run, reconciliation and the reference runs.
//!
//! - `request`: one request sent and its answer read, checked against the mock's plan.
//! - `dispatch`: the open loop's sends at their intended times, and the closed loop's clients.
//! - `sequence`: [`run_scenario`], the whole scenario from preflight to report.
//! - this module: the targets and their keys, one run of the workload, the progress line.

mod dispatch;
mod request;
mod sequence;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::mix::Mix;
use crate::outcome::RunResult;
use crate::provision::KeyInfo;
use crate::reconcile::RequestRecord;
use crate::record::RunRecorder;
use crate::scenario::{LoopKind, Scenario};
use crate::schedule;
use dispatch::{client_loop, dispatch};
use request::{Ctx, Done};

pub use dispatch::{SendStats, LATE_AFTER};
pub use sequence::{run_scenario, run_scenario_with};

/// The key a request is sent with, and the account it bills (tollgate runs only).
#[derive(Debug, Clone)]
pub struct KeySlot {
    pub header: Option<HeaderValue>,
    pub account_id: Option<String>,
}

impl KeySlot {
    fn of(info: &KeyInfo) -> anyhow::Result<KeySlot> {
        Ok(KeySlot {
            header: Some(HeaderValue::from_str(&info.key)?),
            account_id: Some(info.account_id.clone()),
        })
    }

    fn anonymous(key: Option<&str>) -> anyhow::Result<KeySlot> {
        Ok(KeySlot {
            header: key.map(HeaderValue::from_str).transpose()?,
            account_id: None,
        })
    }
}

/// One target and the keys its requests rotate over.
#[derive(Debug, Clone)]
pub struct RunTarget {
    pub name: String,
    pub base_url: String,
    pub well_behaved: Vec<KeySlot>,
    /// One per abusive key; empty when the scenario has none.
    pub abusers: Vec<KeySlot>,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    late: AtomicU64,
}

async fn show_progress(
    label: String,
    progress: Arc<Progress>,
    start: Instant,
    warmup: Duration,
    total: Duration,
) {
    let tty = std::io::stderr().is_terminal();
    let every = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(start + every, every);
    loop {
        let now = ticker.tick().await;
        let elapsed = now.duration_since(start);
        let phase = if elapsed < warmup {
            "warmup"
        } else {
            "measure"
        };
        let line = format!(
            "{label}: {phase} {:.1}/{:.1}s  sent {}  done {}  failed {}  late {}",
            elapsed.as_secs_f64(),
            total.as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
            progress.done.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
            progress.late.load(Ordering::Relaxed),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if tty {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
}

/// Options of one run that are not in the scenario.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub progress: bool,
}

/// Runs the scenario's workload once against `target`; returns the figures and, for a target
/// with accounts, what each billed request should have cost.
pub async fn run_workload(
    client: &reqwest::Client,
    scenario: &Scenario,
    target: RunTarget,
    options: RunOptions,
) -> anyhow::Result<(RunResult, Vec<RequestRecord>)> {
    let warmup = scenario.warmup();
    let span = warmup + scenario.duration();
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let progress = Arc::new(Progress::default());
    let start = Instant::now() + Duration::from_millis(20);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        url: format!("{}/v1/messages", target.base_url),
        mix: Arc::new(Mix::new(&scenario.traffic)),
        mock: Arc::new(scenario.upstream.clone()),
        start,
        timeout: scenario.timeout(),
        tx,
        progress: Arc::clone(&progress),
        nonce_prefix: format!("lg{}", scenario.seed),
    });
    let target = Arc::new(target);

    let collector = tokio::spawn(async move {
        let mut recorder = RunRecorder::new(warmup);
        let mut records = Vec::new();
        while let Some(done) = rx.recv().await {
            recorder.record(&done.sample);
            records.extend(done.record);
        }
        (recorder, records)
    });
    let reporter = options.progress.then(|| {
        tokio::spawn(show_progress(
            target.name.clone(),
            Arc::clone(&progress),
            start,
            warmup,
            span,
        ))
    });

    let abuser_rate = scenario.abusers().map_or(0.0, |a| {
        f64::from(a.requests_per_minute) * a.multiplier / 60.0
    });
    let abusive_keys = target.abusers.len();
    let send_stats = match scenario.arrival.mode {
        LoopKind::Open => {
            let slots = schedule::schedule(
                scenario.arrival.rate,
                abusive_keys,
                abuser_rate,
                scenario.arrival.distribution,
                span,
                scenario.ramp(),
                scenario.seed,
            );
            dispatch(
                Arc::clone(&ctx),
                Arc::clone(&target),
                slots,
                scenario.arrival.max_in_flight,
                scenario.seed,
            )
            .await
        }
        LoopKind::Closed => {
            let end = start + span;
            let mut clients = Vec::new();
            for c in 0..scenario.arrival.concurrency {
                let Some(key) = target
                    .well_behaved
                    .get(c % target.well_behaved.len().max(1))
                    .cloned()
                else {
                    break;
                };
                clients.push(tokio::spawn(client_loop(
                    Arc::clone(&ctx),
                    key,
                    end,
                    scenario.seed,
                    c as u64 + 1,
                )));
            }
            let slots = schedule::schedule(
                0.0,
                abusive_keys,
                abuser_rate,
                scenario.arrival.distribution,
                span,
                scenario.ramp(),
                scenario.seed,
            );
            let abusers = dispatch(
                Arc::clone(&ctx),
                Arc::clone(&target),
                slots,
                scenario.arrival.max_in_flight,
                scenario.seed,
            );
            let stats = abusers.await;
            for client in clients {
                client.await?;
            }
            stats
        }
    };
    drop(ctx);
    let (recorder, records) = collector.await?;
    if let Some(reporter) = reporter {
        reporter.abort();
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
    let result = RunResult::new(&target.name, &recorder, scenario.duration(), send_stats);
    Ok((result, records))
}

/// The HTTP client of a run: pooled, without Nagle delays.
pub fn http_client(scenario: &Scenario) -> reqwest::Result<reqwest::Client> {
    let pool = match scenario.arrival.mode {
        LoopKind::Open => 256,
        LoopKind::Closed => scenario.arrival.concurrency.max(1) + 16,
    };
    reqwest::Client::builder()
        // Targets are named outright; a proxy from the environment would be measured too.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .build()
}
