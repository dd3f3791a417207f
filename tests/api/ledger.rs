//! The ledger: idempotent flushes, the live view, keys at rest, and no settled usage lost on
//! SIGTERM.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;
use tollgate_actors::store::LedgerStore;
use tollgate_actors::Usage;
use tollgate_actors::{Outcome, UsageRecord};
use uuid::Uuid;

use crate::helpers::*;

#[actix_web::test]
async fn replaying_a_flushed_batch_changes_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("10").await;
    for output in [10, 20, 30] {
        let body = message_body(
            "claude-opus-5-5",
            100,
            false,
            json!({"output_tokens": output}),
        );
        assert_eq!(
            app.messages(&customer.key, &body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    app.wait_settled(&customer.id).await;
    app.flush().await;
    let before = app.books(&customer.id).await;
    assert_eq!(before.usage_rows, 3);

    // Rebuild the batch exactly as flushed, from the usage rows, and write it again.
    let db = app.db().await;
    let rows = db
        .query(
            "SELECT request_id, account_id, key_id, model, input_tokens, output_tokens, cost, price_version, started_at, finished_at FROM usage",
            &[],
        )
        .await
        .unwrap();
    let batch: Vec<UsageRecord> = rows
        .iter()
        .map(|row| UsageRecord {
            request_id: row.get(0),
            account_id: row.get(1),
            key_id: row.get(2),
            model: row.get(3),
            usage: Usage {
                input_tokens: row.get::<_, i64>(4) as u64,
                output_tokens: row.get::<_, i64>(5) as u64,
                ..Usage::default()
            },
            cost: row.get(6),
            price_version: row.get(7),
            long_prompt_tier: false,
            outcome: Outcome::Completed,
            estimated: false,
            usage_fault: None,
            started_at: row.get(8),
            finished_at: row.get(9),
        })
        .collect();
    let store = app.store();
    let replay = store.write_batch(&batch).await.unwrap();
    assert_eq!(replay.inserted, 0);
    assert_eq!(
        app.books(&customer.id).await,
        before,
        "a replay inserts and debits nothing"
    );
    let ledger_entries: i64 = db
        .query_one("SELECT count(*) FROM ledger WHERE kind = 'usage'", &[])
        .await
        .unwrap()
        .get(0);

    // A batch mixing replayed and new records debits only the new one.
    let mut fresh = batch[0].clone();
    fresh.request_id = Uuid::now_v7();
    let mut mixed = batch.clone();
    mixed.push(fresh.clone());
    assert_eq!(store.write_batch(&mixed).await.unwrap().inserted, 1);
    let after = app.books(&customer.id).await;
    assert_eq!(after.usage_rows, 4);
    assert_eq!(after.stored_balance, before.stored_balance - fresh.cost);
    after.assert_reconciled();
    let entries_after: i64 = db
        .query_one("SELECT count(*) FROM ledger WHERE kind = 'usage'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries_after, ledger_entries + 1);
}

#[actix_web::test]
async fn a_paced_flush_writes_a_large_batch_in_parts_and_debits_each_account_once() {
    let app = spawn_app().await;
    let customers = [
        app.customer("10").await,
        app.customer("20").await,
        app.customer("30").await,
    ];
    // 300 rows: the flush inserts them in parts with pauses between, in one transaction.
    let price_version = chrono::Utc::now();
    let batch: Vec<UsageRecord> = (0..300u64)
        .map(|i| {
            let customer = &customers[(i % 3) as usize];
            UsageRecord {
                request_id: Uuid::now_v7(),
                account_id: customer.id.parse().unwrap(),
                key_id: customer.key_id.parse().unwrap(),
                model: "claude-haiku-5-5".into(),
                usage: Usage {
                    input_tokens: 100 + i,
                    output_tokens: i,
                    ..Usage::default()
                },
                cost: rust_decimal::Decimal::new(1_000 + i as i64, 9),
                price_version,
                long_prompt_tier: false,
                outcome: Outcome::Completed,
                estimated: false,
                usage_fault: None,
                started_at: price_version,
                finished_at: price_version,
            }
        })
        .collect();
    let store = app.store().with_flush_spread(Duration::from_millis(40));
    assert_eq!(store.write_usage_paced(&batch).await.unwrap(), 300);

    let db = app.db().await;
    for customer in &customers {
        let id: Uuid = customer.id.parse().unwrap();
        let cost: rust_decimal::Decimal = batch
            .iter()
            .filter(|r| r.account_id == id)
            .map(|r| r.cost)
            .sum();
        let books = app.books(&customer.id).await;
        assert_eq!((books.usage_rows, books.usage_cost), (100, cost));
        assert_eq!(books.stored_balance, books.credits - cost);
        books.assert_reconciled();
        let entries: i64 = db
            .query_one(
                "SELECT count(*) FROM ledger WHERE kind = 'usage' AND account_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(entries, 1, "one ledger entry per account per flush");
    }
    // Written again, it fails the paced attempt's plain inserts, changing nothing...
    assert!(store.write_usage_paced(&batch[..1]).await.is_err());
    // ...and is rewritten idempotently.
    assert_eq!(store.write_batch(&batch).await.unwrap().inserted, 0);
    for customer in &customers {
        app.books(&customer.id).await.assert_reconciled();
    }
}

#[actix_web::test]
async fn the_live_view_shows_settled_debits_before_they_are_flushed() {
    // A flush interval long enough that nothing is flushed during the test on its own.
    let app = spawn_app_with(Default::default(), |s| {
        s.metering.flush_interval_ms = 600_000
    })
    .await;
    let customer = app.customer("3").await;
    let body = message_body(
        "claude-opus-5-5",
        100,
        false,
        json!({"input_tokens": 1000, "output_tokens": 100}),
    );
    app.message_text(&customer.key, &body).await;
    app.wait_settled(&customer.id).await;
    // 1000*4 + 100*20 = 6000 per million
    assert_eq!(app.balance(&customer.id).await, dec("2.994"));
    let unflushed = app.books(&customer.id).await;
    assert_eq!(unflushed.stored_balance, dec("3"));
    assert_eq!(unflushed.usage_rows, 0);
    app.flush().await;
    let flushed = app.books(&customer.id).await;
    assert_eq!(flushed.stored_balance, dec("2.994"));
    flushed.assert_reconciled();
}

#[actix_web::test]
async fn keys_are_stored_only_as_keyed_hashes_and_listed_by_prefix() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let db = app.db().await;
    let row = db
        .query_one(
            "SELECT prefix, digest, row_to_json(k)::text FROM api_keys k",
            &[],
        )
        .await
        .unwrap();
    let prefix: String = row.get(0);
    let digest: Vec<u8> = row.get(1);
    let whole_row: String = row.get(2);
    assert!(customer.key.starts_with(&prefix) && prefix.len() < customer.key.len() / 2);
    assert_eq!(digest.len(), 32);
    assert!(
        !whole_row.contains(&customer.key[prefix.len()..]),
        "no part past the prefix is stored"
    );
    let listed = app
        .admin(
            reqwest::Method::GET,
            &format!("/accounts/{}/keys", customer.id),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&prefix));
    assert!(!listed.contains(&customer.key));
}

/// Counts a response as completed when the client received all of it.
async fn one_request(http: &reqwest::Client, base: &str, key: &str, stream: bool) -> bool {
    let body = message_body(
        "claude-haiku-5-5",
        50,
        stream,
        json!({"output_tokens": 20, "inter_token_ms": 5}),
    );
    let Ok(response) = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
    else {
        return false;
    };
    if response.status() != 200 {
        return false;
    }
    match response.text().await {
        Ok(text) if stream => text.contains("event: message_stop"),
        Ok(text) => text.contains("\"usage\""),
        Err(_) => false,
    }
}

#[actix_web::test]
async fn sigterm_under_load_loses_no_settled_usage() {
    // Provision through an in-process instance, then serve the same database from the real
    // binary, which is what receives the signal.
    let mut app = spawn_app().await;
    let customer = app.customer("100").await;
    app.server.stop(true).await;
    // One instance per database: the binary may start once the in-process instance has
    // stopped and given back its lock.
    (&mut app.stopped).await.unwrap().unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = app
        .serve_command(&format!("127.0.0.1:{port}"))
        .env("TOLLGATE__SERVER__WORKERS", "2")
        .env("TOLLGATE__METERING__FLUSH_INTERVAL_MS", "1000")
        .env("TOLLGATE__LIMITS__MAX_CONCURRENT", "0")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "tollgate did not start");

    // 16 clients send requests back to back; SIGTERM lands in the middle of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let clients = (0..16).map(|i| {
        let http = http.clone();
        let base = base.clone();
        let key = customer.key.clone();
        async move {
            let mut completed = 0u64;
            while tokio::time::Instant::now() < deadline {
                if one_request(&http, &base, &key, i % 2 == 0).await {
                    completed += 1;
                }
            }
            completed
        }
    });
    let signal = async {
        // Kept: the point is a SIGTERM halfway through a fixed 3 s load, with every client
        // mid-request. An event (the first requests served) would fire at once and leave
        // the clients hammering a closed port for the rest of the window.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let (counts, ()) = tokio::join!(join_all(clients), signal);
    let completed: u64 = counts.iter().sum();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "tollgate exited with {exit}");
    assert!(completed > 0);

    let books = app.books(&customer.id).await;
    assert_eq!(
        books.usage_rows as u64, completed,
        "usage rows vs completed requests"
    );
    books.assert_reconciled();
}

#[actix_web::test]
async fn flushes_follow_the_interval_not_the_request_rate() {
    let app = spawn_app_with(Default::default(), |s| s.metering.flush_interval_ms = 250).await;
    let customer = app.customer("100").await;
    let body = message_body("claude-haiku-5-5", 10, false, json!({"output_tokens": 3}));
    let before = app.metric("tollgate_flushes").await;
    let started = std::time::Instant::now();
    let requests = (0..300).map(|_| async {
        let response = app.messages(&customer.key, &body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    });
    join_all(requests).await;
    app.wait_settled(&customer.id).await;
    app.flush().await;
    let elapsed = started.elapsed();
    let after = app.metric("tollgate_flushes").await;
    // One transaction per interval that had something to write (plus the forced flush),
    // however many requests settled in it.
    let intervals = (elapsed.as_millis() / 250) as f64 + 2.0;
    assert!(
        after - before <= intervals,
        "{} flushes for 300 requests in {elapsed:?}",
        after - before
    );
    let books = app.books(&customer.id).await;
    assert_eq!(books.usage_rows, 300);
    books.assert_reconciled();
}

#[actix_web::test]
async fn credits_interleaved_with_usage_keep_memory_and_storage_equal() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let body = message_body(
        "claude-opus-5-5",
        50,
        true,
        json!({"output_tokens": 30, "input_tokens": 700}),
    );
    let usage = (0..40).map(|_| async {
        let response = app.messages(&customer.key, &body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    });
    let credits = (0..20).map(|_| app.credit(&customer.id, "0.125"));
    let (_, _) = tokio::join!(join_all(usage), join_all(credits));
    app.wait_settled(&customer.id).await;
    app.flush().await;
    let live = app.balance(&customer.id).await;
    let books = app.books(&customer.id).await;
    assert_eq!(
        books.stored_balance, live,
        "stored and in-memory balances agree"
    );
    assert_eq!(books.credits, dec("3.5"));
    // 40 requests of 700 input and 30 output tokens: 40 * (700*4 + 30*20) / 1e6
    assert_eq!(books.usage_cost, dec("0.136"));
    books.assert_reconciled();
}
