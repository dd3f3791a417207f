//! The other endpoints and the `/mock/*` test hooks.

use mock_anthropic::{MockConfig, MockStats};
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_last_shows_the_raw_body_headers_and_query_of_the_last_message_request() {
    let server = start(MockConfig::default()).await;
    let none = client()
        .get(format!("{}/mock/last", server.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(none.status(), 404);

    // Odd spacing, key order and unknown fields must come back exactly as sent.
    let raw =
        "{ \"max_tokens\":8,  \"model\" : \"claude-haiku-5-5\",\"x_unknown\":[1,{\"a\":null}] }";
    let response = client()
        .post(format!("{}/v1/messages?beta=true", server.base_url()))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31,context-1m")
        .header("authorization", "Bearer sk-forwarded")
        .body(raw)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let last = json_of(
        client()
            .get(format!("{}/mock/last", server.base_url()))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(last["body"], raw);
    assert_eq!(last["query"], "beta=true");
    assert_eq!(last["headers"]["anthropic-version"], "2023-06-01");
    assert_eq!(
        last["headers"]["anthropic-beta"],
        "prompt-caching-2024-07-31,context-1m"
    );
    assert_eq!(last["headers"]["authorization"], "Bearer sk-forwarded");
    assert!(last["headers"].get("x-api-key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_derives_from_the_body_unless_overridden() {
    let server = start(MockConfig::default()).await;
    let request =
        json!({"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "hi"}]});
    let expected = (serde_json::to_vec(&request).expect("json").len() as u64).div_ceil(4);
    let response = post(&server, "/v1/messages/count_tokens", &request).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    assert_eq!(json_of(response).await, json!({"input_tokens": expected}));

    let overridden = json!({"model": "m", "messages": [], "mock": {"input_tokens": 42}});
    let response = post(&server, "/v1/messages/count_tokens", &overridden).await;
    assert_eq!(json_of(response).await, json!({"input_tokens": 42}));

    let missing_model = post(
        &server,
        "/v1/messages/count_tokens",
        &json!({"messages": []}),
    )
    .await;
    assert_eq!(missing_model.status(), 400);
    assert_eq!(server.stats().count_tokens, 3);
    assert_eq!(server.stats().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_in_the_reference_shape_and_paged() {
    let server = start(MockConfig::default()).await;
    let get = |path: String| {
        let url = format!("{}{path}", server.base_url());
        async move { client().get(url).send().await.expect("sent") }
    };

    let all = json_of(get("/v1/models".into()).await).await;
    let data = all["data"].as_array().expect("data");
    assert!(data.len() >= 5);
    for model in data {
        assert_eq!(model["type"], "model");
        for field in ["id", "display_name", "created_at"] {
            assert!(model[field].is_string(), "{field}");
        }
    }
    assert_eq!(all["has_more"], false);
    assert_eq!(all["first_id"], data[0]["id"]);
    assert_eq!(all["last_id"], data[data.len() - 1]["id"]);

    let page = json_of(get("/v1/models?limit=2".into()).await).await;
    assert_eq!(page["data"].as_array().expect("data").len(), 2);
    assert_eq!(page["has_more"], true);
    let next = json_of(
        get(format!(
            "/v1/models?limit=2&after_id={}",
            page["last_id"].as_str().expect("id")
        ))
        .await,
    )
    .await;
    assert_eq!(next["first_id"], data[2]["id"]);

    let one = get("/v1/models/claude-opus-5-5".into()).await;
    assert_eq!(one.status(), 200);
    assert_eq!(json_of(one).await["id"], "claude-opus-5-5");
    let unknown = get("/v1/models/claude-nonesuch".into()).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(json_of(unknown).await["error"]["type"], "not_found_error");
    assert_eq!(server.stats().models, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_stats_counts_requests_by_endpoint_and_streams_by_outcome() {
    let server = start(MockConfig::default()).await;
    read_chunks(post(&server, "/v1/messages", &body(json!({"stream": true}))).await).await;
    post(&server, "/v1/messages", &body(json!({}))).await;
    post(&server, "/v1/messages/count_tokens", &body(json!({}))).await;

    let served: MockStats = json_of(
        client()
            .get(format!("{}/mock/stats", server.base_url()))
            .send()
            .await
            .expect("sent"),
    )
    .await
    .as_object()
    .map(|o| serde_json::from_value(json!(o)).expect("MockStats"))
    .expect("an object");
    assert_eq!(
        served,
        MockStats {
            messages: 2,
            count_tokens: 1,
            streams_completed: 1,
            ..MockStats::default()
        }
    );
    assert_eq!(server.stats(), served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_get_an_anthropic_not_found_and_head_root_answers() {
    let server = start(MockConfig::default()).await;
    let response = client()
        .get(format!("{}/v1/nothing", server.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("request-id"));
    assert_eq!(json_of(response).await["error"]["type"], "not_found_error");
    let probe = client().head(server.base_url()).send().await.expect("sent");
    assert_eq!(probe.status(), 200);
}
