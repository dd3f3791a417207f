//! Holds that bound what a request can cost: media and server tools counted from the decoded
//! body, a stream ended at `message_start` when the balance cannot cover its real prompt,
//! the long-context tier, and price-changing options priced or refused.

use futures_util::future::join_all;
use mock_anthropic::MockConfig;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Claude Haiku 4.5: its dearest prompt price (the 1-hour write) is 2 USD per million.
const HAIKU_4_5: TestPrices = TestPrices {
    input: "1",
    cache_5m: "1.25",
    cache_1h: "2",
    cache_read: "0.10",
    output: "5",
};

/// Sonnet 4.5 over 200,000 prompt tokens (the 1M-context beta).
const SONNET_4_5_LONG: TestPrices = TestPrices {
    input: "6",
    cache_5m: "7.50",
    cache_1h: "12",
    cache_read: "0.60",
    output: "22.50",
};

/// A Messages body with one URL document, as JSON text, with the mock's `overrides`.
fn url_document_body(model: &str, overrides: Value) -> String {
    json!({
        "model": model,
        "max_tokens": 100,
        "stream": true,
        "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}},
            {"type": "text", "text": "Summarise the report."}]}],
        "mock": overrides,
    })
    .to_string()
}

fn send_raw(app: &TestApp, key: &str, body: String) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}/v1/messages", app.base))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
}

/// The hold a request takes, read from the account's live view while the (slow) upstream
/// keeps it in flight.
async fn hold_of(app: &TestApp, body: String) -> Decimal {
    let probe = app.customer("1000").await;
    let in_flight = send_raw(app, &probe.key, body).send();
    let held = async {
        let view = app.wait_view(&probe.id, |view| view["held"] != "0").await;
        dec(view["held"].as_str().unwrap())
    };
    let (response, hold) = tokio::join!(in_flight, held);
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    hold
}

#[actix_web::test]
async fn an_escaped_media_type_holds_as_much_as_the_plain_spelling() {
    let app = spawn_app().await;
    let plain = url_document_body("claude-haiku-4-5", json!({"ttft_ms": 1_500}));
    // The same request, with the block's type and its source's type written as escapes:
    // JSON that decodes to exactly the same document.
    let escaped = plain
        .replace("\"document\"", "\"\\u0064ocument\"")
        .replace("\"url\"", "\"\\u0075rl\"");
    assert_ne!(plain, escaped);
    assert_eq!(
        serde_json::from_str::<Value>(&plain).unwrap(),
        serde_json::from_str::<Value>(&escaped).unwrap()
    );
    let plain_hold = hold_of(&app, plain).await;
    let escaped_hold = hold_of(&app, escaped).await;
    assert!(
        escaped_hold >= plain_hold,
        "escaped {escaped_hold} < plain {plain_hold}"
    );
    // A URL document holds a 100-page PDF: 300,000 tokens at the 1-hour write price.
    assert!(plain_hold >= dec("0.6"), "{plain_hold}");
}

#[actix_web::test]
async fn thirty_parallel_url_documents_on_one_dollar_end_no_lower_than_the_worst_excess() {
    // The upstream fetches each document and reports 100,000 input tokens for it.
    let app = spawn_app_with(
        MockConfig {
            ttft_ms: 300,
            document_input_tokens: 100_000,
            ..MockConfig::default()
        },
        |_| {},
    )
    .await;
    let customer = app.customer("1").await;
    let requests = (0..30).map(|i| {
        let body = url_document_body("claude-haiku-4-5", json!({"output_tokens": 20 + i}));
        let request = send_raw(&app, &customer.key, body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    });
    let results = join_all(requests).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(admitted + refused, 30, "{results:?}");

    app.wait_settled(&customer.id).await;
    app.flush().await;
    let db = app.db().await;
    let account = Uuid::parse_str(&customer.id).unwrap();
    let rows = db
        .query(
            "SELECT cost, input_tokens FROM usage WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), admitted);
    // Every request's own hold was at least its document's allowance, 300,000 tokens at
    // the 1-hour write price; each cost less, so the worst excess over a hold is none.
    let least_hold = dec("0.6");
    let mut worst_excess = Decimal::ZERO;
    for row in &rows {
        let cost: Decimal = row.get(0);
        let input: i64 = row.get(1);
        assert!(input > 100_000, "the upstream reported {input}");
        worst_excess = worst_excess.max(cost - least_hold);
    }
    assert_eq!(worst_excess, Decimal::ZERO);
    let balance = app.balance(&customer.id).await;
    assert!(
        balance >= -worst_excess,
        "balance {balance} below minus the worst excess {worst_excess}"
    );
    app.books(&customer.id).await.assert_reconciled();
    // The balance bound the admissions, not the upstream: some were refused.
    assert!(admitted >= 1 && refused >= 1, "{admitted} admitted");
}

#[actix_web::test]
async fn a_prompt_the_balance_cannot_cover_ends_the_stream_at_message_start() {
    // The fetched document is far larger than its allowance: 1,000,000 tokens.
    let app = spawn_app_with(
        MockConfig {
            document_input_tokens: 1_000_000,
            output_tokens: 200,
            ..MockConfig::default()
        },
        |_| {},
    )
    .await;
    let customer = app.customer("1").await;
    let response = send_raw(
        &app,
        &customer.key,
        url_document_body("claude-haiku-4-5", json!({})),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with("event: error\n"), "{text}");
    assert!(text.contains("\"type\":\"billing_error\""), "{text}");
    assert!(
        !text.contains("content_block_delta"),
        "output was relayed: {text}"
    );

    app.wait_settled(&customer.id).await;
    app.flush().await;
    let db = app.db().await;
    let account = Uuid::parse_str(&customer.id).unwrap();
    let row = db
        .query_one(
            "SELECT cost, input_tokens, output_tokens, outcome FROM usage WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    let (cost, input, output, outcome): (Decimal, i64, i64, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(outcome, "balance_exceeded");
    assert!(input > 1_000_000, "{input}");
    // Billed what message_start reported: the prompt and its one output token, no more.
    assert!(output <= 1, "{output} output tokens billed");
    let seen = SeenUsage {
        input: input as u64,
        output: output as u64,
        ..SeenUsage::default()
    };
    assert_eq!(cost, expected_cost(&HAIKU_4_5, &seen));
    assert_eq!(app.balance(&customer.id).await, dec("1") - cost);
    app.books(&customer.id).await.assert_reconciled();
}

/// A Sonnet 4.5 body that the upstream reports as a 250,000-token prompt with 16 output
/// tokens, its content `padding` bytes long.
fn sonnet_4_5_body(padding: usize) -> Value {
    let mut body = message_body(
        "claude-sonnet-4-5",
        100,
        true,
        json!({"input_tokens": 250_000, "output_tokens": 16}),
    );
    body["messages"][0]["content"] = json!("x".repeat(padding));
    body
}

/// Streams `body` with the `anthropic-beta` header `beta`; the usage it reported, settled.
async fn stream_settled(app: &TestApp, customer: &Customer, body: &Value, beta: &str) -> SeenUsage {
    let response = app
        .messages(&customer.key, body)
        .header("anthropic-beta", beta)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = usage_of_stream(&response.text().await.unwrap());
    assert_eq!((seen.input, seen.output), (250_000, 16));
    app.wait_settled(&customer.id).await;
    seen
}

/// The cost and the long-prompt marker of the customer's only usage row, flushed.
async fn billed_row(app: &TestApp, customer: &Customer) -> (Decimal, bool) {
    app.flush().await;
    let account = Uuid::parse_str(&customer.id).unwrap();
    let row = app
        .db()
        .await
        .query_one(
            "SELECT cost, long_prompt_tier FROM usage WHERE account_id = $1",
            &[&account],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[actix_web::test]
async fn a_long_context_sonnet_4_5_request_is_billed_at_the_long_tier() {
    let app = spawn_app().await;
    let customer = app.customer("20").await;
    // A body as long as the prompt reported: a shorter one would make the 250,000 tokens an
    // absurd count, capped at the hold's estimate (ADR 0010).
    let seen = stream_settled(
        &app,
        &customer,
        &sonnet_4_5_body(300_000),
        "context-1m-2025-08-07",
    )
    .await;
    // Every token at the long tier: 250,000 * 6 + 16 * 22.50, per million.
    let cost = expected_cost(&SONNET_4_5_LONG, &seen);
    assert_eq!(cost, dec("1.50036"));
    assert_eq!(app.balance(&customer.id).await, dec("20") - cost);
    assert_eq!(billed_row(&app, &customer).await, (cost, true));
}

#[actix_web::test]
async fn a_long_sonnet_4_5_request_without_the_1m_beta_holds_and_bills_at_base() {
    let app = spawn_app().await;
    // A Claude Code-sized body: 300 KB, so its estimate crosses 200,000 tokens. The balance
    // covers its base hold (about 300,000 * 6 / 1e6 = 1.80) but not the long tier's (3.60).
    let customer = app.customer("2.5").await;
    let body = sonnet_4_5_body(300_000);
    let seen = stream_settled(&app, &customer, &body, "interleaved-thinking-2025-05-14").await;
    // What Anthropic bills without the beta: the base prices. 250,000 * 3 + 16 * 15.
    let cost = expected_cost(&SONNET_4_5, &seen);
    assert_eq!(cost, dec("0.75024"));
    assert_eq!(app.balance(&customer.id).await, dec("2.5") - cost);
    assert_eq!(billed_row(&app, &customer).await, (cost, false));
    // The same body under the beta holds at the long tier, which the rest cannot cover.
    let long = app
        .messages(&customer.key, &body)
        .header("anthropic-beta", "Context-1M-2025-08-07")
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 402);
    app.wait_settled(&customer.id).await;
    assert_eq!(app.balance(&customer.id).await, dec("2.5") - cost);
}

#[actix_web::test]
async fn a_refused_price_option_is_answered_400_before_anything_is_held_or_sent() {
    let app = spawn_app().await;
    let customer = app.customer("5").await;
    let body = message_body("claude-opus-4-6", 100, false, json!({}));
    let beta = app
        .messages(&customer.key, &body)
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14, fast-mode-2026-02-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(beta.status(), 400);
    let error: Value = beta.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("fast-mode-2026-02-01"), "{message}");

    let mut fast = body.clone();
    fast["speed"] = json!("fast");
    let option = app.messages(&customer.key, &fast).send().await.unwrap();
    assert_eq!(option.status(), 400);
    let error: Value = option.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("speed"),
        "{error}"
    );
    assert_eq!(app.mock_stats().await.messages, 0);
    assert_eq!(app.balance(&customer.id).await, dec("5"));

    // Other values, other flags and a priced flag pass.
    let mut standard = body.clone();
    standard["speed"] = json!("standard");
    let passed = app
        .messages(&customer.key, &standard)
        .header("anthropic-beta", "context-1m-2025-08-07")
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), 200);
}
