//! Per-key policies: created with the key through the admin API (the same function the
//! customer API will call), refused field by field when wrong, listed with the key, and
//! enforced on the proxy from memory: the model allowlist, the address allowlist, the expiry,
//! the spend caps and the key's own rate limits.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use tollgate::startup::Application;

use crate::helpers::*;

const MODEL: &str = "claude-sonnet-4-5";
const OTHER_MODEL: &str = "claude-haiku-4-5";

impl TestApp {
    /// Creates a key with the given body; answers the status and the JSON.
    async fn create_key_with(&self, account: &str, body: Value) -> (u16, Value) {
        let response = self
            .admin(Method::POST, &format!("/accounts/{account}/keys"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn list_keys(&self, account: &str) -> Vec<Value> {
        let response = self
            .admin(Method::GET, &format!("/accounts/{account}/keys"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["data"].as_array().unwrap().clone()
    }

    /// A funded account and a key created with `policy`; answers (account, key).
    async fn customer_with_policy(&self, balance: &str, policy: Value) -> (String, String) {
        let account = self
            .create_account(&format!("{}@example.com", uuid::Uuid::new_v4().simple()))
            .await;
        self.credit(&account, balance).await;
        let (status, body) = self.create_key_with(&account, policy).await;
        assert_eq!(status, 201, "{body}");
        (account, body["key"].as_str().unwrap().to_string())
    }
}

fn small_message(model: &str) -> Value {
    message_body(model, 16, false, json!({"output_tokens": 4}))
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[actix_web::test]
async fn a_model_outside_the_allowlist_is_refused_before_the_upstream_is_called() {
    let app = spawn_app().await;
    let (_, key) = app
        .customer_with_policy("10", json!({"name": "k", "models": [MODEL]}))
        .await;
    let (status, body) = error_of(
        app.messages(&key, &small_message(OTHER_MODEL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(OTHER_MODEL));
    assert_eq!(
        app.mock_stats().await.messages,
        0,
        "the upstream was never called"
    );

    let counted = app
        .count_tokens(&key, &small_message(OTHER_MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(counted.status(), 403);
    assert_eq!(app.mock_stats().await.count_tokens, 0);

    let allowed = app
        .messages(&key, &small_message(MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(app.mock_stats().await.messages, 1);
    let db = app.db().await;
    let rows: i64 = db
        .query_one("SELECT count(*) FROM usage", &[])
        .await
        .map(|row| row.get(0))
        .unwrap();
    assert!(rows <= 1, "the refused request left no usage row");
}

#[actix_web::test]
async fn the_models_list_shows_only_the_allowed_models() {
    let app = spawn_app().await;
    let (_, key) = app
        .customer_with_policy("1", json!({"models": [MODEL, OTHER_MODEL]}))
        .await;
    let get = |path: String| {
        app.http
            .get(format!("{}{path}", app.base))
            .header("x-api-key", &key)
            .send()
    };
    let list: Value = get("/v1/models?limit=1000".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [OTHER_MODEL, MODEL]);
    assert_eq!(
        get(format!("/v1/models/{MODEL}")).await.unwrap().status(),
        200
    );
    assert_eq!(
        // The dated id is a model of its own on the card, and the list names ids exactly.
        get("/v1/models/claude-sonnet-4-5-20250929".into())
            .await
            .unwrap()
            .status(),
        404
    );
}

#[actix_web::test]
async fn an_address_outside_the_allowlist_is_refused_and_one_inside_passes() {
    let app = spawn_app().await;
    let (_, outside) = app
        .customer_with_policy("10", json!({"allowed_ips": ["10.0.0.0/8"]}))
        .await;
    let (status, body) = error_of(
        app.messages(&outside, &small_message(MODEL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(app.mock_stats().await.messages, 0);

    let (_, inside) = app
        .customer_with_policy("10", json!({"allowed_ips": ["10.0.0.0/8", "127.0.0.0/8"]}))
        .await;
    let response = app
        .messages(&inside, &small_message(MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn an_expired_key_is_refused_as_unauthenticated() {
    let app = spawn_app().await;
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (_, key) = app
        .customer_with_policy("10", json!({"expires_at": expires_at}))
        .await;
    let before = app
        .messages(&key, &small_message(MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    let wait = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    let (status, body) = error_of(
        app.messages(&key, &small_message(MODEL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[actix_web::test]
async fn bad_policies_are_refused_by_field_and_create_nothing() {
    let app = spawn_app().await;
    // The harness's accounts allow 100000 requests a minute, unlimited tokens and concurrency.
    let account = app.create_account("policies@example.com").await;
    app.admin(Method::PUT, &format!("/accounts/{account}/limits"))
        .json(&json!({"requests_per_minute": 60, "tokens_per_minute": 1000, "max_concurrent": 0}))
        .send()
        .await
        .unwrap();
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    let cases = [
        (json!({"allowed_ips": ["10.0.0.300"]}), "allowed_ips"),
        (json!({"allowed_ips": ["10.0.0.0/40"]}), "allowed_ips"),
        (json!({"allowed_ips": []}), "allowed_ips"),
        (json!({"daily_spend_usd": "0"}), "daily_spend_usd"),
        (json!({"total_spend_usd": "-1"}), "total_spend_usd"),
        (json!({"total_spend_usd": "1.0000001"}), "total_spend_usd"),
        (json!({"expires_at": past}), "expires_at"),
        (json!({"models": [""]}), "models"),
        (json!({"models": ["m".repeat(101)]}), "models"),
        (json!({"requests_per_minute": 61}), "requests_per_minute"),
        (json!({"tokens_per_minute": 1001}), "tokens_per_minute"),
        (json!({"name": "n".repeat(101)}), "name"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.create_key_with(&account, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
    }
    // Wrong types and unknown fields are refused too.
    for body in [
        json!({"requests_per_minute": "fast"}),
        json!({"model": ["x"]}),
    ] {
        let (status, answer) = app.create_key_with(&account, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
    }
    assert!(app.list_keys(&account).await.is_empty());

    // Limits at or under the account's, and any concurrency on an unlimited one, are fine.
    let (status, answer) = app
        .create_key_with(
            &account,
            json!({"requests_per_minute": 60, "tokens_per_minute": 0, "max_concurrent": 500}),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[actix_web::test]
async fn the_key_list_shows_each_policy_and_never_the_key() {
    let app = spawn_app().await;
    let expires_at = "2099-01-01T00:00:00Z";
    let (account, key) = app
        .customer_with_policy(
            "1",
            json!({"name": "ci", "models": [MODEL], "allowed_ips": ["192.0.2.0/24", "::1"],
                   "expires_at": expires_at, "daily_spend_usd": "1.50",
                   "total_spend_usd": "20", "requests_per_minute": 10}),
        )
        .await;
    let keys = app.list_keys(&account).await;
    assert_eq!(keys.len(), 1);
    let listed = &keys[0];
    assert_eq!(listed["models"], json!([MODEL]));
    assert_eq!(listed["allowed_ips"], json!(["192.0.2.0/24", "::1/128"]));
    assert_eq!(listed["expires_at"], expires_at);
    assert_eq!(listed["daily_spend_usd"], "1.5");
    assert_eq!(listed["total_spend_usd"], "20");
    assert_eq!(listed["requests_per_minute"], 10);
    assert_eq!(listed["max_concurrent"], 0);
    assert_eq!(listed["spent_usd"], "0");
    assert!(!listed.to_string().contains(&key));
}

#[actix_web::test]
async fn policies_are_loaded_with_the_keys_at_startup() {
    let mut app = spawn_app().await;
    let (_, key) = app
        .customer_with_policy("10", json!({"models": [MODEL]}))
        .await;
    let settings = app.settings.clone();
    app.shutdown.cancel();
    (&mut app.stopped).await.unwrap().unwrap();

    let next = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", next.port());
    let shutdown = next.shutdown_trigger();
    let stopped = actix_web::rt::spawn(next.run_until_stopped());
    let refused = app
        .messages_at(&base, &key, &small_message(OTHER_MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let allowed = app
        .messages_at(&base, &key, &small_message(MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    shutdown.cancel();
    stopped.await.unwrap().unwrap();
}

/// The sum of the usage rows of `key` once everything has settled and flushed.
async fn billed_to_key(app: &TestApp, account: &str, key_id: &str) -> rust_decimal::Decimal {
    app.wait_settled(account).await;
    app.flush().await;
    let db = app.db().await;
    let key_id = uuid::Uuid::parse_str(key_id).unwrap();
    db.query_one(
        "SELECT coalesce(sum(cost), 0) FROM usage WHERE key_id = $1",
        &[&key_id],
    )
    .await
    .unwrap()
    .get(0)
}

/// A request whose hold (about 0.0021 USD on this model) and cost (about 0.0015 USD) are
/// each a sizeable part of a cent.
fn costly_message() -> Value {
    message_body(
        MODEL,
        100,
        false,
        json!({"input_tokens": 10, "output_tokens": 100}),
    )
}

#[actix_web::test]
async fn parallel_requests_cannot_pass_a_total_spend_cap() {
    let app = spawn_app().await;
    let account = app.create_account("capped@example.com").await;
    app.credit(&account, "10").await;
    let (status, created) = app
        .create_key_with(&account, json!({"total_spend_usd": "0.01"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();

    let body = costly_message();
    let answers = futures_util::future::join_all(
        (0..50).map(|_| async { error_of(app.messages(&key, &body).send().await.unwrap()).await }),
    )
    .await;
    let passed = answers.iter().filter(|(status, _)| *status == 200).count();
    let capped: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 402)
        .collect();
    assert!(passed > 0, "some requests fit under the cap");
    assert_eq!(passed + capped.len(), 50, "{answers:?}");
    for (_, body) in &capped {
        assert_eq!(body["error"]["type"], "billing_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("total_spend_usd"), "{message}");
        assert!(message.contains("0.01 USD"), "{message}");
    }
    let billed = billed_to_key(&app, &account, &key_id).await;
    assert!(billed <= dec("0.01"), "billed {billed} past the cap");
    // At least one request's cost: how many of the 50 fit depends on how their holds and
    // settles interleave (once, under a loaded machine, only three did).
    assert!(billed > dec("0.001"), "the cap was used: {billed}");
}

#[actix_web::test]
async fn a_daily_spend_cap_refuses_once_the_day_is_spent_and_survives_a_restart() {
    let mut app = spawn_app().await;
    let account = app.create_account("daily@example.com").await;
    app.credit(&account, "10").await;
    let (status, created) = app
        .create_key_with(&account, json!({"daily_spend_usd": "0.006"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    let body = costly_message();
    let mut refusal = None;
    for _ in 0..10 {
        let (status, answer) = error_of(app.messages(&key, &body).send().await.unwrap()).await;
        if status != 200 {
            refusal = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refusal.expect("the daily cap refused a request");
    assert_eq!(status, 402, "{answer}");
    assert_eq!(answer["error"]["type"], "billing_error");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("daily_spend_usd"));
    let billed = billed_to_key(&app, &account, &key_id).await;
    assert!(billed <= dec("0.006"), "billed {billed} past the cap");
    let listed = app.list_keys(&account).await;
    assert_eq!(listed[0]["spent_usd"], billed.normalize().to_string());
    assert_eq!(listed[0]["spent_today_usd"], billed.normalize().to_string());

    // Another key of the same account is not held back by this one's cap.
    let (status, other) = app.create_key_with(&account, json!({})).await;
    assert_eq!(status, 201);
    let other_key = other["key"].as_str().unwrap();

    // The next instance sums what the key spent today from its usage rows.
    let settings = app.settings.clone();
    app.shutdown.cancel();
    (&mut app.stopped).await.unwrap().unwrap();
    let next = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", next.port());
    let shutdown = next.shutdown_trigger();
    let stopped = actix_web::rt::spawn(next.run_until_stopped());
    let (status, answer) =
        error_of(app.messages_at(&base, &key, &body).send().await.unwrap()).await;
    assert_eq!(status, 402, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("daily_spend_usd"));
    let response = app
        .messages_at(&base, other_key, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    shutdown.cancel();
    stopped.await.unwrap().unwrap();
}

#[actix_web::test]
async fn a_key_of_the_old_format_still_works_and_a_malformed_new_one_is_refused() {
    let mut app = spawn_app().await;
    let customer = app.customer("10").await;
    // A key of the shape issued before the checksum: 40 random characters after the prefix.
    let legacy = format!("sk-tg-{}", "Ab3d".repeat(10));
    let digest = tollgate::auth::KeyRing::new(&app.settings.auth.key_secret, 0).digest(&legacy);
    let account = uuid::Uuid::parse_str(&customer.id).unwrap();
    app.db()
        .await
        .execute(
            "INSERT INTO api_keys (id, account_id, name, prefix, digest)
             VALUES ($1, $2, 'legacy', 'sk-tg-Ab3dAb', $3)",
            &[&uuid::Uuid::now_v7(), &account, &digest.as_slice()],
        )
        .await
        .unwrap();

    // The current key has a checksum: one character changed, and it is refused.
    let mut broken = customer.key.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == 'a' { 'b' } else { 'a' });
    let (status, body) = error_of(
        app.messages(&broken, &small_message(MODEL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");

    // Keys are loaded at startup, which is how a key issued long ago reaches the lookup.
    let settings = app.settings.clone();
    app.shutdown.cancel();
    (&mut app.stopped).await.unwrap().unwrap();
    let next = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", next.port());
    let shutdown = next.shutdown_trigger();
    let stopped = actix_web::rt::spawn(next.run_until_stopped());
    for key in [&legacy, &customer.key] {
        let response = app
            .messages_at(&base, key, &small_message(MODEL))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    shutdown.cancel();
    stopped.await.unwrap().unwrap();
}

/// A message the simulated upstream answers after `ttft_ms`.
fn slow_message(ttft_ms: u64) -> Value {
    message_body(
        MODEL,
        16,
        false,
        json!({"output_tokens": 4, "ttft_ms": ttft_ms}),
    )
}

#[actix_web::test]
async fn a_keys_own_concurrency_limit_refuses_past_it_and_spares_the_accounts_other_keys() {
    let app = spawn_app().await;
    let account = app.create_account("narrow@example.com").await;
    app.credit(&account, "10").await;
    let (status, created) = app
        .create_key_with(&account, json!({"max_concurrent": 2}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["max_concurrent"], 2);
    let key = created["key"].as_str().unwrap().to_string();
    let (_, open) = app.create_key_with(&account, json!({})).await;
    let open = open["key"].as_str().unwrap().to_string();

    let body = slow_message(1500);
    let answers = futures_util::future::join_all(
        (0..6).map(|_| async { error_of(app.messages(&key, &body).send().await.unwrap()).await }),
    )
    .await;
    let passed = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert_eq!(passed, 2, "{answers:?}");
    assert_eq!(refused.len(), 4, "{answers:?}");
    for (_, body) in refused {
        assert_eq!(body["error"]["type"], "rate_limit_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("concurrent requests for this API key"),
            "{message}"
        );
    }
    // While the limited key's two run, another key of the account still gets through.
    let running = futures_util::future::join_all(
        (0..2).map(|_| async { app.messages(&key, &body).send().await.unwrap().status() }),
    );
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.messages(&open, &small_message(MODEL))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (running, other) = futures_util::future::join(running, other).await;
    assert!(running.iter().all(|status| *status == 200), "{running:?}");
    assert_eq!(other, 200);
}

#[actix_web::test]
async fn a_keys_own_request_limit_refuses_past_it_and_the_refusal_spends_nothing_else() {
    let app = spawn_app().await;
    let account = app.create_account("slowpoke@example.com").await;
    app.credit(&account, "10").await;
    let (status, created) = app
        .create_key_with(&account, json!({"requests_per_minute": 3}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (status, body) = error_of(
            app.messages(&key, &small_message(MODEL))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let refused = app
        .messages(&key, &small_message(MODEL))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests per minute for this API key"));
    // The account's own allowance and balance were not touched by the refusal.
    let view = app.wait_settled(&account).await;
    assert_eq!(view["held"], "0");
    let (_, open) = app.create_key_with(&account, json!({})).await;
    let open = open["key"].as_str().unwrap();
    assert_eq!(
        app.messages(open, &small_message(MODEL))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[actix_web::test]
async fn a_keys_own_token_limit_counts_what_its_requests_used() {
    let app = spawn_app().await;
    let account = app.create_account("frugal@example.com").await;
    app.credit(&account, "10").await;
    let (status, created) = app
        .create_key_with(&account, json!({"tokens_per_minute": 1000}))
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    // One request that reports 2,000 tokens used leaves the key in debt for the minute.
    let heavy = message_body(
        MODEL,
        4096,
        false,
        json!({"input_tokens": 10, "output_tokens": 2000}),
    );
    let (status, body) = error_of(app.messages(&key, &heavy).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = error_of(
        app.messages(&key, &small_message(MODEL))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute for this API key"));
}
