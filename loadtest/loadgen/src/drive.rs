//! Driving a scenario: one run of the workload against one target (open loop with intended
//! send times, or closed loop), and [`run_scenario`], which chains preflight, provisioning,
//! the tollgate run, reconciliation and the reference runs.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};
use tollgate_actors::sse::{usage_from_message, UsageParser};
use tollgate_actors::Usage;

use super::mix::{Mix, RequestSpec};
use super::outcome::{RunResult, ScenarioReport};
use super::provision::{self, KeyInfo};
use super::reconcile::{self, Admin, RequestRecord};
use super::record::{Group, Outcome, RunRecorder, Sample};
use super::scenario::{Endpoints, LoopKind, Scenario};
use super::schedule::{self, Source};
use mock_anthropic::{planned_usage, Fate, MockConfig};

/// A send that leaves later than this after its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

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

struct Ctx {
    client: reqwest::Client,
    url: String,
    mix: Arc<Mix>,
    mock: Arc<MockConfig>,
    start: Instant,
    start_wall: DateTime<Utc>,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Done>,
    progress: Arc<Progress>,
    /// Makes the bodies of this run distinct from another scenario's with the same seed.
    nonce_prefix: String,
}

struct Done {
    sample: Sample,
    record: Option<RequestRecord>,
}

fn to_usage(p: &mock_anthropic::PlannedUsage) -> Usage {
    Usage {
        input_tokens: p.input_tokens,
        output_tokens: p.output_tokens,
        cache_read_tokens: p.cache_read_tokens,
        cache_write_5m_tokens: p.cache_write_5m_tokens,
        cache_write_1h_tokens: p.cache_write_1h_tokens,
        web_search_requests: p.web_search_requests,
        web_fetch_requests: 0,
    }
}

/// `error.type` of an Anthropic error body, or "".
fn error_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("type"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Whether `outcome` is the failure the mock planned (`fate`): the status it injects, the
/// `event: error` it ends a stream with, or the connection it cuts. Any other failure (one of
/// tollgate's own statuses, a timeout, an error where a cut was planned) is unexpected.
fn is_planned_failure(outcome: &Outcome, fate: Fate) -> bool {
    match (outcome, fate) {
        (Outcome::Status { status, .. }, Fate::Status(planned)) => *status == planned,
        (Outcome::StreamError(_), Fate::ErrorAfter(_)) => true,
        (Outcome::Cut, Fate::ResetAfter(_)) => true,
        _ => false,
    }
}

/// Sends one request and reads its answer. `intended` is the offset the latency counts from.
async fn execute(
    ctx: &Ctx,
    group: Group,
    key: &KeySlot,
    spec: RequestSpec,
    seq: u64,
    intended: Duration,
) -> Done {
    let body = ctx.mix.body(&spec, &format!("{}-{seq}", ctx.nonce_prefix));
    let plan = planned_usage(&ctx.mock, &body);
    let fate = plan.map_or(Fate::Complete, |p| p.fate);
    // Only requests the mock will complete are dropped on purpose: their whole usage is
    // then known in advance. A request fated to fail is read to its end instead.
    let disconnect_after = spec.disconnect_after.filter(|_| fate == Fate::Complete);

    let sent_offset = ctx.start.elapsed();
    let started_at = ctx.start_wall
        + chrono::Duration::from_std(sent_offset).unwrap_or_else(|_| chrono::Duration::zero());
    let deadline = Instant::now() + ctx.timeout;
    let mut request = ctx
        .client
        .post(&ctx.url)
        .header(CONTENT_TYPE, "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(body.clone());
    if let Some(header) = &key.header {
        request = request.header("x-api-key", header.clone());
    }

    let finish = |outcome: Outcome, first_byte: Option<Duration>, usage: Option<Usage>| {
        // A billed request that timed out with a fault planned: what tollgate billed is
        // unknown (it depends on where the upstream was when the client left).
        let unreconciled_timeout =
            outcome == Outcome::Timeout && fate != Fate::Complete && key.account_id.is_some();
        // A complete answer must report what the mock planned: checked here, independently
        // of tollgate's own parser.
        let usage_mismatch = outcome == Outcome::Ok
            && fate == Fate::Complete
            && plan.as_ref().is_some_and(|p| usage != Some(to_usage(p)));
        let upstream_fault = is_planned_failure(&outcome, fate);
        let record = match (&key.account_id, usage) {
            (Some(account_id), Some(usage)) => Some(RequestRecord {
                account_id: account_id.clone(),
                model: ctx.mix.model_name(spec.model).to_string(),
                started_at,
                usage,
            }),
            _ => None,
        };
        Done {
            sample: Sample {
                group,
                stream: spec.stream,
                intended,
                first_byte,
                done: ctx.start.elapsed(),
                outcome,
                upstream_fault,
                unreconciled_timeout,
                usage_mismatch,
            },
            record,
        }
    };

    // A response the client stopped reading (dropped on purpose, or timed out) is billed in
    // full by tollgate, which drains the upstream: the mock's plan says what that is. With a
    // fault planned, what was billed is unknown: no record (see `unreconciled_timeout`).
    let full = plan.as_ref().map(to_usage);
    let timed_out = |first_byte: Option<Duration>| {
        let usage = (fate == Fate::Complete).then(|| full.unwrap_or_default());
        finish(Outcome::Timeout, first_byte, usage)
    };
    let mut response = match timeout_at(deadline, request.send()).await {
        Err(_) => return timed_out(None),
        Ok(Err(e)) if e.is_timeout() => return timed_out(None),
        Ok(Err(_)) => return finish(Outcome::Network, None, None),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if status != 200 {
        let text = match timeout_at(deadline, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            _ => Default::default(),
        };
        let outcome = Outcome::Status {
            status,
            error_type: error_type(&text),
        };
        return finish(outcome, None, None);
    }

    let mut parser = spec.stream.then(UsageParser::new);
    let mut whole = Vec::new();
    let mut first_byte = None;
    let mut chunks = 0u32;
    let ended = loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => break Err(Outcome::Timeout),
            Ok(Err(_)) => break Err(Outcome::Cut),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(chunk))) => {
                first_byte.get_or_insert_with(|| ctx.start.elapsed());
                chunks += 1;
                match &mut parser {
                    Some(parser) => {
                        parser.feed(&chunk);
                    }
                    None => whole.extend_from_slice(&chunk),
                }
                if disconnect_after.is_some_and(|k| chunks >= k) {
                    // A stream whose `message_stop` already arrived is complete: dropping it
                    // now changes nothing.
                    if parser.as_ref().is_some_and(|p| p.completed()) {
                        break Ok(());
                    }
                    break Err(Outcome::Disconnected);
                }
            }
        }
    };
    match (ended, parser) {
        // Only requests fated to complete are dropped on purpose.
        (Err(Outcome::Disconnected), _) => finish(
            Outcome::Disconnected,
            first_byte,
            Some(full.unwrap_or_default()),
        ),
        (Err(Outcome::Timeout), _) => timed_out(first_byte),
        (Err(outcome), Some(parser)) => finish(outcome, first_byte, Some(parser.usage())),
        (Err(outcome), None) => finish(outcome, first_byte, usage_from_message(&whole)),
        (Ok(()), Some(parser)) => {
            let outcome = if parser.completed() {
                Outcome::Ok
            } else if parser.errored() {
                Outcome::StreamError(parser.error_type().unwrap_or_default().to_string())
            } else {
                Outcome::Cut
            };
            finish(outcome, first_byte, Some(parser.usage()))
        }
        (Ok(()), None) => match usage_from_message(&whole) {
            Some(usage) => finish(Outcome::Ok, first_byte, Some(usage)),
            None => finish(Outcome::Cut, first_byte, None),
        },
    }
}

fn note(ctx: &Ctx, done: Done) {
    ctx.progress.done.fetch_add(1, Ordering::Relaxed);
    if done.sample.outcome.is_failure() {
        ctx.progress.failed.fetch_add(1, Ordering::Relaxed);
    }
    // The collector outlives every sender; a closed channel only means the run is over.
    let _ = ctx.tx.send(done);
}

/// Open-loop statistics of the dispatcher.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SendStats {
    /// Requests sent from a schedule.
    pub scheduled: u64,
    /// Of those, sent more than [`LATE_AFTER`] after their intended time.
    pub late: u64,
    pub max_lag_ms: f64,
}

/// The request specs and sequence numbers of a schedule, drawn per source: each source
/// (well-behaved traffic, each abusive key) has its own seeded generator and its own counter,
/// so the well-behaved requests are the same whether abusers run beside them or not.
struct Draws {
    seed: u64,
    well_behaved: (StdRng, u64),
    abusers: Vec<(StdRng, u64)>,
}

impl Draws {
    fn new(seed: u64) -> Draws {
        Draws {
            seed,
            well_behaved: (
                StdRng::seed_from_u64(schedule::sub_seed(seed, 0xD15_7A7C)),
                0,
            ),
            abusers: Vec::new(),
        }
    }

    /// The next spec of `source` and its sequence number. Well-behaved requests are numbered
    /// from 0; abusive key `k`'s from `2^62 + (k + 1) × 2^40`, apart from every other range
    /// (closed-loop clients use `client × 2^40`, client ≥ 1, well below 2^62).
    fn next(&mut self, mix: &Mix, source: Source) -> (RequestSpec, u64) {
        let (rng, n, base) = match source {
            Source::WellBehaved => {
                let (rng, n) = &mut self.well_behaved;
                (rng, n, 0)
            }
            Source::Abuser(k) => {
                while self.abusers.len() <= k {
                    let stream = 0xAB05_0000_0000 + self.abusers.len() as u64;
                    let rng = StdRng::seed_from_u64(schedule::sub_seed(self.seed, stream));
                    self.abusers.push((rng, 0));
                }
                let base = (1u64 << 62) + ((k as u64 + 1) << 40);
                let (rng, n) = &mut self.abusers[k];
                (rng, n, base)
            }
        };
        let spec = mix.draw(rng);
        let seq = base.wrapping_add(*n);
        *n += 1;
        (spec, seq)
    }
}

/// Sends `slots` at their intended times, at most `max_in_flight` at once.
async fn dispatch(
    ctx: Arc<Ctx>,
    target: Arc<RunTarget>,
    slots: Vec<schedule::Slot>,
    max_in_flight: usize,
    seed: u64,
) -> SendStats {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut draws = Draws::new(seed);
    let mut stats = SendStats::default();
    let mut well_behaved_seq = 0usize;
    for slot in &slots {
        let (spec, seq) = draws.next(&ctx.mix, slot.source);
        let intended = ctx.start + slot.at;
        tokio::time::sleep_until(intended).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let lag = Instant::now().saturating_duration_since(intended);
        stats.scheduled += 1;
        stats.max_lag_ms = stats.max_lag_ms.max(lag.as_secs_f64() * 1000.0);
        if lag > LATE_AFTER {
            stats.late += 1;
            ctx.progress.late.fetch_add(1, Ordering::Relaxed);
        }
        let (group, key) = match slot.source {
            Source::WellBehaved => {
                let n = target.well_behaved.len().max(1);
                let key = well_behaved_seq % n;
                well_behaved_seq += 1;
                (Group::WellBehaved, target.well_behaved.get(key))
            }
            Source::Abuser(k) => (Group::Abuser, target.abusers.get(k)),
        };
        let Some(key) = key.cloned() else { continue };
        ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
        let ctx = Arc::clone(&ctx);
        let at = slot.at;
        tokio::spawn(async move {
            let done = execute(&ctx, group, &key, spec, seq, at).await;
            drop(permit);
            note(&ctx, done);
        });
    }
    // Every request has returned its permit once all of them can be taken back.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    stats
}

/// One closed-loop client: sends back to back until `end`; latency counts from the send.
async fn client_loop(ctx: Arc<Ctx>, key: KeySlot, end: Instant, seed: u64, client: u64) {
    let mut rng = StdRng::seed_from_u64(schedule::sub_seed(seed, 0xC11E_0000 + client));
    let mut n = 0u64;
    while Instant::now() < end {
        let spec = ctx.mix.draw(&mut rng);
        let intended = ctx.start.elapsed();
        ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
        // Sequence numbers of clients never meet: each has its own range.
        let seq = (client << 40) + n;
        n += 1;
        let done = execute(&ctx, Group::WellBehaved, &key, spec, seq, intended).await;
        let failed = matches!(done.sample.outcome, Outcome::Network);
        note(&ctx, done);
        if failed {
            // A refused connection fails at once; do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
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
        start_wall: Utc::now() + chrono::Duration::milliseconds(20),
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

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// Runs a whole scenario: preflight (nothing is provisioned if tollgate, the admin token or a
/// reference target fails it), tenants, the tollgate run, reconciliation (when the scenario
/// asks for it; `endpoints.database_url` is then required), then the same workload
/// against the references (`direct`, `passthrough`) when given.
///
/// Callable from any multi-threaded tokio runtime, actix's included.
pub async fn run_scenario(
    scenario: &Scenario,
    endpoints: &Endpoints,
) -> anyhow::Result<ScenarioReport> {
    run_scenario_with(scenario, endpoints, RunOptions { progress: true }).await
}

/// [`run_scenario`] with options.
pub async fn run_scenario_with(
    scenario: &Scenario,
    endpoints: &Endpoints,
    options: RunOptions,
) -> anyhow::Result<ScenarioReport> {
    scenario.validate()?;
    if scenario.reconcile && endpoints.database_url.is_none() {
        anyhow::bail!("the scenario reconciles (reconcile: true) but no --database-url was given");
    }
    let client = http_client(scenario)?;
    let tollgate = trim(&endpoints.tollgate);
    let mut references = Vec::new();
    if scenario.baseline {
        if let Some(direct) = &endpoints.direct {
            references.push(("direct".to_string(), trim(direct)));
        }
        if let Some(passthrough) = &endpoints.passthrough {
            references.push(("passthrough".to_string(), trim(passthrough)));
        }
    }
    let database_url = endpoints
        .database_url
        .as_deref()
        .filter(|_| scenario.reconcile);
    provision::preflight(
        &client,
        &tollgate,
        &endpoints.admin_token,
        &references,
        database_url,
    )
    .await?;

    let started = Utc::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let run_id = run_id.get(..12).unwrap_or(&run_id).to_string();
    let provisioned = provision::provision(
        &client,
        &tollgate,
        &endpoints.admin_token,
        scenario,
        &run_id,
    )
    .await?;
    if options.progress {
        eprintln!(
            "{}: provisioned {} account(s), {} well-behaved and {} abusive key(s)",
            scenario.name,
            provisioned.tenants.len(),
            provisioned.well_behaved.len(),
            provisioned.abusers.len()
        );
    }
    let target = RunTarget {
        name: "tollgate".into(),
        base_url: tollgate.clone(),
        well_behaved: provisioned
            .well_behaved
            .iter()
            .map(KeySlot::of)
            .collect::<anyhow::Result<_>>()?,
        abusers: provisioned
            .abusers
            .iter()
            .map(KeySlot::of)
            .collect::<anyhow::Result<_>>()?,
    };
    let (tollgate_run, records) = run_workload(&client, scenario, target, options).await?;

    let reconciliation = match (&endpoints.database_url, scenario.reconcile) {
        (Some(database_url), true) => {
            if options.progress {
                eprintln!(
                    "{}: reconciling {} billed requests",
                    scenario.name,
                    records.len()
                );
            }
            let admin = Admin {
                base_url: tollgate.clone(),
                token: endpoints.admin_token.clone(),
            };
            Some(
                reconcile::reconcile(
                    &client,
                    &admin,
                    database_url,
                    &provisioned.tenants,
                    &records,
                )
                .await?,
            )
        }
        _ => {
            if options.progress {
                eprintln!("reconciliation: skipped (reconcile: false)");
            }
            None
        }
    };

    let mut reference_runs = Vec::new();
    for (name, url) in references {
        let anonymous = KeySlot::anonymous(scenario.upstream.api_key.as_deref())?;
        let target = RunTarget {
            name,
            base_url: url,
            well_behaved: vec![anonymous.clone()],
            abusers: vec![anonymous; provisioned.abusers.len()],
        };
        let (run, _) = run_workload(&client, scenario, target, options).await?;
        reference_runs.push(run);
    }

    Ok(ScenarioReport::new(
        scenario,
        started,
        Utc::now(),
        provisioned.tenants.len(),
        records.len(),
        tollgate_run,
        reference_runs,
        reconciliation,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Group;
    use mock_anthropic::MockServer;

    fn scenario(yaml_tail: &str) -> Scenario {
        let text = format!(
            r#"
name: unit
seed: 9
duration_secs: 1
warmup_secs: 0
timeout_secs: 10
traffic:
  stream_share: 0.5
  models: [{{ name: claude-sonnet-5-5 }}]
  prompt_bytes: {{ min: 10, max: 100 }}
  max_tokens: 8
  disconnect_share: 0.2
  disconnect_after_chunks: 1
tenants: {{ accounts: 1, balance_usd: "1" }}
upstream: {{ ttft_ms: 40, output_tokens: 4, seed: 1 }}
{yaml_tail}"#
        );
        Scenario::from_yaml(&text).unwrap()
    }

    fn anonymous_target(url: &str) -> RunTarget {
        RunTarget {
            name: "mock".into(),
            base_url: url.into(),
            well_behaved: vec![KeySlot::anonymous(None).unwrap()],
            abusers: Vec::new(),
        }
    }

    /// Runs `s`'s workload straight against a mock configured with `upstream`.
    async fn run_on_mock(
        s: &Scenario,
        upstream: mock_anthropic::MockConfig,
    ) -> (RunResult, Vec<RequestRecord>) {
        let mock = MockServer::start(upstream, "127.0.0.1:0").await.unwrap();
        let client = http_client(s).unwrap();
        let run = run_workload(
            &client,
            s,
            anonymous_target(&mock.base_url()),
            RunOptions { progress: false },
        )
        .await
        .unwrap();
        mock.stop().await;
        run
    }

    /// The well-behaved bodies of an open-loop scenario, in schedule order.
    fn well_behaved_bodies(s: &Scenario) -> Vec<bytes::Bytes> {
        let mix = Mix::new(&s.traffic);
        let keys = s.abusers().map_or(0, |a| a.accounts * a.keys_per_account);
        let rate = s.abusers().map_or(0.0, |a| {
            f64::from(a.requests_per_minute) * a.multiplier / 60.0
        });
        let slots = schedule::schedule(
            s.arrival.rate,
            keys,
            rate,
            s.arrival.distribution,
            s.warmup() + s.duration(),
            s.ramp(),
            s.seed,
        );
        let mut draws = Draws::new(s.seed);
        let mut bodies = Vec::new();
        for slot in &slots {
            let (spec, seq) = draws.next(&mix, slot.source);
            if slot.source == Source::WellBehaved {
                bodies.push(mix.body(&spec, &format!("lg{}-{seq}", s.seed)));
            }
        }
        bodies
    }

    #[test]
    fn abusers_do_not_change_the_well_behaved_requests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let abuse = Scenario::load(&dir.join("abuse.yaml")).unwrap();
        let none = Scenario::load(&dir.join("abuse-none.yaml")).unwrap();
        assert!(abuse.abusers().is_some() && none.abusers().is_none());
        let with = well_behaved_bodies(&abuse);
        let without = well_behaved_bodies(&none);
        assert!(with.len() > 1000, "{}", with.len());
        assert!(with == without, "the well-behaved requests differ");
    }

    #[test]
    fn only_the_planned_failure_is_expected() {
        let status = |status: u16| Outcome::Status {
            status,
            error_type: String::new(),
        };
        assert!(is_planned_failure(&status(529), Fate::Status(529)));
        assert!(!is_planned_failure(&status(429), Fate::Status(529)));
        assert!(!is_planned_failure(&status(502), Fate::ErrorAfter(3)));
        assert!(!is_planned_failure(&status(429), Fate::Complete));
        assert!(is_planned_failure(
            &Outcome::StreamError("overloaded_error".into()),
            Fate::ErrorAfter(0)
        ));
        assert!(!is_planned_failure(
            &Outcome::StreamError(String::new()),
            Fate::ResetAfter(2)
        ));
        assert!(is_planned_failure(&Outcome::Cut, Fate::ResetAfter(2)));
        assert!(!is_planned_failure(&Outcome::Cut, Fate::ErrorAfter(2)));
        for fate in [Fate::Status(500), Fate::ErrorAfter(1), Fate::ResetAfter(1)] {
            assert!(!is_planned_failure(&Outcome::Timeout, fate));
            assert!(!is_planned_failure(&Outcome::Network, fate));
            assert!(!is_planned_failure(&Outcome::Ok, fate));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_latency_counts_from_the_intended_time() {
        // 40 ms per answer, one in flight, one request every 25 ms: the queue grows, and the
        // latency measured from the intended send time must show it (no coordinated omission).
        let s =
            scenario("arrival: { mode: open, rate: 40, distribution: constant, max_in_flight: 1 }");
        let (run, records) = run_on_mock(&s, s.upstream.clone()).await;
        assert!(records.is_empty(), "no accounts, no records");
        assert_eq!(run.sends.scheduled, 40);
        assert!(run.sends.late >= 20, "late sends {}", run.sends.late);
        let requests: u64 = run.classes.iter().map(|c| c.requests).sum();
        assert_eq!(requests, 40);
        let all = &run.well_behaved["all"].total;
        // The last request was due at 975 ms but could only start after ~39 × 40 ms.
        assert!(all.max_us > 500_000, "max {} µs", all.max_us);
        assert!(all.p50_us > 100_000, "p50 {} µs", all.p50_us);
        let drops: u64 = run.classes.iter().map(|c| c.disconnected).sum();
        assert!(drops > 0);
        assert!(run
            .classes
            .iter()
            .all(|c| c.group == Group::WellBehaved && c.failures == 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_runs_its_clients() {
        let s = scenario("arrival: { mode: closed, concurrency: 2 }");
        let (run, _) = run_on_mock(&s, s.upstream.clone()).await;
        let requests: u64 = run.classes.iter().map(|c| c.requests).sum();
        // Two clients, 40 ms each, for one second: about 50 requests, and never more than the
        // two clients can send back to back. (Only bounded loosely below: a loaded machine
        // slows the clients, and that is not what this test is about.)
        assert!((4..=60).contains(&requests), "{requests}");
        let all = &run.well_behaved["all"].total;
        assert!(
            all.p50_us >= 40_000 && all.p50_us < 100_000,
            "p50 {}",
            all.p50_us
        );
        assert!(!run.series.is_empty());
        assert_eq!(run.usage_mismatches, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_that_differs_from_the_plan_is_counted() {
        // The scenario plans 4 output tokens; the mock actually reports 5.
        let s = scenario("arrival: { mode: closed, concurrency: 2 }");
        let mut upstream = s.upstream.clone();
        upstream.output_tokens = 5;
        let (run, _) = run_on_mock(&s, upstream).await;
        let ok: u64 = run.classes.iter().map(|c| c.ok).sum();
        assert!(ok > 0);
        assert!(
            run.usage_mismatches >= ok,
            "{} of {ok}",
            run.usage_mismatches
        );
    }
}
