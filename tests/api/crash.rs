//! `kill -9` at random moments under load (issue 10, docs/adr/0019-write-ahead-journal.md).
//!
//! The real `tollgate serve` binary is killed with SIGKILL again and again while clients keep
//! sending streaming and non-streaming requests, and restarted each time on the same database
//! and journal. With `metering.durable_before_reply` on, every request whose client received
//! a complete answer must end up with exactly one usage row; with it off the loss is measured
//! and must stay small. Either way every account's books reconcile exactly.

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_anthropic::MockConfig;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::*;

/// Client tasks sending requests at once.
const CLIENTS: usize = 12;
/// Accounts the clients share, round robin.
const CUSTOMERS: usize = 4;
/// How long after `/healthz` answers the process is killed: drawn uniformly in this range.
const KILL_AFTER_MS: std::ops::Range<u64> = 150..700;
/// The longest a start may take, replay included, before the test fails with its log.
const START_BOUND: Duration = Duration::from_secs(20);
/// How long the last instance serves before the graceful stop.
const LAST_RUN: Duration = Duration::from_millis(400);

/// The kind of request a client sends, drawn for each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Non-streaming, answered at once by the mock.
    Message,
    /// A stream of 8 tokens without delay.
    FastStream,
    /// A stream of 16 tokens, 15 ms apart: about a quarter of a second, so that kills land
    /// in the middle of some.
    SlowStream,
}

impl Kind {
    fn draw() -> Kind {
        match rand::thread_rng().gen_range(0..10) {
            0..=4 => Kind::Message,
            5..=7 => Kind::FastStream,
            _ => Kind::SlowStream,
        }
    }

    fn body(self) -> Value {
        let (stream, mock) = match self {
            Kind::Message => (false, json!({"input_tokens": 40, "output_tokens": 8})),
            Kind::FastStream => (true, json!({"input_tokens": 40, "output_tokens": 8})),
            Kind::SlowStream => (
                true,
                json!({"input_tokens": 40, "output_tokens": 16, "inter_token_ms": 15}),
            ),
        };
        message_body("claude-haiku-5-5", 16, stream, mock)
    }
}

/// A request whose client received a complete answer.
#[derive(Debug, Clone)]
struct Answered {
    /// As the usage table holds it: the `request-id` header without its `req_`.
    request_id: Uuid,
    kind: Kind,
    /// When the client had the whole answer.
    at: Instant,
    /// Which instance (0-based start) answered it.
    run: usize,
}

/// What the clients saw, shared by them and the test.
#[derive(Default)]
struct Tally {
    answered: Mutex<Vec<Answered>>,
    /// Requests sent to a running instance (answered or not).
    sent: AtomicU64,
    /// 200s that ended before their answer was whole (streams cut by a kill, mostly).
    incomplete: AtomicU64,
    /// Refused, failed to connect, or any status but 200.
    failed: AtomicU64,
}

/// Where the instance of the moment listens, and which start it is; `None` between a kill
/// and the next start.
type Target = Option<(String, usize)>;

/// Sends requests of random kinds for `customer` to whatever instance is running, until
/// `stop`; counts a request as answered only once its whole answer arrived.
async fn client(
    http: reqwest::Client,
    customer: Arc<Customer>,
    target: watch::Receiver<Target>,
    tally: Arc<Tally>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let Some((base, run)) = target.borrow().clone() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let kind = Kind::draw();
        tally.sent.fetch_add(1, Ordering::Relaxed);
        match send(&http, &base, &customer.key, kind).await {
            Sent::Answered(request_id) => tally.answered.lock().unwrap().push(Answered {
                request_id,
                kind,
                at: Instant::now(),
                run,
            }),
            Sent::Incomplete => {
                tally.incomplete.fetch_add(1, Ordering::Relaxed);
            }
            Sent::Failed => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                // A killed instance refuses connections at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

enum Sent {
    Answered(Uuid),
    Incomplete,
    Failed,
}

/// One request. Answered: a 200 whose whole JSON message was read, or a 200 stream that
/// carried `message_stop` (even if its connection broke after it).
async fn send(http: &reqwest::Client, base: &str, key: &str, kind: Kind) -> Sent {
    let sent = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&kind.body())
        .send()
        .await;
    let Ok(response) = sent else {
        return Sent::Failed;
    };
    if response.status() != 200 {
        return Sent::Failed;
    }
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("req_"))
        .map(|hex| Uuid::parse_str(hex).unwrap())
        .expect("a 200 carries its request-id");
    let whole = if kind == Kind::Message {
        response
            .json::<Value>()
            .await
            .is_ok_and(|message| message["type"] == "message")
    } else {
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(Ok(chunk)) = chunks.next().await {
            body.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&body).contains("event: message_stop")
    };
    if whole {
        Sent::Answered(request_id)
    } else {
        Sent::Incomplete
    }
}

/// A started instance: the process, its base URL, and the thread that collects its log.
type Started = (Child, String, std::thread::JoinHandle<String>);

/// Starts `tollgate serve` on the test's database and journal, with `env` added and its log
/// collected, and waits until it answers `/healthz`. Fails with its log if it exits first or
/// takes longer than `START_BOUND`.
///
/// The port is free when drawn, but the clients' thousands of connections take ephemeral
/// ports from the same range, and one may take it before the process binds it: a start
/// refused with "Address already in use" is tried again on another port.
async fn start(app: &TestApp, env: &[(&str, &str)]) -> Started {
    for _ in 0..5 {
        match start_on(app, env, free_port()).await {
            Ok(started) => return started,
            Err(log) if log.contains("Address already in use") => continue,
            Err(log) => panic!("tollgate serve exited before it answered; log:\n{log}"),
        }
    }
    panic!("tollgate serve found no free port in 5 tries");
}

/// One try of [`start`] on `port`: the instance, or the log of a process that exited.
async fn start_on(app: &TestApp, env: &[(&str, &str)], port: u16) -> Result<Started, String> {
    use std::io::Read;
    let mut command = app.serve_command(&format!("127.0.0.1:{port}"));
    command
        // Start-up's info lines say how many records each replay billed.
        .env("RUST_LOG", "warn,tollgate::startup=info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let base = format!("http://127.0.0.1:{port}");
    let began = Instant::now();
    while began.elapsed() < START_BOUND {
        let health = app.http.get(format!("{base}/healthz")).send().await;
        // Looked at after the answer: a process that already exited (its port held by
        // something else) did not give it.
        if child.try_wait().unwrap().is_some() {
            return Err(log.join().unwrap());
        }
        if health.is_ok() {
            return Ok((child, base, log));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "tollgate serve did not answer within {START_BOUND:?}; log:\n{}",
        log.join().unwrap()
    );
}

/// What a crash loop measured, checked against Postgres.
struct CrashReport {
    answered: Vec<Answered>,
    kills: Vec<Instant>,
    /// Usage rows of the whole run (answered or not: interrupted streams are billed too).
    rows: i64,
    /// Answered requests without a usage row.
    lost: Vec<Answered>,
    /// Request ids with more than one usage row.
    duplicated: i64,
    /// Every instance's log, in order.
    logs: Vec<String>,
}

impl CrashReport {
    /// Records that only the journal saved: those a start replayed that the ledger did not
    /// hold yet, summed over every start.
    fn recovered(&self) -> u64 {
        self.logs
            .iter()
            .flat_map(|log| log.lines())
            .filter(|line| line.contains("journal replayed"))
            .filter_map(|line| {
                let count = line.split_once(" new=")?.1.split(' ').next()?;
                count.parse::<u64>().ok()
            })
            .sum()
    }

    /// How many answers each run lost, in order of the runs.
    fn lost_per_run(&self) -> Vec<usize> {
        (0..=self.kills.len())
            .map(|run| self.lost.iter().filter(|lost| lost.run == run).count())
            .collect()
    }

    /// For each lost request: how long before the next kill its answer arrived.
    fn lost_before_kill(&self) -> Vec<Duration> {
        self.lost
            .iter()
            .map(|lost| {
                self.kills.get(lost.run).map_or(Duration::MAX, |kill| {
                    kill.saturating_duration_since(lost.at)
                })
            })
            .collect()
    }

    /// The lines of the logs that name a lost request, for a failure's message.
    fn log_lines_of_lost(&self) -> String {
        let ids: Vec<String> = self
            .lost
            .iter()
            .map(|lost| lost.request_id.to_string())
            .collect();
        self.logs
            .iter()
            .enumerate()
            .flat_map(|(run, log)| {
                log.lines()
                    .filter(|line| ids.iter().any(|id| line.contains(id.as_str())))
                    .map(move |line| format!("run {run}: {line}"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Funds the customers, then kills the real binary `kills` times at random moments under
/// load, restarting it on the same database and journal each time; stops the last instance
/// gracefully, and reads what Postgres holds. `env` is added to every start.
async fn crash_loop(kills: usize, env: &[(&str, &str)]) -> CrashReport {
    let mock = MockConfig {
        workers: 2,
        ..MockConfig::default()
    };
    let mut app = spawn_app_with(mock, |_| {}).await;
    let mut customers = Vec::new();
    for _ in 0..CUSTOMERS {
        customers.push(Arc::new(app.customer("100").await));
    }
    // The in-process instance is only for provisioning: stop it, so that the binary has the
    // journal to itself.
    app.server.stop(true).await;
    (&mut app.stopped).await.unwrap().unwrap();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let (target, watched) = watch::channel::<Target>(None);
    let stop = CancellationToken::new();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            actix_web::rt::spawn(client(
                http.clone(),
                Arc::clone(&customers[n % CUSTOMERS]),
                watched.clone(),
                Arc::clone(&tally),
                stop.clone(),
            ))
        })
        .collect();

    let mut killed = Vec::new();
    let mut logs = Vec::new();
    let mut slowest_start = Duration::ZERO;
    for run in 0..kills {
        let began = Instant::now();
        let (mut child, base, log) = start(&app, env).await;
        slowest_start = slowest_start.max(began.elapsed());
        target.send_replace(Some((base, run)));
        let delay = rand::thread_rng().gen_range(KILL_AFTER_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // `Child::kill` is SIGKILL on Unix.
        child.kill().unwrap();
        killed.push(Instant::now());
        target.send_replace(None);
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        logs.push(log.join().unwrap());
    }

    // The last start replays the last kill's journal; it serves a while, the clients stop,
    // and it is stopped gracefully: what it settled is flushed.
    let (child, base, log) = start(&app, env).await;
    target.send_replace(Some((base, kills)));
    tokio::time::sleep(LAST_RUN).await;
    stop.cancel();
    for client in clients {
        client.await.unwrap();
    }
    sigterm_and_wait(child).await;
    logs.push(log.join().unwrap());

    let answered = tally.answered.lock().unwrap().clone();
    let of_kind = |kind| answered.iter().filter(|answer| answer.kind == kind).count();
    println!(
        "sent {}, answered {} ({} messages, {} fast streams, {} slow streams), incomplete {}, failed {}; slowest restart {slowest_start:?}",
        tally.sent.load(Ordering::Relaxed),
        answered.len(),
        of_kind(Kind::Message),
        of_kind(Kind::FastStream),
        of_kind(Kind::SlowStream),
        tally.incomplete.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );

    let db = app.db().await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM usage", &[])
        .await
        .unwrap()
        .get(0);
    let duplicated: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT request_id FROM usage GROUP BY request_id HAVING count(*) > 1) AS twice",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let ids: Vec<Uuid> = answered.iter().map(|answer| answer.request_id).collect();
    let stored: Vec<Uuid> = db
        .query(
            "SELECT request_id FROM usage WHERE request_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let stored: std::collections::HashSet<Uuid> = stored.into_iter().collect();
    let lost = answered
        .iter()
        .filter(|answer| !stored.contains(&answer.request_id))
        .cloned()
        .collect();

    for customer in &customers {
        app.books(&customer.id).await.assert_reconciled();
    }
    CrashReport {
        answered,
        kills: killed,
        rows,
        lost,
        duplicated,
        logs,
    }
}

#[actix_web::test]
async fn every_answered_request_is_billed_exactly_once_across_kill_9s() {
    let report = crash_loop(20, &[]).await;
    println!(
        "durable_before_reply=true: answered {}, kills {}, usage rows {}, recovered from the journal {}, lost {}, duplicated {}",
        report.answered.len(),
        report.kills.len(),
        report.rows,
        report.recovered(),
        report.lost.len(),
        report.duplicated,
    );
    // Enough traffic that kills met requests under way, not an idle process, and kills
    // that left settles only the journal held: without it, those were lost.
    assert!(report.answered.len() >= 100, "{}", report.answered.len());
    assert!(report.recovered() > 0, "no kill left anything to replay");
    assert!(report.rows >= report.answered.len() as i64);
    assert_eq!(report.duplicated, 0);
    assert!(
        report.lost.is_empty(),
        "answered but never billed: {:?}\nbefore their run's kill by: {:?}\nlog lines:\n{}",
        report.lost,
        report.lost_before_kill(),
        report.log_lines_of_lost(),
    );
}

#[actix_web::test]
async fn without_durable_replies_a_kill_9_loses_only_the_answers_just_before_it() {
    let report = crash_loop(10, &[("TOLLGATE__METERING__DURABLE_BEFORE_REPLY", "false")]).await;
    let before_kill = report.lost_before_kill();
    println!(
        "durable_before_reply=false: answered {}, kills {}, usage rows {}, recovered from the journal {}, lost {} (per run {:?}), duplicated {}, lost answered before their kill by at most {:?}",
        report.answered.len(),
        report.kills.len(),
        report.rows,
        report.recovered(),
        report.lost.len(),
        report.lost_per_run(),
        report.duplicated,
        before_kill.iter().max(),
    );
    assert!(report.answered.len() >= 100, "{}", report.answered.len());
    assert_eq!(report.duplicated, 0);
    // Without the wait, an answer goes out as soon as its settle is queued for the journal.
    // A kill -9 loses the settles the journal's thread had not written yet (a killed
    // process's writes survive in the page cache: here the write matters, not the sync) and
    // the flusher had not stored yet (every 100 ms). Those are the settles of the commit
    // being gathered (1 ms) and of however long the previous commit's fdatasync takes: a
    // millisecond or two, but tens of ms at times on this shared disk, and more when the
    // thread is starved of CPU. Measured (2026-12-02): most runs lose 0 to 22 answers in 10
    // kills, one lost 65 (answered up to 310 ms before its kill). The bound allows every
    // client one lost answer per kill: loose, yet a journal that saved nothing fails it
    // (with the journal off, 10 kills lost 137 to 216 answers).
    assert!(
        report.lost.len() <= report.kills.len() * CLIENTS,
        "lost {} of {} answers",
        report.lost.len(),
        report.answered.len()
    );
    // Only answers from just before a kill, and none by the graceful stop: one answered a
    // flush interval earlier is in Postgres whatever the journal did. A second leaves room
    // for a slow flush on a loaded machine.
    assert!(
        before_kill.iter().all(|gap| *gap < Duration::from_secs(1)),
        "{before_kill:?}"
    );
}
