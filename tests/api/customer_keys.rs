//! The customer's own API keys (`/api/v1/keys`) and the whole self-service path: register,
//! verify by the emailed link, log in, create a key, call the proxy, see the request in usage
//! and in the ledger.

use mock_anthropic::MockConfig;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::smtp_sink::SmtpSink;

pub const PASSWORD: &str = "keys and 42 locks";
pub const MODEL: &str = "claude-sonnet-4-5";

impl TestApp {
    /// A verified customer with a session: registered, its verification token planted as the
    /// email would carry it, logged in. Returns (account id, session token).
    pub async fn verified_customer(&self, email: &str) -> (String, String) {
        let response = self
            .api(Method::POST, "/auth/register")
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let id = created["id"].as_str().unwrap().to_string();
        // Operators' accounts count as verified; this one is marked so by the database, as
        // the emailed link would (the link itself is tested end to end below).
        self.db()
            .await
            .execute(
                "UPDATE accounts SET email_verified = true WHERE id = $1",
                &[&id.parse::<uuid::Uuid>().unwrap()],
            )
            .await
            .unwrap();
        let session = self.session(email, PASSWORD).await;
        (id, session)
    }

    pub async fn customer_key(&self, session: &str, body: Value) -> (u16, Value) {
        let response = self
            .api(Method::POST, "/keys")
            .bearer_auth(session)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

/// A service whose signup throttles let a test register as many customers as it needs.
pub async fn spawn(tweak: impl FnOnce(&mut tollgate::config::Settings)) -> TestApp {
    spawn_app_with(MockConfig::default(), |settings| {
        settings.accounts.signups_per_ip_per_hour = 1_000;
        settings.accounts.signups_per_block_per_hour = 1_000;
        tweak(settings);
    })
    .await
}

pub fn small_message() -> Value {
    message_body(
        MODEL,
        16,
        false,
        json!({"input_tokens": 10, "output_tokens": 4}),
    )
}

#[actix_web::test]
async fn register_verify_log_in_create_a_key_call_and_see_it_billed() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn(move |settings| {
        settings.email.smtp_url = url;
        settings.email.from = "tollgate <noreply@example.com>".into();
        settings.server.public_url = "https://tollgate.example".into();
    })
    .await;
    let email = "whole.path@example.com";
    let response = app
        .api(Method::POST, "/auth/register")
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let session = app.session(email, PASSWORD).await;

    // Unverified: the account can see its page but gets no key.
    let (status, refused) = app.customer_key(&session, json!({"name": "early"})).await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not verified"));
    assert_eq!(app.me(&session).await.status(), 200);
    // Nor from the operator: an unverified account cannot reach the proxy at all.
    let by_operator = app
        .admin(Method::POST, &format!("/accounts/{id}/keys"))
        .json(&json!({"name": "override"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_operator.status(), 403);

    let mail = sink.wait_for(email).await;
    let token = mail.token_of("/verify-email");
    let verified = app
        .api(Method::POST, "/auth/verify-email")
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);

    app.credit(&id, "5").await;
    let (status, key) = app.customer_key(&session, json!({"name": "laptop"})).await;
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().unwrap();
    assert!(secret.starts_with("sk-tg-"));
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    let key_id = key["id"].as_str().unwrap();

    let answer = app.messages(secret, &small_message()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let request_id = answer.headers()["request-id"].to_str().unwrap().to_string();
    let message: Value = answer.json().await.unwrap();
    let cost = expected_cost(&SONNET_4_5, &usage_of_message(&message));
    app.wait_settled(&id).await;
    app.flush().await;

    let usage: Value = app
        .api(Method::GET, "/usage")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = usage["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    let row = &rows[0];
    let hex = request_id.strip_prefix("req_").unwrap();
    assert_eq!(row["request_id"].as_str().unwrap().replace('-', ""), hex);
    assert_eq!(row["key_id"], key_id);
    assert_eq!(row["model"], MODEL);
    assert_eq!(dec(row["cost_usd"].as_str().unwrap()), cost);
    assert_eq!(row["status"], "completed");
    assert!(row["latency_ms"].as_i64().unwrap() >= 0);
    assert!(usage["next_cursor"].is_null());

    let ledger: Value = app
        .api(Method::GET, "/ledger")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = ledger["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ledger}");
    assert_eq!(entries[0]["kind"], "usage");
    assert_eq!(dec(entries[0]["amount_usd"].as_str().unwrap()), -cost);
    assert_eq!(
        dec(entries[0]["balance_after"].as_str().unwrap()),
        dec("5") - cost
    );
    assert_eq!(entries[1]["kind"], "credit");
    assert_eq!(entries[1]["amount_usd"], "5");

    // The key list shows the use, and never the key.
    let listed: Value = app
        .api(Method::GET, "/keys")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &listed["data"][0];
    assert_eq!(listed["id"], key_id);
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert_eq!(dec(listed["spent_usd"].as_str().unwrap()), cost);
    assert!(listed.get("key").is_none());
    assert!(!listed.to_string().contains(secret));
}

#[actix_web::test]
async fn without_required_verification_a_new_account_creates_keys_at_once() {
    let app = spawn(|settings| settings.accounts.require_email_verification = false).await;
    app.api(Method::POST, "/auth/register")
        .json(&json!({"email": "quick@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let session = app.session("quick@example.com", PASSWORD).await;
    let (status, key) = app.customer_key(&session, json!({"name": "now"})).await;
    assert_eq!(status, 201, "{key}");
}

#[actix_web::test]
async fn a_revoked_key_is_refused_from_the_next_request() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("revoker@example.com").await;
    app.credit(&id, "2").await;
    let (_, key) = app
        .customer_key(&session, json!({"name": "short-lived"}))
        .await;
    let secret = key["key"].as_str().unwrap();
    let key_id = key["id"].as_str().unwrap();
    assert_eq!(
        app.messages(secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let revoked = app
        .api(Method::DELETE, &format!("/keys/{key_id}"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(
        app.messages(secret, &small_message())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let again = app
        .api(Method::DELETE, &format!("/keys/{key_id}"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "a revoked key is revoked once");
    let listed: Value = app
        .api(Method::GET, "/keys")
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["data"][0]["revoked_at"].is_string());
}

#[actix_web::test]
async fn bad_key_requests_name_the_field_and_create_nothing() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("careful@example.com").await;
    let cases = [
        (json!({"name": "x", "colour": "red"}), "colour"),
        (json!({"name": 7}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"allowed_ips": ["10.0.0.0/33"]}), "allowed_ips"),
        (json!({"daily_spend_usd": "0"}), "daily_spend_usd"),
        (json!({"total_spend_usd": 5}), "total_spend_usd"),
        (json!({"expires_at": "2020-01-01T00:00:00Z"}), "expires_at"),
        (json!({"models": ["no-such-model"]}), "models"),
        (json!({"max_concurrent": 1_000_000}), "max_concurrent"),
    ];
    for (body, field) in cases {
        let (status, error) = app.customer_key(&session, body.clone()).await;
        assert_eq!(status, 400, "{body} → {error}");
        assert!(
            error["error"]["field"].as_str().unwrap().starts_with(field),
            "{body} → {error}"
        );
    }
    let stored: i64 = app
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM api_keys WHERE account_id = $1",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[actix_web::test]
async fn sessions_and_keys_do_not_open_each_others_doors() {
    let app = spawn(|_| {}).await;
    let (id, session) = app.verified_customer("doors@example.com").await;
    app.credit(&id, "1").await;
    let (_, key) = app.customer_key(&session, json!({})).await;
    let secret = key["key"].as_str().unwrap();
    let as_key = app
        .messages(&session, &small_message())
        .send()
        .await
        .unwrap();
    assert_eq!(as_key.status(), 401, "a session is not an API key");
    let as_session = app
        .api(Method::GET, "/keys")
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    assert_eq!(as_session.status(), 401, "an API key is not a session");
    let admin = app
        .http
        .get(format!("{}/admin/v1/accounts/{id}", app.base))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 401, "a session never reaches /admin");
}

#[actix_web::test]
async fn an_account_holds_at_most_a_hundred_active_keys() {
    let app = spawn(|_| {}).await;
    let (_, session) = app.verified_customer("hoarder@example.com").await;
    let mut last = Value::Null;
    for n in 0..100 {
        let (status, key) = app
            .customer_key(&session, json!({"name": format!("k{n}")}))
            .await;
        assert_eq!(status, 201, "{key}");
        last = key;
    }
    let (status, refused) = app
        .customer_key(&session, json!({"name": "one more"}))
        .await;
    assert_eq!(status, 409, "{refused}");
    let revoked = app
        .api(
            Method::DELETE,
            &format!("/keys/{}", last["id"].as_str().unwrap()),
        )
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let (status, _) = app
        .customer_key(&session, json!({"name": "one more"}))
        .await;
    assert_eq!(status, 201, "a revoked key frees its place");
}
