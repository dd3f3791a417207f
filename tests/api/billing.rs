//! Requests are billed to the exact decimal the rate card gives.

use serde_json::{json, Value};

use crate::helpers::*;

async fn assert_billed(
    app: &TestApp,
    customer: &Customer,
    before: rust_decimal::Decimal,
    prices: &TestPrices,
    seen: &SeenUsage,
) {
    let expected = expected_cost(prices, seen);
    app.wait_settled(&customer.id).await;
    assert_eq!(
        app.balance(&customer.id).await,
        before - expected,
        "live balance"
    );
    app.flush().await;
    let books = app.books(&customer.id).await;
    assert_eq!(books.usage_cost, expected, "usage row cost");
    assert_eq!(books.usage_rows, 1);
    books.assert_reconciled();
}

#[actix_web::test]
async fn a_non_streaming_request_is_billed_exactly_for_every_token_class() {
    let app = spawn_app().await;
    let customer = app.customer("50").await;
    let body = message_body(
        "claude-opus-5-5",
        1000,
        false,
        json!({"input_tokens": 1234, "output_tokens": 567, "cache_read_tokens": 8901,
               "cache_write_5m_tokens": 234, "cache_write_1h_tokens": 345}),
    );
    let response = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    let seen = usage_of_message(&message);
    assert_eq!(
        seen,
        SeenUsage {
            input: 1234,
            output: 567,
            cache_read: 8901,
            cache_5m: 234,
            cache_1h: 345,
            web_search: 0
        }
    );
    // 1234*4 + 567*20 + 8901*0.2 + 234*5 + 345*8 = 4936 + 11340 + 1780.2 + 1170 + 2760 = 21986.2 per million
    assert_eq!(expected_cost(&OPUS_5_5, &seen), dec("0.0219862"));
    assert_billed(&app, &customer, dec("50"), &OPUS_5_5, &seen).await;
}

#[actix_web::test]
async fn a_streaming_request_is_billed_from_its_final_cumulative_usage() {
    let app = spawn_app().await;
    let customer = app.customer("50").await;
    let body = message_body(
        "claude-opus-5-5",
        500,
        true,
        json!({"input_tokens": 3210, "output_tokens": 123, "cache_read_tokens": 40000,
               "cache_write_5m_tokens": 1500, "cache_write_1h_tokens": 2500, "delta_every": 40}),
    );
    let response = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.contains("event: message_stop"));
    let seen = usage_of_stream(&text);
    assert_eq!(seen.output, 123);
    assert_eq!((seen.cache_5m, seen.cache_1h), (1500, 2500));
    assert_billed(&app, &customer, dec("50"), &OPUS_5_5, &seen).await;
}

#[actix_web::test]
async fn cache_writes_without_a_ttl_breakdown_are_billed_at_the_five_minute_rate() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    let body = message_body(
        "claude-sonnet-4-5",
        200,
        true,
        json!({"input_tokens": 100, "output_tokens": 50, "cache_write_5m_tokens": 700,
               "cache_write_1h_tokens": 300, "omit_cache_breakdown": true}),
    );
    let text = app.message_text(&customer.key, &body).await;
    let seen = usage_of_stream(&text);
    assert_eq!(
        (seen.cache_5m, seen.cache_1h),
        (1000, 0),
        "all 1,000 cache-write tokens at 5m"
    );
    assert_billed(&app, &customer, dec("5"), &SONNET_4_5, &seen).await;
}

#[actix_web::test]
async fn a_prompt_over_the_tier_threshold_is_billed_entirely_at_the_long_prompt_prices() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    // 100,000 prompt tokens exactly: base tier.
    let at = message_body(
        "claude-haiku-5-5",
        300,
        false,
        json!({"input_tokens": 60000, "cache_read_tokens": 40000, "output_tokens": 200}),
    );
    let message: Value = app
        .messages(&customer.key, &at)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let base = usage_of_message(&message);
    app.wait_settled(&customer.id).await;
    let after_base = app.balance(&customer.id).await;
    assert_eq!(after_base, dec("5") - expected_cost(&HAIKU_5_5, &base));
    // One token more: the whole request, output included, at the long-prompt prices.
    let over = message_body(
        "claude-haiku-5-5",
        300,
        false,
        json!({"input_tokens": 60001, "cache_read_tokens": 40000, "output_tokens": 200}),
    );
    let message: Value = app
        .messages(&customer.key, &over)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let long = usage_of_message(&message);
    app.wait_settled(&customer.id).await;
    assert_eq!(
        app.balance(&customer.id).await,
        after_base - expected_cost(&HAIKU_5_5_LONG, &long)
    );
    app.flush().await;
    let db = app.db().await;
    let rows = db
        .query(
            "SELECT long_prompt_tier FROM usage ORDER BY started_at",
            &[],
        )
        .await
        .unwrap();
    let tiers: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(tiers, vec![false, true]);
    app.books(&customer.id).await.assert_reconciled();
}

#[actix_web::test]
async fn web_searches_are_billed_per_use() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    let body = message_body(
        "claude-opus-5-5",
        100,
        true,
        json!({"input_tokens": 10, "output_tokens": 20, "web_search_requests": 3}),
    );
    let text = app.message_text(&customer.key, &body).await;
    let seen = usage_of_stream(&text);
    assert_eq!(seen.web_search, 3);
    // 10*4 + 20*20 = 440 per million = 0.00044, plus 3 searches at 0.01
    assert_eq!(expected_cost(&OPUS_5_5, &seen), dec("0.03044"));
    assert_billed(&app, &customer, dec("5"), &OPUS_5_5, &seen).await;
}

#[actix_web::test]
async fn count_tokens_is_forwarded_and_not_billed() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    let response = app
        .http
        .post(format!("{}/v1/messages/count_tokens", app.base))
        .bearer_auth(&customer.key)
        .json(&json!({"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(app.mock_stats().await.count_tokens, 1);
    app.flush().await;
    assert_eq!(app.balance(&customer.id).await, dec("1"));
    assert_eq!(app.books(&customer.id).await.usage_rows, 0);
}

#[actix_web::test]
async fn bodies_and_anthropic_headers_pass_through_unchanged_and_upstream_headers_do_not_leak() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    // Unknown fields, a system-role message, odd spacing and key order: all must arrive as sent.
    let raw = r#"{"max_tokens": 64,  "model":"claude-opus-5-5","messages":[{"role":"system","content":"x"},{"role":"user","content":"héllo"}],"future_field":{"a":[1,2.50,null]},"mock":{"output_tokens":3}}"#;
    let response = app
        .http
        .post(format!("{}/v1/messages?beta=true", app.base))
        .header("authorization", format!("Bearer {}", customer.key))
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31,context-1m")
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let request_id = headers["request-id"].to_str().unwrap().to_string();
    assert!(request_id.starts_with("req_") && !request_id.contains("mock"));
    for leaked in [
        "anthropic-organization-id",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-limit",
    ] {
        assert!(
            !headers.contains_key(leaked),
            "{leaked} leaked to the client"
        );
    }
    let last: Value = app
        .http
        .get(format!("{}/mock/last", app.mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(last["body"], raw, "body forwarded byte for byte");
    assert_eq!(last["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(
        last["headers"]["anthropic-beta"],
        "prompt-caching-2024-07-31,context-1m"
    );
    assert_eq!(
        last["headers"]["x-api-key"], UPSTREAM_KEY,
        "the operator's key goes upstream"
    );
    assert!(
        last["headers"].get("authorization").is_none(),
        "the customer's key stays here"
    );
}
