//! The write-ahead journal end to end (docs/adr/0019-write-ahead-journal.md): the real
//! `tollgate serve` binary, killed or starved of Postgres or disk, and started again on the
//! same database and journal.

use std::collections::HashSet;
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::pg_fault::PgRelay;

/// What the clients of a test saw.
#[derive(Default)]
struct Seen {
    /// Request ids (the usage table's form) of the answers received whole.
    answered: HashSet<uuid::Uuid>,
    /// The messages of the 529s received.
    refusals: Vec<String>,
}

/// A small non-streaming request: answered whole in a few milliseconds.
fn small_request() -> Value {
    message_body(
        "claude-haiku-4-5",
        20,
        false,
        json!({"input_tokens": 30, "output_tokens": 10}),
    )
}

/// The usage table's request id of a `request-id` header (`req_<simple hex>`).
fn request_uuid(header: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(header.strip_prefix("req_").unwrap()).unwrap()
}

/// Sends one request to `base`; records it in `seen` if it was answered whole, or refused
/// with 529. Anything else (the process killed under it) counts as neither.
async fn send_one(app: &TestApp, base: &str, key: &str, seen: &Mutex<Seen>) {
    let Ok(response) = app.messages_at(base, key, &small_request()).send().await else {
        return;
    };
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("request-id")
        .and_then(|id| id.to_str().ok())
        .map(request_uuid);
    let Ok(body) = response.json::<Value>().await else {
        return;
    };
    let mut seen = seen.lock().unwrap();
    match (status, id) {
        (200, Some(id)) if body["usage"]["output_tokens"].is_number() => {
            seen.answered.insert(id);
        }
        (529, _) => seen
            .refusals
            .push(body["error"]["message"].as_str().unwrap_or("").to_owned()),
        _ => {}
    }
}

/// Usage rows of each request id in `ids` (absent: none).
async fn usage_rows(app: &TestApp) -> std::collections::HashMap<uuid::Uuid, i64> {
    let db = app.db().await;
    db.query(
        "SELECT request_id, count(*) FROM usage GROUP BY request_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect()
}

/// Every answered request has exactly one usage row, and every account's books reconcile.
async fn assert_every_answer_billed_once(
    app: &TestApp,
    answered: &HashSet<uuid::Uuid>,
    customers: &[&Customer],
) {
    let rows = usage_rows(app).await;
    let lost: Vec<_> = answered
        .iter()
        .filter(|id| !rows.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no usage row: {lost:?}",
        lost.len(),
        answered.len()
    );
    // A second row of a request cannot exist (`request_id` is the usage table's key); a
    // debit counted twice would show as books that do not reconcile.
    for customer in customers {
        app.books(&customer.id).await.assert_reconciled();
    }
}

/// What was answered so far.
fn answered_now(seen: &Mutex<Seen>) -> HashSet<uuid::Uuid> {
    seen.lock().unwrap().answered.clone()
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The binary's stderr, read to its end on a thread of its own.
fn capture_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

#[actix_web::test]
async fn postgres_down_20_s_under_load_then_a_kill_loses_and_duplicates_nothing() {
    let relay = PgRelay::start("127.0.0.1:5432").await;
    let mut app = spawn_app().await;
    let customers = [app.customer("20").await, app.customer("20").await];
    let relayed = relay.url_of(&app.db.url);
    // A journal of two 64 KiB segments at most: about 600 records fill it while Postgres is
    // down, and the flusher's own bound stays out of the way.
    let (mut child, base) = app
        .serve_binary_instead_with(|command| {
            command
                .env("TOLLGATE__DATABASE__URL", &relayed)
                .env("TOLLGATE__METERING__JOURNAL_SEGMENT_BYTES", "65536")
                .env("TOLLGATE__METERING__JOURNAL_MAX_BYTES", "131072")
                .env("TOLLGATE__DATABASE__POOL_SIZE", "4");
        })
        .await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let load = |base: String| {
        let clients: Vec<_> = (0..8)
            .map(|n| {
                let key = customers[n % 2].key.clone();
                let (seen, base, app) = (seen.clone(), base.clone(), &app);
                async move {
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    while tokio::time::Instant::now() < until {
                        send_one(app, &base, &key, &seen).await;
                        // Refusals come back at once: paced, so as not to spin.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
            .collect();
        futures_util::future::join_all(clients)
    };
    load(base.clone()).await;
    let before_outage = seen.lock().unwrap().answered.len();
    assert!(before_outage > 0);

    // Postgres stops for 20 s under load; tollgate answers from memory until its journal is
    // full, then refuses with 529; it is killed during the outage.
    relay.go_down();
    for _ in 0..19 {
        load(base.clone()).await;
    }
    let health: Value = app
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sigkill(&mut child);
    relay.come_up();
    let (answered, refusals) = {
        let seen = seen.lock().unwrap();
        (seen.answered.len(), seen.refusals.clone())
    };
    assert!(
        answered > before_outage,
        "nothing answered during the outage"
    );
    assert!(
        refusals.iter().any(|m| m.contains("usage journal")),
        "no 529 for the full journal: {refusals:?}"
    );
    assert_eq!(health["database"], "unreachable", "{health}");
    assert_eq!(health["journal"], "full", "{health}");
    let stored = usage_rows(&app).await;
    let unflushed_at_kill = answered_now(&seen)
        .iter()
        .filter(|id| !stored.contains_key(id))
        .count();
    assert!(unflushed_at_kill > 100, "{unflushed_at_kill}");

    // Started again on a Postgres that answers: the journal is replayed before it serves.
    let (next, next_base) = app.serve_binary(|_| {}).await;
    assert_every_answer_billed_once(&app, &answered_now(&seen), &[&customers[0], &customers[1]])
        .await;
    // The replayed journal was checkpointed away: requests are admitted again.
    send_one(&app, &next_base, &customers[0].key, &seen).await;
    assert_eq!(seen.lock().unwrap().answered.len(), answered + 1);
    sigterm_and_wait(next).await;
    assert_every_answer_billed_once(&app, &answered_now(&seen), &[&customers[0], &customers[1]])
        .await;
}

#[actix_web::test]
async fn a_torn_or_flipped_last_record_replays_every_good_record_and_says_what_it_cut() {
    let relay = PgRelay::start("127.0.0.1:5432").await;
    let mut app = spawn_app().await;
    let customer = app.customer("20").await;
    let relayed = relay.url_of(&app.db.url);
    app.server.stop(true).await;
    (&mut app.stopped).await.unwrap().unwrap();
    for damage in ["truncated", "flipped"] {
        let (mut child, base) = app
            .serve_binary(|command| {
                command.env("TOLLGATE__DATABASE__URL", &relayed);
            })
            .await;
        // One request loads the account's actor while Postgres answers; then five are
        // answered, journaled and never flushed. The last is the one damaged.
        let seen = Mutex::new(Seen::default());
        send_one(&app, &base, &customer.key, &seen).await;
        relay.go_down();
        let mut last = None;
        for _ in 0..5 {
            let before: HashSet<_> = seen.lock().unwrap().answered.clone();
            send_one(&app, &base, &customer.key, &seen).await;
            last = seen
                .lock()
                .unwrap()
                .answered
                .difference(&before)
                .next()
                .copied();
        }
        sigkill(&mut child);
        relay.come_up();
        let answered = seen.into_inner().unwrap().answered;
        assert_eq!(answered.len(), 6, "{damage}");
        let last = last.unwrap();

        // The last segment's records end in the fifth: damage it. Zeros follow the records
        // of a preallocated segment; the record's own last bytes may be zeros too, so the
        // damage is placed well inside it.
        let segment = last_segment(&app.db.journal_dir);
        let mut bytes = std::fs::read(&segment).unwrap();
        let end = bytes.len() - bytes.iter().rev().take_while(|&&b| b == 0).count();
        match damage {
            "truncated" => bytes.truncate(end - 7),
            _ => {
                let at = end - 20;
                bytes[at] ^= 0x40;
            }
        }
        std::fs::write(&segment, &bytes).unwrap();

        let (mut next, next_base) = app
            .serve_binary(|command| {
                command
                    .env("RUST_LOG", "warn")
                    .env("NO_COLOR", "1")
                    .stderr(Stdio::piped());
            })
            .await;
        let log = capture_stderr(&mut next);
        let rows = usage_rows(&app).await;
        let unbilled: Vec<_> = answered
            .iter()
            .filter(|id| !rows.contains_key(id))
            .collect();
        assert_eq!(
            unbilled,
            [&last],
            "{damage}: every record before the damaged one replays"
        );
        app.books(&customer.id).await.assert_reconciled();
        // Serves again, on a journal whose damaged tail is gone.
        let seen = Mutex::new(Seen::default());
        send_one(&app, &next_base, &customer.key, &seen).await;
        assert_eq!(seen.into_inner().unwrap().answered.len(), 1, "{damage}");
        sigterm_and_wait(next).await;
        let log = log.join().unwrap();
        assert!(
            log.contains("the journal ended in a write that never finished (a crash): cut off"),
            "{damage}: the cut is not reported:\n{log}"
        );
    }
}

#[actix_web::test]
async fn a_journal_that_cannot_be_written_refuses_new_requests_and_bills_what_it_answered() {
    let mut app = spawn_app().await;
    let customer = app.customer("20").await;
    // A file-size limit of 32 KiB for the process (the shell's `ulimit -f` counts 1 KiB
    // blocks), with SIGXFSZ ignored so that a write past it fails with EFBIG: the journal's
    // first segment can hold about 150 records, then its next commit fails, as on a full
    // disk. Segments of 64 KiB never rotate before that.
    let (child, base) = app
        .serve_binary_instead_with(|command| {
            let program = command.get_program().to_owned();
            let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
            let mut limited = std::process::Command::new("bash");
            limited
                .arg("-c")
                .arg("trap '' XFSZ; ulimit -f 32; exec \"$0\" \"$@\"")
                .arg(program)
                .args(args)
                .envs(
                    command
                        .get_envs()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))),
                )
                .env("TOLLGATE__METERING__JOURNAL_SEGMENT_BYTES", "65536")
                .env("RUST_LOG", "warn")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            *command = limited;
        })
        .await;
    let mut child = child;
    let log = capture_stderr(&mut child);
    let seen = Mutex::new(Seen::default());
    for _ in 0..400 {
        send_one(&app, &base, &customer.key, &seen).await;
        if !seen.lock().unwrap().refusals.is_empty() {
            break;
        }
    }
    let seen = seen.into_inner().unwrap();
    assert!(
        seen.refusals.iter().any(|m| m.contains("usage journal")),
        "no 529 for the failed journal after {} answers: {:?}",
        seen.answered.len(),
        seen.refusals
    );
    assert!(seen.answered.len() > 100, "{}", seen.answered.len());
    let health: Value = app
        .http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["journal"], "failed", "{health}");
    assert_eq!(app.metric_at(&base, "tollgate_journal_healthy").await, 0.0);
    // The commit that failed was answered all the same, and counted.
    assert!(
        app.metric_at(&base, "tollgate_settles_not_durable_total")
            .await
            >= 1.0
    );
    // Every request it answered, including those whose commit failed, is billed from
    // memory through the flush.
    sigterm_and_wait(child).await;
    assert_every_answer_billed_once(&app, &seen.answered, &[&customer]).await;
    let log = log.join().unwrap();
    assert!(
        log.contains(
            "the journal cannot be written: nothing more is written to it until tollgate restarts"
        ),
        "{log}"
    );
}

#[actix_web::test]
async fn a_second_process_on_the_same_journal_refuses_to_start_and_names_the_holder() {
    let first = spawn_app().await;
    // Another database, so that only the journal is shared.
    let mut second = spawn_app().await;
    second.server.stop(true).await;
    (&mut second.stopped).await.unwrap().unwrap();
    let output = second
        .serve_command("127.0.0.1:0")
        .env("TOLLGATE__METERING__JOURNAL_DIR", &first.db.journal_dir)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("is locked by process {}", std::process::id())),
        "{stderr}"
    );
    // The first is undisturbed.
    let customer = first.customer("5").await;
    let seen = Mutex::new(Seen::default());
    send_one(&first, &first.base, &customer.key, &seen).await;
    assert_eq!(seen.into_inner().unwrap().answered.len(), 1);
}

/// The newest segment file of a journal directory.
fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments.pop().unwrap()
}
