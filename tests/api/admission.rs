//! Checked before reading: a request's account is checked for its status, its balance and a
//! concurrency slot before its body is read (a `count_tokens` request's for its status and
//! balance, and it takes no slot); bodies are read within a deadline and a per-key
//! cap; `admin.listen` moves the admin API off the main listener; the rate limits spend their
//! allowance only for a request admitted; a request let in just before shutdown is billed and
//! flushed, and a `count_tokens` call in flight is waited for up to the drain bound.

use std::time::{Duration, Instant};

use mock_anthropic::MockConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const MESSAGES: &str = "/v1/messages";
const COUNT_TOKENS: &str = "/v1/messages/count_tokens";

/// A `POST` to `path` whose head declares `declared` body bytes, sent with none of them.
async fn upload_head(base: &str, path: &str, key: &str, declared: usize) -> TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nx-api-key: {key}\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Sends up to `bytes` more of a body, stopping early if the server stops taking them.
async fn send_body(stream: &mut TcpStream, bytes: usize) -> usize {
    let chunk = vec![b' '; 1 << 20];
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        let wrote =
            tokio::time::timeout(Duration::from_secs(2), stream.write_all(&chunk[..n])).await;
        if !matches!(wrote, Ok(Ok(()))) {
            break;
        }
        sent += n;
    }
    sent
}

/// The status and body of the response on `stream`, if one arrives within `within`.
async fn response_within(stream: &mut TcpStream, within: Duration) -> Option<(u16, String)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Sends what `request` builds, every 20 ms, until `wanted` holds of the answer's status and
/// JSON body, at most 100 times; the last answer.
async fn send_until(
    request: impl Fn() -> reqwest::RequestBuilder,
    wanted: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let mut answer = (0, Value::Null);
    for _ in 0..100 {
        let response = request().send().await.unwrap();
        let status = response.status().as_u16();
        answer = (status, response.json().await.unwrap());
        if wanted(answer.0, &answer.1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    answer
}

/// Whether an answer is the refusal of a key whose every upload slot is taken.
fn refused_for_uploads(status: u16, body: &Value) -> bool {
    let message = body["error"]["message"].as_str().unwrap_or_default();
    status == 429 && message.contains("uploading")
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A `tollgate serve` process, killed when dropped.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn set_limits(app: &TestApp, account: &str, limits: Value) {
    let response = app
        .admin(reqwest::Method::PUT, &format!("/accounts/{account}/limits"))
        .json(&limits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn stalled_uploads_of_a_suspended_key_are_answered_at_once_and_cost_no_memory() {
    let mut app = spawn_app().await;
    let customer = app.customer("0").await;
    app.suspend(&customer.id).await;
    // The database is handed over to a real `tollgate serve`, with its default 32 MiB limit.
    app.shutdown.cancel();
    (&mut app.stopped).await.unwrap().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let served = Served(
        app.serve_command(&format!("127.0.0.1:{port}"))
            .spawn()
            .unwrap(),
    );
    let ready = Instant::now();
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "serve never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = served.0.id();
    let before = vm_rss_kib(pid);

    // Twenty uploads that declare nearly 32 MiB, as an attacker would send them, half to each
    // route that reads a body: the head, then (answered or not) 31 MiB of body, then nothing.
    let mut uploads = Vec::new();
    let mut answered = Vec::new();
    for path in [MESSAGES, COUNT_TOKENS].repeat(10) {
        let mut stream = upload_head(&base, path, &customer.key, 33_000_000).await;
        answered.push(response_within(&mut stream, Duration::from_secs(2)).await);
        send_body(&mut stream, 31 << 20).await;
        uploads.push(stream);
    }
    let after = vm_rss_kib(pid);
    for response in &answered {
        let (status, body) = response
            .as_ref()
            .unwrap_or_else(|| panic!("answered before the body was sent: {answered:?}"));
        assert_eq!(*status, 403, "{body}");
        assert!(body.contains("permission_error"), "{body}");
    }
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(uploads);
}

/// The status and body (without its request id) of the answer to a `POST` to `path` whose
/// body never comes, which must arrive before the body does.
async fn answer_before_the_body(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    // Most of what the test instance's `server.max_body_bytes` (1 MiB) allows.
    let mut stream = upload_head(&app.base, path, key, 1_000_000).await;
    let (status, body) = response_within(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("{path}: answered without the body"));
    let mut body: Value = serde_json::from_str(&body).unwrap();
    body["request_id"].take();
    (status, body)
}

#[actix_web::test]
async fn an_empty_accounts_upload_is_refused_before_its_body_is_read() {
    let app = spawn_app().await;
    let customer = app.customer("0").await;
    let (status, body) = answer_before_the_body(&app, MESSAGES, &customer.key).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"]["type"], "billing_error");
    // count_tokens is free, but an account with nothing to spend has no use for it: answered
    // as /v1/messages is.
    let counted = answer_before_the_body(&app, COUNT_TOKENS, &customer.key).await;
    assert_eq!(counted, (status, body));
    let stats = app.mock_stats().await;
    assert_eq!((stats.messages, stats.count_tokens), (0, 0));
}

#[actix_web::test]
async fn a_suspended_accounts_count_tokens_is_refused_before_its_body_and_spends_no_allowance() {
    let app = spawn_app_with(MockConfig::default(), |s| {
        s.limits.count_tokens_per_minute = 1
    })
    .await;
    let customer = app.customer("1").await;
    app.suspend(&customer.id).await;
    let refused = answer_before_the_body(&app, MESSAGES, &customer.key).await;
    assert_eq!(refused.0, 403, "{}", refused.1);
    assert_eq!(refused.1["error"]["type"], "permission_error");
    let counted = answer_before_the_body(&app, COUNT_TOKENS, &customer.key).await;
    assert_eq!(counted, refused);
    app.unsuspend(&customer.id).await;
    // The key's one count_tokens call a minute was not spent by the refusal.
    let body = json!({"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}]});
    let response = app.count_tokens(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(app.mock_stats().await.count_tokens, 1);
}

#[actix_web::test]
async fn count_tokens_refused_for_its_declared_size_or_the_upload_cap_spends_no_allowance() {
    let app = spawn_app_with(MockConfig::default(), |s| {
        s.limits.count_tokens_per_minute = 1;
        s.server.max_uploads_per_key = 1;
    })
    .await;
    let customer = app.customer("1").await;
    // Declared larger than the test instance's `server.max_body_bytes` (1 MiB).
    let mut too_large = upload_head(&app.base, COUNT_TOKENS, &customer.key, 2 << 20).await;
    let (status, body) = response_within(&mut too_large, Duration::from_secs(2))
        .await
        .expect("answered without the body");
    assert_eq!(status, 413, "{body}");
    // A stalled message upload takes the key's one upload slot: once a probe is refused for
    // it (one let in before is a small message, billed), so is count_tokens.
    let mut stalled = upload_head(&app.base, MESSAGES, &customer.key, 100_000).await;
    send_body(&mut stalled, 1_000).await;
    let probe = message_body("claude-opus-5-5", 10, false, json!({}));
    let (status, body) =
        send_until(|| app.messages(&customer.key, &probe), refused_for_uploads).await;
    assert_eq!(status, 429, "the stalled upload takes the slot: {body}");
    let count = count_tokens_body(0);
    let refused = app
        .count_tokens(&customer.key, &count)
        .send()
        .await
        .unwrap();
    let status = refused.status().as_u16();
    let refused: Value = refused.json().await.unwrap();
    assert!(refused_for_uploads(status, &refused), "{status} {refused}");
    // Once the slot is free, the key's one count_tokens call a minute is still there.
    drop(stalled);
    let (status, body) = send_until(
        || app.count_tokens(&customer.key, &count),
        |status, body| !refused_for_uploads(status, body),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.mock_stats().await.count_tokens, 1);
}

/// A regression guard: count_tokens never took a slot, and must not start to.
#[actix_web::test]
async fn count_tokens_is_answered_while_every_concurrency_slot_is_taken_and_takes_none() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    set_limits(
        &app,
        &customer.id,
        json!({"requests_per_minute": 0, "tokens_per_minute": 0, "max_concurrent": 1}),
    )
    .await;
    let slow = message_body("claude-opus-5-5", 10, false, json!({"ttft_ms": 1_000}));
    let count =
        json!({"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}]});
    let running = app.messages(&customer.key, &slow).send();
    let counted = async {
        app.wait_view(&customer.id, |view| view["active_requests"] == 1)
            .await;
        let response = app
            .count_tokens(&customer.key, &count)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let counted = response.json::<Value>().await.unwrap();
        // The slow message still held the account's one slot when count_tokens was answered.
        let view = app.view(&customer.id).await;
        (status, counted, view["active_requests"].clone())
    };
    let (running, (status, counted, active)) = tokio::join!(running, counted);
    assert_eq!(active, 1, "the slow message was still running");
    assert_eq!(status, 200, "{counted}");
    assert!(counted["input_tokens"].as_u64().unwrap() > 0, "{counted}");
    assert_eq!(running.unwrap().status(), 200);
    // Nor did it keep one: the account's one slot is free for the next message.
    app.wait_settled(&customer.id).await;
    let small = message_body("claude-opus-5-5", 10, false, json!({}));
    let response = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.wait_settled(&customer.id).await;
    app.flush().await;
    assert_eq!(
        app.books(&customer.id).await.usage_rows,
        2,
        "count_tokens is not billed"
    );
    assert_eq!(app.mock_stats().await.count_tokens, 1);
}

/// A count_tokens body whose upstream answer the mock holds back `ttft_ms`.
fn count_tokens_body(ttft_ms: u64) -> Value {
    json!({
        "model": "claude-opus-5-5",
        "messages": [{"role": "user", "content": "hi"}],
        "mock": {"ttft_ms": ttft_ms},
    })
}

/// Waits until the engine refuses new requests, as it does once a graceful shutdown has
/// begun (nothing over HTTP says so without being let in, and billed, when it has not).
async fn wait_until_shutdown_has_begun(app: &TestApp, account: &str) {
    let account = uuid::Uuid::parse_str(account).unwrap();
    for _ in 0..400 {
        let checked = app.engine.check_in_unbilled(account).await;
        if matches!(
            checked,
            Err(tollgate_actors::AdmitError::Engine(
                tollgate_actors::EngineError::Stopped
            ))
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("shutdown never began");
}

#[actix_web::test]
async fn count_tokens_in_flight_at_shutdown_is_answered_and_one_sent_after_it_is_refused() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    // A connection the server took before shutdown: from then on the listener takes no new
    // one, but open connections are still served.
    let late = reqwest::Client::new();
    let ready = late.get(format!("{}/healthz", app.base)).send().await;
    assert_eq!(ready.unwrap().status(), 200);
    let in_flight = actix_web::rt::spawn(
        app.count_tokens(&customer.key, &count_tokens_body(1_000))
            .send(),
    );
    wait_for_mock(&app, |stats| stats.count_tokens == 1).await;
    app.shutdown.cancel();
    wait_until_shutdown_has_begun(&app, &customer.id).await;
    let refused = late
        .post(format!("{}{COUNT_TOKENS}", app.base))
        .header("x-api-key", &customer.key)
        .header("anthropic-version", "2023-06-01")
        .json(&count_tokens_body(0))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 529);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    // The drain waited for the one in flight, which was answered.
    let answered = in_flight.await.unwrap().unwrap();
    assert_eq!(answered.status(), 200);
    let counted: Value = answered.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0, "{counted}");
    assert_eq!(app.mock_stats().await.count_tokens, 1);
    app.shut_down().await;
}

#[actix_web::test]
async fn count_tokens_still_waiting_on_the_upstream_at_the_interrupt_is_answered_529_at_once() {
    let app = spawn_app_with(MockConfig::default(), |s| s.server.shutdown_drain_ms = 200).await;
    let customer = app.customer("1").await;
    // The upstream holds its answer back far past the drain bound.
    let hung = actix_web::rt::spawn(
        app.count_tokens(&customer.key, &count_tokens_body(60_000))
            .send(),
    );
    wait_for_mock(&app, |stats| stats.count_tokens == 1).await;
    let started = Instant::now();
    app.shutdown.cancel();
    let answered = hung
        .await
        .unwrap()
        .expect("answered before the server stopped");
    assert_eq!(answered.status(), 529);
    let body: Value = answered.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    app.shut_down().await;
    // Liveness, not speed: the call did not keep shutdown waiting out the interrupt's grace.
    assert!(started.elapsed() < Duration::from_millis(200) + tollgate_actors::INTERRUPT_GRACE);
}

#[actix_web::test]
async fn a_body_not_received_within_the_read_deadline_is_answered_408() {
    let app = spawn_app_with(MockConfig::default(), |s| {
        s.server.body_read_timeout_ms = 500
    })
    .await;
    let customer = app.customer("1").await;
    let mut stream = upload_head(&app.base, MESSAGES, &customer.key, 100_000).await;
    send_body(&mut stream, 1_000).await;
    let started = Instant::now();
    let (status, body) = response_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("answered at the deadline");
    assert_eq!(status, 408, "{body}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "timeout_error");
    let view = app.wait_settled(&customer.id).await;
    assert_eq!(view["balance"], "1");
}

#[actix_web::test]
async fn a_key_uploading_more_bodies_than_its_cap_is_answered_429() {
    let app = spawn_app_with(MockConfig::default(), |s| s.server.max_uploads_per_key = 2).await;
    let customer = app.customer("1").await;
    let other = app.customer("1").await;
    let mut first = upload_head(&app.base, MESSAGES, &customer.key, 100_000).await;
    let mut second = upload_head(&app.base, COUNT_TOKENS, &customer.key, 100_000).await;
    send_body(&mut first, 1_000).await;
    send_body(&mut second, 1_000).await;
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    // Until both uploads are in progress the third may still pass; then it is refused.
    let (status, refused) =
        send_until(|| app.messages(&customer.key, &body), refused_for_uploads).await;
    assert_eq!(status, 429, "the third upload is refused: {refused}");
    assert_eq!(refused["error"]["type"], "rate_limit_error");
    // Another key of its own is not held up.
    let response = app.messages(&other.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // A stalled upload that goes away gives its slot back.
    drop(first);
    let (status, answer) = send_until(
        || app.messages(&customer.key, &body),
        |status, _| status == 200,
    )
    .await;
    assert_eq!(
        status, 200,
        "the slot of the upload that went away is free again: {answer}"
    );
    drop(second);
}

#[actix_web::test]
async fn admin_listen_serves_the_admin_api_on_its_own_address_and_not_on_the_main_one() {
    let app = spawn_app_with(MockConfig::default(), |s| {
        s.admin.listen = Some("127.0.0.1:0".into())
    })
    .await;
    assert_ne!(app.admin_base, app.base);
    // The helpers reach the admin API on its own address.
    let customer = app.customer("1").await;
    assert_eq!(app.view(&customer.id).await["balance"], "1");
    // The main listener does not serve it, even with the token, and still serves the proxy.
    let refused = app
        .http
        .get(format!("{}/admin/v1/accounts/{}", app.base, customer.id))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    let response = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The admin address serves only the admin API.
    let proxied = app
        .http
        .post(format!("{}/v1/messages", app.admin_base))
        .header("x-api-key", &customer.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 404);
    app.wait_settled(&customer.id).await;
    app.shut_down().await;
}

#[actix_web::test]
async fn refused_requests_spend_none_of_the_requests_per_minute_allowance() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    set_limits(
        &app,
        &customer.id,
        json!({"requests_per_minute": 3, "tokens_per_minute": 0, "max_concurrent": 1}),
    )
    .await;
    // A hold of $2 on a $1 balance: 402.
    let too_dear = message_body("claude-opus-5-5", 100_000, false, json!({}));
    let refused = app.messages(&customer.key, &too_dear).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    // One request holds the account's one concurrency slot; another meanwhile is 429.
    let slow = message_body("claude-opus-5-5", 10, false, json!({"ttft_ms": 1_000}));
    let small = message_body("claude-opus-5-5", 10, false, json!({}));
    let first = app.messages(&customer.key, &slow).send();
    let second = async {
        app.wait_view(&customer.id, |view| view["active_requests"] == 1)
            .await;
        app.messages(&customer.key, &small).send().await.unwrap()
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap().status(), 200);
    assert_eq!(second.status(), 429);
    let message = second.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("concurrent"),
        "{message}"
    );
    // Of three requests a minute, one was spent: two more are admitted.
    for _ in 0..2 {
        let response = app.messages(&customer.key, &small).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let third = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(
        third.status(),
        429,
        "the allowance is spent by admitted requests"
    );
}

#[actix_web::test]
async fn the_token_limit_refuses_a_request_whose_estimate_exceeds_what_is_left() {
    let app = spawn_app().await;
    let customer = app.customer("10").await;
    set_limits(
        &app,
        &customer.id,
        json!({"requests_per_minute": 0, "tokens_per_minute": 5_000, "max_concurrent": 0}),
    )
    .await;
    let heavy = message_body(
        "claude-opus-5-5",
        100,
        false,
        json!({"input_tokens": 4_000, "output_tokens": 100}),
    );
    let response = app.messages(&customer.key, &heavy).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.wait_settled(&customer.id).await;
    // About 900 tokens are left; this request may produce 2,000 on its own.
    let large = message_body("claude-opus-5-5", 2_000, false, json!({}));
    let refused = app.messages(&customer.key, &large).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
    // One whose estimate fits is admitted.
    let small = message_body("claude-opus-5-5", 10, false, json!({"output_tokens": 5}));
    let response = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn a_request_let_in_just_before_shutdown_is_billed_and_flushed() {
    let app = spawn_app_with(
        MockConfig {
            ttft_ms: 1_000,
            ..MockConfig::default()
        },
        |_| {},
    )
    .await;
    let customer = app.customer("1").await;
    // The account's actor is kept busy: a credit waits for a row lock held here, and the
    // actor handles nothing else until the credit is stored.
    let mut db = app.db().await;
    let lock = db.transaction().await.unwrap();
    let id = uuid::Uuid::parse_str(&customer.id).unwrap();
    lock.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();
    let credit = actix_web::rt::spawn(app.credit_request(&customer.id, "1"));
    // Kept: nothing observable says the credit has reached the actor or the request its
    // mailbox; 300 ms is far longer than either takes on loopback.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = app
        .messages(
            &customer.key,
            &message_body("claude-opus-5-5", 10, false, json!({"output_tokens": 7})),
        )
        .send();
    let request = actix_web::rt::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Shutdown begins while the request waits for its hold; then the actor is freed.
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    let response = request.await.unwrap().unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(credit.await.unwrap(), 200);
    let db = app.shut_down().await;
    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_web::rt::spawn(connection);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM usage", &[])
        .await
        .unwrap()
        .get(0);
    match status {
        200 => assert_eq!(
            rows, 1,
            "answered 200 ({text}) but its usage was not flushed"
        ),
        529 => assert_eq!(rows, 0),
        other => panic!("unexpected {other}: {text}"),
    }
}
