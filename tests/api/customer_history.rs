//! What a customer reads of its past: usage pages, the CSV export, daily sums, the ledger and
//! the dashboard billing routes; bad filters refused by name; and the cross-tenant matrix, in
//! which a second customer tries every customer route against the first one's data.

use std::collections::HashSet;

use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::customer_keys::{spawn, MODEL, PASSWORD};
use crate::helpers::*;

const OTHER_MODEL: &str = "claude-haiku-4-5";

fn message(model: &str) -> Value {
    message_body(
        model,
        16,
        false,
        json!({"input_tokens": 10, "output_tokens": 4}),
    )
}

impl TestApp {
    async fn customer_get(&self, session: &str, path: &str) -> (u16, Value) {
        let response = self
            .api(Method::GET, path)
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn customer_text(&self, session: &str, path: &str) -> (u16, String) {
        let response = self
            .api(Method::GET, path)
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Every usage row through the pages of `query`, `limit` at a time.
    async fn all_usage_pages(&self, session: &str, query: &str, limit: usize) -> Vec<Value> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/usage?limit={limit}{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let (status, page) = self.customer_get(session, &path).await;
            assert_eq!(status, 200, "{page}");
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= limit);
            rows.extend(data.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return rows,
            }
        }
        panic!("the pages never ended");
    }
}

/// A customer with a balance, two keys and seven flushed requests: five with the first key
/// on `MODEL`, two with the second on `OTHER_MODEL`. Returns (account, session, first key
/// id, second key id).
async fn customer_with_history(app: &TestApp, email: &str) -> (String, String, String, String) {
    let (id, session) = app.verified_customer(email).await;
    app.credit(&id, "5").await;
    let (_, first) = app.customer_key(&session, json!({"name": "first"})).await;
    let (_, second) = app.customer_key(&session, json!({"name": "second"})).await;
    for (key, model, count) in [(&first, MODEL, 5), (&second, OTHER_MODEL, 2)] {
        for _ in 0..count {
            let response = app
                .messages(key["key"].as_str().unwrap(), &message(model))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    app.wait_settled(&id).await;
    app.flush().await;
    let key_id = |key: &Value| key["id"].as_str().unwrap().to_string();
    (id, session, key_id(&first), key_id(&second))
}

#[actix_web::test]
async fn usage_pages_cover_every_row_once_and_filter_by_model_key_and_time() {
    let app = spawn(|_| {}).await;
    let (id, session, first, second) = customer_with_history(&app, "pages@example.com").await;
    let rows = app.all_usage_pages(&session, "", 3).await;
    assert_eq!(rows.len(), 7);
    let ids: HashSet<_> = rows.iter().map(|row| row["request_id"].clone()).collect();
    assert_eq!(ids.len(), 7, "no row repeats across pages");
    let times: Vec<_> = rows
        .iter()
        .map(|row| row["created_at"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let total: Decimal = rows
        .iter()
        .map(|row| {
            row["cost_usd"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, app.books(&id).await.usage_cost);
    let row = &rows[0];
    for field in [
        "request_id",
        "created_at",
        "model",
        "key_id",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "cost_usd",
        "status",
        "latency_ms",
    ] {
        assert!(!row[field].is_null(), "{field} in {row}");
    }
    assert!(row["cost_usd"].is_string(), "money is a string");

    let by_model = app
        .all_usage_pages(&session, &format!("&model={OTHER_MODEL}"), 50)
        .await;
    assert_eq!(by_model.len(), 2);
    assert!(by_model.iter().all(|row| row["model"] == OTHER_MODEL));
    let by_key = app
        .all_usage_pages(&session, &format!("&key_id={first}"), 2)
        .await;
    assert_eq!(by_key.len(), 5);
    assert!(by_key.iter().all(|row| row["key_id"] == first.as_str()));
    let future = app
        .all_usage_pages(&session, "&from=2999-01-01T00:00:00Z", 50)
        .await;
    assert!(future.is_empty());
    let past = app
        .all_usage_pages(&session, "&to=2000-01-01T00:00:00Z", 50)
        .await;
    assert!(past.is_empty());
    let both = app
        .all_usage_pages(
            &session,
            &format!("&key_id={second}&model={OTHER_MODEL}&from=2000-01-01T00:00:00Z"),
            1,
        )
        .await;
    assert_eq!(both.len(), 2);
}

#[actix_web::test]
async fn bad_usage_filters_are_refused_by_name() {
    let app = spawn(|_| {}).await;
    let (_, session) = app.verified_customer("filters@example.com").await;
    for (query, field) in [
        ("/usage?limit=0", "limit"),
        ("/usage?limit=501", "limit"),
        ("/usage?limit=ten", "limit"),
        ("/usage?cursor=forged", "cursor"),
        ("/usage?from=yesterday", "from"),
        (
            "/usage?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "to",
        ),
        ("/usage?key_id=not-a-uuid", "key_id"),
        ("/usage?modle=x", "modle"),
        ("/usage?model=a&model=b", "model"),
        ("/usage.csv?cursor=1", "cursor"),
        (
            "/usage/daily?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "from",
        ),
        ("/ledger?cursor=-4", "cursor"),
    ] {
        let (status, error) = app.customer_get(&session, query).await;
        assert_eq!(status, 400, "{query}: {error}");
        assert_eq!(error["error"]["field"], field, "{query}: {error}");
    }
    let long_model = format!("/usage?model={}", "m".repeat(201));
    let (status, error) = app.customer_get(&session, &long_model).await;
    assert_eq!(
        (status, error["error"]["field"].clone()),
        (400, json!("model"))
    );
}

#[actix_web::test]
async fn the_csv_export_has_the_rows_of_its_filters_and_sums_to_the_books() {
    let app = spawn(|_| {}).await;
    let (id, session, _, second) = customer_with_history(&app, "export@example.com").await;
    let response = app
        .api(Method::GET, "/usage.csv")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "request_id");
    assert_eq!(header[9], "cost_usd");
    assert_eq!(header.len(), 12);
    let records: Vec<_> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 7);
    let total: Decimal = records
        .iter()
        .map(|record| record[9].parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(total, app.books(&id).await.usage_cost);

    let (status, filtered) = app
        .customer_text(&session, &format!("/usage.csv?key_id={second}"))
        .await;
    assert_eq!(status, 200);
    let mut reader = csv::Reader::from_reader(filtered.as_bytes());
    let records: Vec<_> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|record| &record[3] == second.as_str()));
}

#[actix_web::test]
async fn daily_sums_and_the_ledger_agree_with_the_usage() {
    let app = spawn(|_| {}).await;
    let (id, session, _, _) = customer_with_history(&app, "daily@example.com").await;
    let books = app.books(&id).await;
    let (status, daily) = app.customer_get(&session, "/usage/daily").await;
    assert_eq!(status, 200, "{daily}");
    let days = daily["data"].as_array().unwrap();
    assert_eq!(days.len(), 2, "one row per model today: {daily}");
    let requests: i64 = days
        .iter()
        .map(|day| day["requests"].as_i64().unwrap())
        .sum();
    assert_eq!(requests, 7);
    let cost: Decimal = days
        .iter()
        .map(|day| {
            day["cost_usd"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(cost, books.usage_cost);

    let (status, ledger) = app.customer_get(&session, "/ledger").await;
    assert_eq!(status, 200, "{ledger}");
    let entries = ledger["data"].as_array().unwrap();
    let credit = entries.iter().find(|e| e["kind"] == "credit").unwrap();
    assert_eq!(credit["amount_usd"], "5");
    let usage: Decimal = entries
        .iter()
        .filter(|e| e["kind"] == "usage")
        .map(|e| {
            e["amount_usd"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(usage, -books.usage_cost);
    let newest = &entries[0];
    assert_eq!(
        newest["balance_after"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        books.stored_balance
    );
    // Paged one at a time, the same entries come back, once each.
    let mut paged = Vec::new();
    let mut path = "/ledger?limit=1".to_string();
    loop {
        let (_, page) = app.customer_get(&session, &path).await;
        paged.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => path = format!("/ledger?limit=1&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(&paged, entries);
}

#[actix_web::test]
async fn the_dashboard_billing_routes_show_the_live_balance_in_new_apis_shape() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("dash@example.com").await;
    app.credit(&id, "2").await;
    let (_, key) = app.customer_key(&session, json!({})).await;
    let secret = key["key"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.messages(secret, &message(MODEL))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    app.wait_settled(&id).await;
    app.flush().await;
    let get = |path: &'static str| {
        app.http
            .get(format!("{}/v1/dashboard/billing/{path}", app.base))
            .bearer_auth(secret)
            .send()
    };
    let subscription: Value = get("subscription").await.unwrap().json().await.unwrap();
    assert_eq!(subscription["object"], "billing_subscription");
    // What is left plus what was spent: the 2 USD credited.
    assert_eq!(subscription["hard_limit_usd"].as_f64(), Some(2.0));
    assert_eq!(subscription["access_until"], 0);
    let usage = get("usage").await.unwrap().text().await.unwrap();
    let spent_cents = (app.books(&id).await.usage_cost * Decimal::ONE_HUNDRED).round_dp(2);
    // The number's digits are the ledger's, written from the decimal, not through a float.
    assert_eq!(
        usage,
        format!("{{\"object\":\"list\",\"total_usage\":{spent_cents}}}")
    );
    let usage: Value = serde_json::from_str(&usage).unwrap();
    assert!(usage["total_usage"].is_number());
    // A credit shows at once: the balance comes from the actor.
    app.credit(&id, "3").await;
    let subscription: Value = get("subscription").await.unwrap().json().await.unwrap();
    assert_eq!(subscription["hard_limit_usd"].as_f64(), Some(5.0));
    // A session is not an API key here either.
    let as_session = app
        .http
        .get(format!("{}/v1/dashboard/billing/subscription", app.base))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(as_session.status(), 401);
}

#[actix_web::test]
async fn no_customer_route_reads_or_changes_another_customers_data() {
    let app = spawn(|_| {}).await;
    let (victim, victim_session, victim_key, _) =
        customer_with_history(&app, "victim@example.com").await;
    let (intruder, intruder_session) = app.verified_customer("intruder@example.com").await;
    app.credit(&intruder, "1").await;
    let victim_books = app.books(&victim).await;

    // Foreign ids answer 404, as unknown ones do.
    for path in [
        format!("/usage?key_id={victim_key}"),
        format!("/usage.csv?key_id={victim_key}"),
    ] {
        let (status, body) = app.customer_get(&intruder_session, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let revoke = app
        .api(Method::DELETE, &format!("/keys/{victim_key}"))
        .bearer_auth(&intruder_session)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 404);

    // Lists show only the caller's own rows.
    let (_, keys) = app.customer_get(&intruder_session, "/keys").await;
    assert_eq!(keys["data"], json!([]));
    let (_, usage) = app.customer_get(&intruder_session, "/usage").await;
    assert_eq!(usage["data"], json!([]));
    let (_, csv) = app.customer_text(&intruder_session, "/usage.csv").await;
    assert_eq!(csv.lines().count(), 1, "only the header: {csv}");
    let (_, daily) = app.customer_get(&intruder_session, "/usage/daily").await;
    assert_eq!(daily["data"], json!([]));
    let (_, ledger) = app.customer_get(&intruder_session, "/ledger").await;
    let kinds: Vec<_> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("credit")], "only its own credit: {ledger}");
    let (_, me) = app.customer_get(&intruder_session, "/me").await;
    assert_eq!(me["id"], intruder.as_str());
    assert_eq!(me["balance"], "1");

    // A cursor taken from the victim's pages reads nothing of the victim's.
    let (_, page) = app.customer_get(&victim_session, "/usage?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, stolen) = app
        .customer_get(&intruder_session, &format!("/usage?cursor={cursor}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(stolen["data"], json!([]));

    // Logging out, changing the password and deleting touch only the caller's own.
    let logout = app
        .api(Method::POST, "/auth/logout")
        .bearer_auth(&intruder_session)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let (status, _) = app.customer_get(&victim_session, "/me").await;
    assert_eq!(status, 200, "the victim's session lives on");
    let (status, keys) = app.customer_get(&victim_session, "/keys").await;
    assert_eq!(status, 200);
    assert_eq!(keys["data"].as_array().unwrap().len(), 2);
    assert!(keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|key| key["revoked_at"].is_null()));
    // The intruder changes its password and deletes its account: the victim's stay.
    let intruder_session = app.session("intruder@example.com", PASSWORD).await;
    let changed = app
        .api(Method::PUT, "/me/password")
        .bearer_auth(&intruder_session)
        .json(&json!({"current_password": PASSWORD, "new_password": "another 9 secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 204);
    let deleted = app
        .api(Method::DELETE, "/me")
        .bearer_auth(&intruder_session)
        .json(&json!({"password": "another 9 secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, me) = app.customer_get(&victim_session, "/me").await;
    assert_eq!(status, 200, "the victim's session lives on: {me}");
    assert_eq!(me["status"], "active");
    let (_, keys) = app.customer_get(&victim_session, "/keys").await;
    assert!(keys["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|key| key["revoked_at"].is_null()));
    let after = app.books(&victim).await;
    assert_eq!(after.stored_balance, victim_books.stored_balance);
    assert_eq!(after.usage_rows, victim_books.usage_rows);
}
