//! The operator bootstrap API and the public endpoints around the proxy.

use mock_anthropic::MockConfig;
use serde_json::{json, Value};

use crate::helpers::*;

#[actix_web::test]
async fn the_admin_api_requires_the_admin_token() {
    let app = spawn_app().await;
    for token in [None, Some("wrong")] {
        let mut request = app
            .http
            .post(format!("{}/admin/v1/accounts", app.base))
            .json(&json!({"email": "a@b.co"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[actix_web::test]
async fn accounts_are_created_credited_and_viewed_with_decimal_strings() {
    let app = spawn_app().await;
    let created = app
        .admin(reqwest::Method::POST, "/accounts")
        .json(&json!({"email": "Buyer@Example.com", "password": "hunter22pass"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["email"], "buyer@example.com");
    assert_eq!(created["balance"], "0");
    assert_eq!(created["held"], "0");
    let id = created["id"].as_str().unwrap();
    let credited = app.credit(id, "12.345678901234").await;
    assert_eq!(credited["balance"], "12.345678901234");
    app.credit(id, "0.000000000001").await;
    let view = app.view(id).await;
    assert_eq!(view["balance"], "12.345678901235");
    assert_eq!(view["status"], "active");
    let db = app.db().await;
    let hash: String = db
        .query_one("SELECT password_hash FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$") && !hash.contains("hunter22pass"));
    let books = app.books(id).await;
    assert_eq!(books.credits, dec("12.345678901235"));
    books.assert_reconciled();
}

#[actix_web::test]
async fn bad_admin_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    for body in [
        json!({"email": "not-an-email"}),
        json!({"email": "a@b.co", "password": "short1"}),
        json!({"email": "a@b.co", "extra": 1}),
    ] {
        let response = app
            .admin(reqwest::Method::POST, "/accounts")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    let duplicate = app
        .admin(reqwest::Method::POST, "/accounts")
        .json(&json!({"email": "dup@b.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 201);
    let duplicate = app
        .admin(reqwest::Method::POST, "/accounts")
        .json(&json!({"email": "dup@b.co"}))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 409);
    for amount in [json!("-5"), json!("0"), json!(5), json!("five")] {
        let response = app
            .admin(
                reqwest::Method::POST,
                &format!("/accounts/{}/credit", customer.id),
            )
            .json(&json!({"amount_usd": amount}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{amount}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("amount_usd"));
    }
    assert_eq!(app.balance(&customer.id).await, dec("1"));
    let missing = app
        .admin(
            reqwest::Method::GET,
            &format!("/accounts/{}", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[actix_web::test]
async fn models_come_from_the_rate_card_and_the_base_url_answers_probes() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let list: Value = app
        .http
        .get(format!("{}/v1/models?limit=1000", app.base))
        .header("x-api-key", &customer.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in [
        "claude-opus-5-5",
        "claude-haiku-5-5",
        "claude-sonnet-4-5-20250929",
        "claude-3-5-haiku-20241022",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert_eq!(list["has_more"], false);
    let page: Value = app
        .http
        .get(format!("{}/v1/models?limit=2", app.base))
        .header("x-api-key", &customer.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], true);
    let next: Value = app
        .http
        .get(format!(
            "{}/v1/models?limit=2&after_id={}",
            app.base,
            page["last_id"].as_str().unwrap()
        ))
        .header("x-api-key", &customer.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next["data"][0]["id"], ids[2]);
    let one = app
        .http
        .get(format!("{}/v1/models/claude-opus-5-5", app.base))
        .header("x-api-key", &customer.key)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let head = app
        .http
        .head(format!("{}/", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tollgate_unflushed_usage_records"));
}

#[actix_web::test]
async fn adjustments_of_either_sign_need_a_reason_and_reach_the_books() {
    let app = spawn_app().await;
    let customer = app.customer("10").await;
    let adjust = |amount: &'static str, reason: Option<&'static str>| {
        app.admin(
            reqwest::Method::POST,
            &format!("/accounts/{}/adjust", customer.id),
        )
        .json(&json!({"amount_usd": amount, "reason": reason}))
        .send()
    };
    assert_eq!(adjust("-2.5", None).await.unwrap().status(), 400);
    assert_eq!(adjust("0", Some("nothing")).await.unwrap().status(), 400);
    let down: Value = adjust("-2.5", Some("refund of a duplicate credit"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(down["balance"], "7.5");
    let up: Value = adjust("0.25", Some("goodwill"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(up["balance"], "7.75");
    let db = app.db().await;
    let kinds: Vec<(String, rust_decimal::Decimal)> = db
        .query("SELECT kind, amount FROM ledger ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("credit".to_string(), dec("10")),
            ("adjustment".to_string(), dec("-2.5")),
            ("adjustment".to_string(), dec("0.25")),
        ]
    );
    app.books(&customer.id).await.assert_reconciled();
}

#[actix_web::test]
async fn guessing_the_admin_token_is_throttled_per_address() {
    let app = spawn_app_with(MockConfig::default(), |settings| {
        settings.auth.failed_auth_per_minute = 30;
    })
    .await;
    let account = app.create_account("guessed@b.co").await;
    let mut statuses = Vec::new();
    for guess in 0..300 {
        let response = app
            .http
            .get(format!("{}/admin/v1/accounts/{account}", app.base))
            .bearer_auth(format!("guess-{guess:04}-of-an-admin-token-xxxxxxxxxx"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        match status {
            401 => {}
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "too_many_failures");
            }
            other => panic!("guess {guess}: HTTP {other}"),
        }
        statuses.push(status);
    }
    // The minute's allowance of 30 failures, then 429s. The allowance refills one failure
    // every 2 s, so a slow machine may see a few more 401s later on, never many.
    assert!(statuses[..30].iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(statuses[30], 429);
    let later_refusals = statuses[30..].iter().filter(|&&s| s == 401).count();
    assert!(
        later_refusals <= 20,
        "{later_refusals} guesses got through the throttle"
    );
    // The real token still works: the throttle slows guessing, it does not lock the operator
    // out.
    let ok = app
        .admin(reqwest::Method::GET, &format!("/accounts/{account}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[actix_web::test]
async fn an_admin_request_without_the_token_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let address = app.base.trim_start_matches("http://").to_string();
    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    // A 32 MiB body is announced and never sent: the answer must not wait for it.
    socket
        .write_all(
            format!(
                "POST /admin/v1/accounts HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 33554432\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..read]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

#[actix_web::test]
async fn metrics_need_a_private_address_or_the_metrics_token() {
    const TOKEN: &str = "a-scrapers-metrics-token";
    // Tests reach tollgate over loopback, which counts as private: switch that off to play a
    // client on the public internet.
    let app = spawn_app_with(MockConfig::default(), |settings| {
        settings.metrics.allow_private = false;
        settings.metrics.token = TOKEN.into();
    })
    .await;
    let url = format!("{}/metrics", app.base);
    for token in [None, Some("a-wrong-token")] {
        let mut request = app.http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{token:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let scraped = app.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped
        .text()
        .await
        .unwrap()
        .contains("tollgate_unflushed_usage_records"));
}

#[actix_web::test]
async fn an_oversized_admin_body_is_refused_413_in_the_apis_json_shape() {
    let app = spawn_app().await;
    let huge = format!("{{\"email\":\"{}@example.com\"}}", "a".repeat(300_000));
    let response = app
        .admin(reqwest::Method::POST, "/accounts")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large", "{error}");
    let count: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "nothing was created");
}
