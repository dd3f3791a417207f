//! Errors: refused requests, injected statuses, and streams that fail or are abandoned.

use std::time::Duration;

use futures_util::StreamExt;
use mock_anthropic::MockConfig;
use serde_json::{json, Value};

use crate::helpers::*;

async fn assert_error(response: reqwest::Response, status: u16, error_type: &str) -> Value {
    assert_eq!(response.status(), status);
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_of(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], error_type);
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_status_answers_with_the_matching_anthropic_error() {
    let server = start(MockConfig::default()).await;
    for (status, error_type) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ] {
        for stream in [false, true] {
            let request = body(json!({"stream": stream, "mock": {"status": status}}));
            let response = post(&server, "/v1/messages", &request).await;
            let retry_after = response.headers().get("retry-after").cloned();
            let should_retry = response.headers().get("x-should-retry").cloned();
            assert_error(response, status, error_type).await;
            match status {
                429 | 529 => assert_eq!(retry_after.expect("retry-after"), "1"),
                _ => assert!(retry_after.is_none()),
            }
            if matches!(status, 401 | 402) {
                assert_eq!(should_retry.expect("x-should-retry"), "false");
            }
        }
    }
    assert_eq!(server.stats().streams_completed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_error_can_carry_a_chosen_message() {
    let server = start(MockConfig::default()).await;
    let message = "prompt is too long: 212345 tokens > 200000 maximum";
    for (path, stream) in [
        ("/v1/messages", false),
        ("/v1/messages", true),
        ("/v1/messages/count_tokens", false),
    ] {
        let request = body(json!({
            "stream": stream,
            "mock": {"status": 400, "error_message": message},
        }));
        let response = post(&server, path, &request).await;
        let error = assert_error(response, 400, "invalid_request_error").await;
        assert_eq!(error["error"]["message"], message, "{path}");
    }
    let response = post(
        &server,
        "/v1/messages",
        &body(json!({"mock": {"status": 529}})),
    )
    .await;
    let error = assert_error(response, 529, "overloaded_error").await;
    assert_eq!(error["error"]["message"], "Overloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_invalid_request_error() {
    let server = start(MockConfig::default()).await;
    for raw in [
        "{not json",
        "[1, 2]",
        r#"{"max_tokens": 10, "messages": []}"#,
        r#"{"model": "m", "messages": []}"#,
        r#"{"model": "m", "max_tokens": 0}"#,
        r#"{"model": "m", "max_tokens": "many"}"#,
        r#"{"model": "m", "max_tokens": 5, "mock": {"output_tokenz": 3}}"#,
        r#"{"model": "m", "max_tokens": 5, "mock": {"status": 302}}"#,
    ] {
        let response = post_raw(&server, "/v1/messages", raw).await;
        assert_error(response, 400, "invalid_request_error").await;
    }
    let body = assert_error(
        post_raw(&server, "/v1/messages", r#"{"max_tokens": 10}"#).await,
        400,
        "invalid_request_error",
    )
    .await;
    assert_eq!(body["error"]["message"], "model: Field required");
    // Unknown top-level fields and roles are not the mock's business.
    let response = post_raw(
        &server,
        "/v1/messages",
        r#"{"model":"m","max_tokens":2,"messages":[{"role":"system","content":"x"}],"zzz":{}}"#,
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_key_is_required_as_x_api_key_or_bearer() {
    let server = start(MockConfig {
        api_key: Some("sk-upstream".to_owned()),
        ..MockConfig::default()
    })
    .await;
    let url = format!("{}/v1/messages", server.base_url());
    let request = body(json!({}));

    let missing = client()
        .post(&url)
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.headers()["x-should-retry"], "false");
    assert_error(missing, 401, "authentication_error").await;
    let wrong = client()
        .post(&url)
        .header("x-api-key", "sk-other")
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_error(wrong, 401, "authentication_error").await;

    for (name, value) in [
        ("x-api-key", "sk-upstream"),
        ("authorization", "Bearer sk-upstream"),
    ] {
        let ok = client()
            .post(&url)
            .header(name, value)
            .json(&request)
            .send()
            .await
            .expect("sent");
        assert_eq!(ok.status(), 200, "{name}");
    }
    // The auth check comes before validation.
    let garbage = client().post(&url).body("{").send().await.expect("sent");
    assert_eq!(garbage.status(), 401);
    let models = client()
        .get(format!("{}/v1/models", server.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(models.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_after_tokens_ends_the_stream_with_an_overloaded_event() {
    let server = start(MockConfig::default()).await;
    let request = body(json!({"stream": true, "mock": {"error_after_tokens": 4}}));
    let response = post(&server, "/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    let chunks = read_chunks(response).await;
    assert!(chunks.error.is_none(), "the body ends cleanly");
    let events = parse_sse(&chunks.text());
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "error",
        ]
    );
    let error = &events.last().expect("an error event").data;
    assert_eq!(error["error"]["type"], "overloaded_error");
    let stats = wait_for_stats(&server, |s| s.streams_failed == 1).await;
    assert_eq!(
        (
            stats.streams_failed,
            stats.streams_completed,
            stats.streams_cancelled
        ),
        (1, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_tokens_cuts_the_connection_mid_body() {
    let server = start(MockConfig::default()).await;
    for inter_token_ms in [0, 5] {
        let request = body(json!({
            "stream": true,
            "mock": {"reset_after_tokens": 3, "delta_every": 2, "inter_token_ms": inter_token_ms},
        }));
        let response = post(&server, "/v1/messages", &request).await;
        assert_eq!(response.status(), 200);
        let chunks = read_chunks(response).await;
        assert!(chunks.error.is_some(), "the client sees a body error");
        let events = parse_sse(&chunks.text());
        assert_eq!(
            names(&events),
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "message_delta",
                "content_block_delta",
            ],
            "everything before the cut arrived (inter_token_ms {inter_token_ms})"
        );
        assert_eq!(events[5].data["usage"]["output_tokens"], 2);
    }
    let stats = wait_for_stats(&server, |s| s.streams_failed == 2).await;
    assert_eq!(
        (
            stats.streams_failed,
            stats.streams_completed,
            stats.streams_cancelled
        ),
        (2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_counted_as_cancelled() {
    let server = start(MockConfig {
        inter_token_ms: 10,
        output_tokens: 500,
        ..MockConfig::default()
    })
    .await;
    let response = post(&server, "/v1/messages", &body(json!({"stream": true}))).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.expect("a chunk").expect("no error");
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(stream);

    let stats = wait_for_stats(&server, |s| s.streams_cancelled == 1).await;
    assert_eq!((stats.streams_cancelled, stats.streams_completed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_first_byte_is_counted_as_cancelled() {
    let server = start(MockConfig {
        ttft_ms: 300,
        ..MockConfig::default()
    })
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .expect("client");
    let result = impatient
        .post(format!("{}/v1/messages", server.base_url()))
        .json(&body(json!({"stream": true})))
        .send()
        .await;
    assert!(result.is_err(), "the client timed out");

    let stats = wait_for_stats(&server, |s| s.streams_cancelled == 1).await;
    assert_eq!((stats.streams_cancelled, stats.streams_completed), (1, 0));
}
