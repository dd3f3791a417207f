//! No overspend through concurrency.

use futures_util::future::join_all;
use mock_anthropic::MockConfig;
use rust_decimal::Decimal;
use serde_json::json;

use crate::helpers::*;

#[actix_web::test]
async fn two_hundred_parallel_requests_against_ten_holds_admit_at_most_ten() {
    // A slow upstream keeps every admitted request in flight while the others arrive (4 s is
    // far longer than 200 loopback requests take to arrive, even on a loaded CI machine).
    let app = spawn_app_with(
        MockConfig {
            ttft_ms: 2_000,
            ..MockConfig::default()
        },
        |_| {},
    )
    .await;
    let body = message_body(
        "claude-opus-5-5",
        1_000,
        true,
        json!({"input_tokens": 50, "output_tokens": 40, "cache_read_tokens": 100}),
    );

    // Learn the hold of this exact request from a well-funded probe account.
    let probe = app.customer("100").await;
    let in_flight = app.messages(&probe.key, &body).send();
    let held = async {
        let view = app.wait_view(&probe.id, |view| view["held"] != "0").await;
        dec(view["held"].as_str().unwrap())
    };
    let (response, hold) = tokio::join!(in_flight, held);
    response.unwrap().text().await.unwrap();
    assert!(hold > Decimal::ZERO);

    let balance = hold * Decimal::from(10);
    let customer = app.customer(&balance.to_string()).await;
    let requests = (0..200).map(|_| async {
        let response = app.messages(&customer.key, &body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, text)
    });
    let results = join_all(requests).await;
    let admitted = results.iter().filter(|(s, _)| *s == 200).count();
    let refused = results.iter().filter(|(s, _)| *s == 402).count();
    assert_eq!(
        admitted + refused,
        200,
        "only 200 and 402 expected: {:?}",
        results
            .iter()
            .filter(|(s, _)| *s != 200 && *s != 402)
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(
        admitted <= 10,
        "{admitted} admitted against a balance of ten holds"
    );
    assert!(admitted >= 1);
    for (status, text) in &results {
        if *status == 402 {
            assert!(text.contains("billing_error"), "{text}");
        } else {
            assert!(text.contains("event: message_stop"));
        }
    }

    let view = app.wait_settled(&customer.id).await;
    let live = dec(view["balance"].as_str().unwrap());
    assert!(live >= Decimal::ZERO, "balance went negative: {live}");
    let billed: Decimal = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, text)| expected_cost(&OPUS_5_5, &usage_of_stream(text)))
        .sum();
    assert_eq!(live, balance - billed);
    app.flush().await;
    let books = app.books(&customer.id).await;
    assert_eq!(books.usage_rows as usize, admitted);
    assert_eq!(books.usage_cost, billed);
    assert_eq!(books.stored_balance, live);
    books.assert_reconciled();
}

#[actix_web::test]
async fn a_negative_balance_admits_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("0.01").await;
    // max_tokens small enough for the hold to fit; usage far larger than the hold: the
    // hold does not count server-tool uses, and a thousand searches cost $10.
    let body = message_body(
        "claude-opus-5-5",
        1,
        false,
        json!({"input_tokens": 10, "output_tokens": 1, "web_search_requests": 1000}),
    );
    let first = app.messages(&customer.key, &body).send().await.unwrap();
    assert_eq!(first.status(), 200);
    app.wait_settled(&customer.id).await;
    let balance = app.balance(&customer.id).await;
    assert!(
        balance < Decimal::ZERO,
        "expected the oversized request to overdraw: {balance}"
    );
    let small = message_body("claude-haiku-5-5", 1, false, json!({}));
    let second = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(second.status(), 402);
    app.flush().await;
    app.books(&customer.id).await.assert_reconciled();
}
