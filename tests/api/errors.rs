//! Bad input gets a clear Anthropic-shaped error, and nothing changes.

use mock_anthropic::MockConfig;
use serde_json::{json, Value};

use crate::helpers::*;

async fn assert_error(response: reqwest::Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let request_id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let retry = response
        .headers()
        .get("x-should-retry")
        .map(|v| v.to_str().unwrap().to_string());
    let retry_after = response.headers().get("retry-after").is_some();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(
        body["request_id"],
        request_id.as_str(),
        "error body carries the response's request id"
    );
    if matches!(status, 401..=403) {
        assert_eq!(
            retry.as_deref(),
            Some("false"),
            "{kind} must not be retried"
        );
    }
    if matches!(status, 429 | 529) {
        assert!(retry_after, "{status} must carry retry-after");
    }
    body
}

#[actix_web::test]
async fn malformed_requests_get_400_and_reach_nobody() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let post_raw = |raw: &'static str| {
        app.http
            .post(format!("{}/v1/messages", app.base))
            .header("x-api-key", &customer.key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    for raw in [
        "{not json",
        r#"{"max_tokens": 10, "messages": []}"#,
        r#"{"model": "claude-opus-5-5", "messages": []}"#,
        r#"{"model": "claude-opus-5-5", "max_tokens": 0, "messages": []}"#,
        r#"{"model": "claude-opus-5-5", "max_tokens": -5, "messages": []}"#,
        r#"{"model": "claude-unknown-9", "max_tokens": 10, "messages": []}"#,
    ] {
        assert_error(post_raw(raw).await.unwrap(), 400, "invalid_request_error").await;
    }
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = app
        .messages(
            &customer.key,
            &json!({"model": "claude-opus-5-5", "max_tokens": 1, "pad": huge}),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "request_too_large").await;
    assert_eq!(
        app.mock_stats().await.messages,
        0,
        "nothing reached the upstream"
    );
    assert_eq!(app.balance(&customer.id).await, dec("1"));
}

#[actix_web::test]
async fn missing_malformed_unknown_and_revoked_keys_get_401() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    let url = format!("{}/v1/messages", app.base);
    let none = app.http.post(&url).json(&body).send().await.unwrap();
    assert_error(none, 401, "authentication_error").await;
    let malformed = app
        .http
        .post(&url)
        .header("authorization", "Basic abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(malformed, 401, "authentication_error").await;
    let unknown = app
        .messages("sk-tg-0000000000000000000000000000000000000000", &body)
        .send()
        .await
        .unwrap();
    assert_error(unknown, 401, "authentication_error").await;
    // A valid key works, then stops working the moment it is revoked.
    assert_eq!(
        app.messages(&customer.key, &body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let revoked = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/accounts/{}/keys/{}", customer.id, customer.key_id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let after = app.messages(&customer.key, &body).send().await.unwrap();
    assert_error(after, 401, "authentication_error").await;
    assert_eq!(app.mock_stats().await.messages, 1);
}

#[actix_web::test]
async fn repeated_bad_keys_from_one_address_are_throttled() {
    let app = spawn_app_with(Default::default(), |s| s.auth.failed_auth_per_minute = 5).await;
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    for _ in 0..5 {
        let response = app.messages("sk-tg-guess", &body).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }
    let throttled = app.messages("sk-tg-guess", &body).send().await.unwrap();
    assert_error(throttled, 429, "rate_limit_error").await;
}

#[actix_web::test]
async fn a_suspended_account_is_refused_before_the_upstream_is_called() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    let suspend = app
        .admin(
            reqwest::Method::POST,
            &format!("/accounts/{}/suspend", customer.id),
        )
        .json(&json!({"reason": "abuse report"}))
        .send()
        .await
        .unwrap();
    assert_eq!(suspend.status(), 200);
    let view: Value = suspend.json().await.unwrap();
    assert_eq!(view["status"], "suspended");
    assert_eq!(
        view["balance"], "1",
        "a suspended balance stays on the books"
    );
    assert_error(
        app.messages(&customer.key, &body).send().await.unwrap(),
        403,
        "permission_error",
    )
    .await;
    assert_eq!(app.mock_stats().await.messages, 0);
    let unsuspend = app
        .admin(
            reqwest::Method::POST,
            &format!("/accounts/{}/unsuspend", customer.id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(unsuspend.status(), 200);
    assert_eq!(
        app.messages(&customer.key, &body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[actix_web::test]
async fn an_insufficient_balance_gets_402_and_nothing_goes_upstream() {
    let app = spawn_app().await;
    let customer = app.customer("0.01").await;
    // max_tokens 10,000 at 20 USD/M of output alone is 0.2 USD.
    let body = message_body("claude-opus-5-5", 10_000, false, json!({}));
    let body = assert_error(
        app.messages(&customer.key, &body).send().await.unwrap(),
        402,
        "billing_error",
    )
    .await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    assert_eq!(app.mock_stats().await.messages, 0);
    assert_eq!(app.balance(&customer.id).await, dec("0.01"));
}

#[actix_web::test]
async fn rate_and_concurrency_limits_answer_429_with_retry_after() {
    let app = spawn_app().await;
    let customer = app.customer("10").await;
    let limits = app
        .admin(
            reqwest::Method::PUT,
            &format!("/accounts/{}/limits", customer.id),
        )
        .json(&json!({"requests_per_minute": 2, "tokens_per_minute": 0, "max_concurrent": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), 200);
    let body = message_body("claude-opus-5-5", 10, false, json!({}));
    for _ in 0..2 {
        assert_eq!(
            app.messages(&customer.key, &body)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_error(
        app.messages(&customer.key, &body).send().await.unwrap(),
        429,
        "rate_limit_error",
    )
    .await;

    let slow = app.customer("10").await;
    app.admin(
        reqwest::Method::PUT,
        &format!("/accounts/{}/limits", slow.id),
    )
    .json(&json!({"requests_per_minute": 0, "tokens_per_minute": 0, "max_concurrent": 1}))
    .send()
    .await
    .unwrap();
    let long = message_body("claude-opus-5-5", 10, true, json!({"ttft_ms": 1500}));
    let first = app.messages(&slow.key, &long).send();
    let second = async {
        // Once the first request holds the account's one concurrency slot.
        app.wait_view(&slow.id, |view| view["active_requests"] == 1)
            .await;
        app.messages(&slow.key, &body).send().await.unwrap()
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap().status(), 200);
    assert_error(second, 429, "rate_limit_error").await;
}

#[actix_web::test]
async fn an_upstream_error_keeps_its_status_and_shape_and_bills_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    for (status, kind) in [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
    ] {
        let body = message_body("claude-opus-5-5", 10, true, json!({"status": status}));
        assert_error(
            app.messages(&customer.key, &body).send().await.unwrap(),
            status,
            kind,
        )
        .await;
    }
    app.wait_settled(&customer.id).await;
    app.flush().await;
    assert_eq!(app.balance(&customer.id).await, dec("1"));
    assert_eq!(app.books(&customer.id).await.usage_rows, 0);
}

#[actix_web::test]
async fn unknown_v1_routes_answer_in_anthropic_shape() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/v1/nothing-here", app.base))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found_error").await;
}

#[actix_web::test]
async fn an_upstream_refusing_the_operators_credentials_is_not_blamed_on_the_customer() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    for status in [401, 403] {
        let body = message_body("claude-opus-5-5", 10, false, json!({"status": status}));
        let body = assert_error(
            app.messages(&customer.key, &body).send().await.unwrap(),
            502,
            "api_error",
        )
        .await;
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream"));
    }
    let response = app
        .http
        .get(format!("{}/v1/models?limit=abc", app.base))
        .header("x-api-key", &customer.key)
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "invalid_request_error").await;
    app.wait_settled(&customer.id).await;
    assert_eq!(app.balance(&customer.id).await, dec("1"));
}

#[actix_web::test]
async fn an_upstream_that_stays_silent_or_cannot_be_reached_gets_502_and_bills_nothing() {
    type Tweak = fn(&mut tollgate::config::Settings);
    let cases: [(Tweak, serde_json::Value, &str); 2] = [
        (
            |settings| settings.upstreams[0].timeout_secs = 1,
            json!({"ttft_ms": 3_000}),
            "timed out",
        ),
        (
            // Nothing listens on port 1.
            |settings| settings.upstreams[0].base_url = "http://127.0.0.1:1".into(),
            json!({}),
            "connection failed",
        ),
    ];
    for (tweak, mock, words) in cases {
        let app = spawn_app_with(MockConfig::default(), tweak).await;
        let customer = app.customer("1").await;
        let body = message_body("claude-opus-5-5", 10, false, mock.clone());
        let body = assert_error(
            app.messages(&customer.key, &body).send().await.unwrap(),
            502,
            "api_error",
        )
        .await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{words:?} not in {body}");
        let counted = app
            .http
            .post(format!("{}/v1/messages/count_tokens", app.base))
            .header("x-api-key", &customer.key)
            .json(&json!({"model": "claude-opus-5-5", "messages": [], "mock": mock}))
            .send()
            .await
            .unwrap();
        let counted = assert_error(counted, 502, "api_error").await;
        let message = counted["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(words),
            "count_tokens: {words:?} not in {counted}"
        );
        app.wait_settled(&customer.id).await;
        app.flush().await;
        assert_eq!(app.balance(&customer.id).await, dec("1"));
        assert_eq!(app.books(&customer.id).await.usage_rows, 0);
    }
}
