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
    app.unsuspend(&customer.id).await;
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
            .count_tokens(
                &customer.key,
                &json!({"model": "claude-opus-5-5", "messages": [], "mock": mock}),
            )
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

/// Once every hold is gone and flushed, the balance is still `balance` and no usage row exists.
async fn assert_nothing_billed(app: &TestApp, account: &str, balance: &str) {
    app.wait_settled(account).await;
    app.flush().await;
    assert_eq!(app.balance(account).await, dec(balance));
    assert_eq!(app.books(account).await.usage_rows, 0);
}

/// An upstream error for `mock`'s status and message, asked of `/v1/messages` (streaming or
/// not) and of `/v1/messages/count_tokens`: the three answers.
async fn upstream_error_answers(app: &TestApp, key: &str, mock: Value) -> Vec<reqwest::Response> {
    let mut answers = Vec::new();
    for stream in [false, true] {
        let body = message_body("claude-opus-5-5", 10, stream, mock.clone());
        answers.push(app.messages(key, &body).send().await.unwrap());
    }
    let counted = app
        .count_tokens(
            key,
            &json!({"model": "claude-opus-5-5", "messages": [], "mock": mock}),
        )
        .send()
        .await
        .unwrap();
    answers.push(counted);
    answers
}

#[actix_web::test]
async fn an_upstream_error_naming_the_operators_organization_reaches_the_customer_without_it() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let secrets = [
        "7f3e9a6c",
        "org_01HX",
        "1,234.56",
        "organization",
        "credit balance",
    ];
    for (status, kind, message) in [
        (
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization (7f3e9a6c-1111-2222-3333-444455556666) of 400,000 input tokens per minute. Your credit balance is $1,234.56.",
        ),
        (
            529,
            "overloaded_error",
            "Overloaded: organization org_01HX has a credit balance of 1,234.56 USD",
        ),
        (
            500,
            "api_error",
            "Internal error for organization org_01HX (credit balance $1,234.56)",
        ),
        (
            400,
            "invalid_request_error",
            "messages.0.content: invalid for organization org_01HX, credit balance $1,234.56",
        ),
    ] {
        let mock = json!({"status": status, "error_message": message});
        for answer in upstream_error_answers(&app, &customer.key, mock).await {
            let body = assert_error(answer, status, kind).await;
            let told = body["error"]["message"].as_str().unwrap();
            for secret in secrets {
                assert!(!told.contains(secret), "{secret:?} reached the customer: {body}");
            }
        }
    }
    // An empty prepaid balance of the operator's is the operator's trouble, not a bad request
    // of the customer's.
    let mock = json!({
        "status": 400,
        "error_message": "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
    });
    for answer in upstream_error_answers(&app, &customer.key, mock).await {
        let body = assert_error(answer, 502, "api_error").await;
        let told = body["error"]["message"].as_str().unwrap();
        assert!(!told.contains("credit balance"), "{body}");
        assert!(told.contains("upstream"), "{body}");
    }
    assert_nothing_billed(&app, &customer.id, "1").await;
}

#[actix_web::test]
async fn a_prompt_too_long_error_keeps_the_words_and_numbers_claude_code_compacts_on() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let mock = json!({
        "status": 400,
        "error_message": "prompt is too long: 212345 tokens > 200000 maximum",
    });
    for answer in upstream_error_answers(&app, &customer.key, mock).await {
        let body = assert_error(answer, 400, "invalid_request_error").await;
        assert_eq!(
            body["error"]["message"],
            "prompt is too long: 212345 tokens > 200000 maximum"
        );
    }
    let mock = json!({
        "status": 400,
        "error_message": "input length and `max_tokens` exceed context limit: 187254 + 20000 > 204798, decrease input length or `max_tokens` and try again",
    });
    let body = message_body("claude-opus-5-5", 10, true, mock);
    let answer = app.messages(&customer.key, &body).send().await.unwrap();
    let body = assert_error(answer, 400, "invalid_request_error").await;
    assert_eq!(
        body["error"]["message"],
        "input length and `max_tokens` exceed context limit: 187254 + 20000 > 204798, decrease input length or `max_tokens` and try again"
    );
}

#[actix_web::test]
async fn an_oversized_upstream_error_body_is_answered_502_and_not_passed_on() {
    let app = spawn_app().await;
    // The request body carries the message, so its hold is a few dollars.
    let customer = app.customer("5").await;
    // Four times the 64 KiB tollgate reads of an error body.
    let huge = "organization org_01HX ".repeat(12_000);
    let mock = json!({"status": 400, "error_message": huge});
    for answer in upstream_error_answers(&app, &customer.key, mock).await {
        let length = answer.content_length();
        let body = assert_error(answer, 502, "api_error").await;
        assert!(length.is_some_and(|n| n < 1024), "{length:?} bytes");
        let told = body["error"]["message"].as_str().unwrap();
        assert!(told.contains("larger than"), "{body}");
        assert!(!told.contains("org_01HX"), "{body}");
    }
    assert_nothing_billed(&app, &customer.id, "5").await;
}

#[actix_web::test]
async fn an_oversized_non_streaming_message_is_answered_502_and_its_hold_released() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    // Three million words of output, about 19 MiB: more than the 16 MiB tollgate holds of a
    // Message.
    let tokens = 3_000_000;
    let body = message_body(
        "claude-haiku-5-5",
        tokens,
        false,
        json!({"output_tokens": tokens}),
    );
    let answer = app.messages(&customer.key, &body).send().await.unwrap();
    let body = assert_error(answer, 502, "api_error").await;
    let told = body["error"]["message"].as_str().unwrap();
    assert!(told.contains("larger than"), "{body}");
    // Its usage is never read, so the hold is released: nothing is billed, nothing held.
    let view = app.wait_settled(&customer.id).await;
    assert_eq!(view["balance"], "5", "{view}");
    app.flush().await;
    let books = app.books(&customer.id).await;
    assert_eq!((books.usage_rows, books.stored_balance), (0, dec("5")));
    books.assert_reconciled();
}

/// The data of each `event: error` in an SSE body.
fn error_events(sse: &str) -> Vec<Value> {
    sse.split("\n\n")
        .filter_map(|event| event.strip_prefix("event: error\ndata: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[actix_web::test]
async fn an_error_event_mid_stream_reaches_the_customer_in_tollgates_words() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    let message = "Overloaded: organization org_01HX has a credit balance of 1,234.56 USD";
    let body = message_body(
        "claude-opus-5-5",
        1000,
        true,
        json!({"input_tokens": 100, "output_tokens": 100, "error_after_tokens": 20,
            "tokens_per_chunk": 1, "error_message": message}),
    );
    let response = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = response.text().await.unwrap();
    for secret in ["org_01HX", "1,234.56", "organization", "credit balance"] {
        assert!(
            !text.contains(secret),
            "{secret:?} reached the customer: {text}"
        );
    }
    // The type is kept, the message is tollgate's, and the request id is the response's.
    assert_eq!(
        error_events(&text),
        vec![json!({
            "type": "error",
            "error": {"type": "overloaded_error", "message": "the upstream provider is overloaded; retry shortly"},
            "request_id": request_id,
        })]
    );
    // Everything before it came through: the prompt's usage and the twenty deltas.
    assert_eq!(usage_of_stream(&text).input, 100);
    assert_eq!(text.matches("event: content_block_delta\n").count(), 20);
    app.wait_settled(&customer.id).await;
    assert!(app.balance(&customer.id).await < dec("5"));
}
