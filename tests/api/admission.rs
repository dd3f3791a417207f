//! Admission: the rate limits spend their allowance only for a request admitted, and the
//! token limit checks the request's own estimate.

use serde_json::{json, Value};

use crate::helpers::*;

async fn set_limits(app: &TestApp, account: &str, limits: Value) {
    let response = app
        .admin(reqwest::Method::PUT, &format!("/accounts/{account}/limits"))
        .json(&limits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_web::test]
async fn refused_requests_spend_none_of_the_requests_per_minute_allowance() {
    let app = spawn_app().await;
    let customer = app.customer("1").await;
    set_limits(
        &app,
        &customer.id,
        json!({"requests_per_minute": 3, "tokens_per_minute": 0, "max_concurrent": 1}),
    )
    .await;
    // A hold of $2 on a $1 balance: 402.
    let too_dear = message_body("claude-opus-5-5", 100_000, false, json!({}));
    let refused = app.messages(&customer.key, &too_dear).send().await.unwrap();
    assert_eq!(refused.status(), 402);
    // One request holds the account's one concurrency slot; another meanwhile is 429.
    let slow = message_body("claude-opus-5-5", 10, false, json!({"ttft_ms": 1_000}));
    let small = message_body("claude-opus-5-5", 10, false, json!({}));
    let first = app.messages(&customer.key, &slow).send();
    let second = async {
        app.wait_view(&customer.id, |view| view["active_requests"] == 1)
            .await;
        app.messages(&customer.key, &small).send().await.unwrap()
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap().status(), 200);
    assert_eq!(second.status(), 429);
    let message = second.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("concurrent"),
        "{message}"
    );
    // Of three requests a minute, one was spent: two more are admitted.
    for _ in 0..2 {
        let response = app.messages(&customer.key, &small).send().await.unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let third = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(
        third.status(),
        429,
        "the allowance is spent by admitted requests"
    );
}

#[actix_web::test]
async fn the_token_limit_refuses_a_request_whose_estimate_exceeds_what_is_left() {
    let app = spawn_app().await;
    let customer = app.customer("10").await;
    set_limits(
        &app,
        &customer.id,
        json!({"requests_per_minute": 0, "tokens_per_minute": 5_000, "max_concurrent": 0}),
    )
    .await;
    let heavy = message_body(
        "claude-opus-5-5",
        100,
        false,
        json!({"input_tokens": 4_000, "output_tokens": 100}),
    );
    let response = app.messages(&customer.key, &heavy).send().await.unwrap();
    assert_eq!(response.status(), 200);
    app.wait_settled(&customer.id).await;
    // About 900 tokens are left; this request may produce 2,000 on its own.
    let large = message_body("claude-opus-5-5", 2_000, false, json!({}));
    let refused = app.messages(&customer.key, &large).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
    // One whose estimate fits is admitted.
    let small = message_body("claude-opus-5-5", 10, false, json!({"output_tokens": 5}));
    let response = app.messages(&customer.key, &small).send().await.unwrap();
    assert_eq!(response.status(), 200);
}
