//! Operator writes with an `Idempotency-Key`: applied once however often they are sent, every
//! retry answered as the first was, and the live and stored balances in step throughout.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::helpers::*;

/// A credit or adjustment of `account` with `key`: (status, body text).
async fn send(app: &TestApp, route: &str, account: &str, key: &str, body: &Value) -> (u16, String) {
    let response = app
        .admin(
            reqwest::Method::POST,
            &format!("/accounts/{account}/{route}"),
        )
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A credit of `amount` with `key` and no reason.
async fn credit_with(app: &TestApp, account: &str, key: &str, amount: &str) -> (u16, String) {
    send(app, "credit", account, key, &json!({"amount_usd": amount})).await
}

/// The ledger's non-usage entries of `account`, oldest first: (kind, amount).
async fn ledger_changes(app: &TestApp, account: &str) -> Vec<(String, rust_decimal::Decimal)> {
    let id = uuid::Uuid::parse_str(account).unwrap();
    app.db()
        .await
        .query(
            "SELECT kind, amount FROM ledger WHERE account_id = $1 AND kind <> 'usage' ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The live balance (the actor's) equals the stored one once flushed, and the ledger adds up.
async fn assert_live_and_stored_agree(app: &TestApp, account: &str) {
    app.flush().await;
    let live = app.balance(account).await;
    let books = app.books(account).await;
    assert_eq!(books.stored_balance, live, "stored and live balances");
    books.assert_reconciled();
}

#[actix_web::test]
async fn three_credits_with_one_idempotency_key_credit_once_and_answer_alike() {
    let app = spawn_app().await;
    let customer = app.customer("0").await;
    let credit = json!({"amount_usd": "5", "reason": "top-up 1841"});

    // Sequential retries.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(send(&app, "credit", &customer.id, "top-up-1841", &credit).await);
    }
    assert_eq!(answers[0].0, 200, "{}", answers[0].1);
    assert!(
        answers.iter().all(|answer| *answer == answers[0]),
        "{answers:?}"
    );
    let first: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(first["balance"], "5");
    assert_eq!(app.balance(&customer.id).await, dec("5"));

    // Concurrent duplicates, on the credit and the adjust route.
    let credit = json!({"amount_usd": "2.5", "reason": "top-up 1842"});
    let adjust = json!({"amount_usd": "-1", "reason": "refund of a double charge"});
    let (credits, adjusts) = tokio::join!(
        join_all((0..3).map(|_| send(&app, "credit", &customer.id, "top-up-1842", &credit))),
        join_all((0..3).map(|_| send(&app, "adjust", &customer.id, "fix-77", &adjust))),
    );
    for answers in [&credits, &adjusts] {
        assert_eq!(answers[0].0, 200, "{}", answers[0].1);
        assert!(
            answers.iter().all(|answer| *answer == answers[0]),
            "{answers:?}"
        );
    }
    assert_eq!(app.balance(&customer.id).await, dec("6.5"));
    // The concurrent credit and adjustment may be entered in either order.
    let mut changes = ledger_changes(&app, &customer.id).await;
    changes.sort();
    assert_eq!(
        changes,
        vec![
            ("adjustment".to_string(), dec("-1")),
            ("credit".to_string(), dec("2.5")),
            ("credit".to_string(), dec("5")),
        ]
    );
    // And after all of it, a request billed against the balance keeps memory and storage equal.
    let body = message_body("claude-opus-5-5", 20, true, json!({"output_tokens": 10}));
    app.message_text(&customer.key, &body).await;
    app.wait_settled(&customer.id).await;
    assert_live_and_stored_agree(&app, &customer.id).await;
    assert!(app.balance(&customer.id).await < dec("6.5"));
}

#[actix_web::test]
async fn the_same_key_with_a_different_body_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("0").await;
    let key = "order-5512";
    let (status, _) = credit_with(&app, &customer.id, key, "5").await;
    assert_eq!(status, 200);
    for other in [
        json!({"amount_usd": "6"}),
        json!({"amount_usd": "5", "reason": "another reason"}),
    ] {
        let (status, body) = send(&app, "credit", &customer.id, key, &other).await;
        assert_eq!(status, 422, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"]["code"], "idempotency_key_reused");
        assert!(body["error"]["message"].as_str().unwrap().contains(key));
    }
    // The same request, spelled differently, is the same request.
    let (status, body) = credit_with(&app, &customer.id, key, "5.00").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.balance(&customer.id).await, dec("5"));

    // A key belongs to one route of one account.
    let adjust = json!({"amount_usd": "-1", "reason": "goodwill reversed"});
    assert_eq!(
        send(&app, "adjust", &customer.id, key, &adjust).await.0,
        200
    );
    let other = app.customer("0").await;
    assert_eq!(credit_with(&app, &other.id, key, "5").await.0, 200);
    assert_eq!(app.balance(&customer.id).await, dec("4"));
    assert_eq!(app.balance(&other.id).await, dec("5"));

    // A key must be short visible text.
    let long = "k".repeat(256);
    let (status, body) = credit_with(&app, &customer.id, &long, "1").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(app.balance(&customer.id).await, dec("4"));
    assert_eq!(ledger_changes(&app, &customer.id).await.len(), 2);
    assert_live_and_stored_agree(&app, &customer.id).await;
    assert_live_and_stored_agree(&app, &other.id).await;
}

#[actix_web::test]
async fn a_first_answer_stored_while_ours_waits_is_the_one_returned() {
    let app = spawn_app().await;
    let customer = app.customer("0").await;
    let account = uuid::Uuid::parse_str(&customer.id).unwrap();
    let db = app.db().await;
    db.execute(
        "INSERT INTO idempotency_keys (account_id, scope, key, fingerprint, change_id)
         VALUES ($1, 'credit', 'raced', '\\x00', $2)",
        &[&account, &uuid::Uuid::new_v4()],
    )
    .await
    .unwrap();
    // A competing writer stores its answer in a transaction still open: ours waits on the
    // row, and must come back with the competitor's answer once it commits.
    let mut competitor = app.db().await;
    let competing = competitor.transaction().await.unwrap();
    competing
        .execute(
            "UPDATE idempotency_keys SET status = 200, response = 'theirs'
             WHERE account_id = $1 AND scope = 'credit' AND key = 'raced'",
            &[&account],
        )
        .await
        .unwrap();
    let store = app.store();
    let ours = tollgate::store::StoredAnswer {
        status: 200,
        body: "ours".into(),
    };
    let waiting = store.first_answer(account, "credit", "raced", &ours);
    let commit = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        competing.commit().await.unwrap();
    };
    let (stored, ()) = tokio::join!(waiting, commit);
    assert_eq!(
        stored.unwrap().map(|answer| answer.body).as_deref(),
        Some("theirs")
    );
}

#[actix_web::test]
async fn a_retry_after_a_lost_commit_answer_brings_the_live_balance_to_the_stored_one() {
    let proxy = crate::pg_fault::PgRelay::start("127.0.0.1:5432").await;
    let app = spawn_app_with(mock_anthropic::MockConfig::default(), |settings| {
        settings.database.url = proxy.url_of(&settings.database.url);
    })
    .await;
    let customer = app.customer("0").await;
    let credit = json!({"amount_usd": "5", "reason": "top-up 9001"});

    // The credit commits, and its answer is lost on the way back from Postgres.
    proxy.lose_next_claim();
    let (status, body) = send(&app, "credit", &customer.id, "top-up-9001", &credit).await;
    assert_eq!(proxy.cuts(), 1);
    assert!(status >= 500, "{status} {body}");
    assert_eq!(app.books(&customer.id).await.stored_balance, dec("5"));
    assert_eq!(app.balance(&customer.id).await, dec("0"));

    // The retry learns that it went through: the live balance has it, and so do the first
    // answer and every later one.
    let answers = [
        send(&app, "credit", &customer.id, "top-up-9001", &credit).await,
        send(&app, "credit", &customer.id, "top-up-9001", &credit).await,
    ];
    assert_eq!(answers[0].0, 200, "{}", answers[0].1);
    let first: Value = serde_json::from_str(&answers[0].1).unwrap();
    assert_eq!(first["balance"], "5", "{first}");
    assert_eq!(answers[1], answers[0]);
    assert_eq!(app.balance(&customer.id).await, dec("5"));
    assert_eq!(
        ledger_changes(&app, &customer.id).await,
        vec![("credit".to_string(), dec("5"))]
    );
    assert_live_and_stored_agree(&app, &customer.id).await;
}
