//! The SSE stream: event order, usage, overrides, timing, determinism.

use std::time::Duration;

use mock_anthropic::MockConfig;
use serde_json::{json, Value};

use crate::helpers::*;

fn cached_config() -> MockConfig {
    MockConfig {
        output_tokens: 5,
        cache_read_tokens: 100,
        cache_write_5m_tokens: 30,
        cache_write_1h_tokens: 20,
        ..MockConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_the_reference_order_and_reports_both_cache_ttls() {
    let server = start(cached_config()).await;
    let request = body(json!({"stream": true}));
    let expected_input = (serde_json::to_vec(&request).expect("json").len() as u64).div_ceil(4);

    let response = post(&server, "/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let request_id = response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(request_id.starts_with("req_mock_"));
    assert_eq!(response.headers()["anthropic-organization-id"], "org-mock");
    assert_eq!(
        response.headers()["anthropic-ratelimit-requests-limit"],
        "1000"
    );
    assert_eq!(
        response.headers()["anthropic-ratelimit-requests-remaining"],
        "999"
    );
    for name in [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
    ] {
        assert!(response.headers().contains_key(name), "{name}");
    }

    let events = parse_sse(&read_chunks(response).await.text());
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
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );

    let message = &events[0].data["message"];
    assert!(message["id"].as_str().expect("id").starts_with("msg_mock_"));
    assert_eq!(message["model"], "claude-sonnet-5-5");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert_eq!(
        message["usage"],
        json!({
            "input_tokens": expected_input,
            "output_tokens": 1,
            "cache_creation_input_tokens": 50,
            "cache_read_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
            "service_tier": "standard",
        })
    );
    assert_eq!(
        events[1].data,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    for delta in &events[3..8] {
        assert_eq!(delta.data["index"], 0);
        assert_eq!(delta.data["delta"]["type"], "text_delta");
    }
    assert_eq!(streamed_text(&events).split(' ').count(), 5);
    assert_eq!(
        events[8].data,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[9].data,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {
                "input_tokens": expected_input,
                "cache_creation_input_tokens": 50,
                "cache_read_input_tokens": 100,
                "output_tokens": 5,
            },
        })
    );

    let stats = wait_for_stats(&server, |s| s.streams_completed == 1).await;
    assert_eq!(
        (
            stats.messages,
            stats.streams_completed,
            stats.streams_cancelled
        ),
        (1, 1, 0)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_caps_the_output_and_becomes_the_stop_reason() {
    let server = start(MockConfig::default()).await;
    let events = parse_sse(
        &read_chunks(
            post(
                &server,
                "/v1/messages",
                &body(json!({"stream": true, "max_tokens": 3})),
            )
            .await,
        )
        .await
        .text(),
    );
    let delta = events
        .iter()
        .find(|e| e.name == "message_delta")
        .expect("a message_delta");
    assert_eq!(delta.data["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta.data["usage"]["output_tokens"], 3);
    assert_eq!(streamed_text(&events).split(' ').count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_overrides_set_usage_length_and_chunking() {
    let server = start(cached_config()).await;
    let request = body(json!({
        "stream": true,
        "mock": {
            "output_tokens": 7,
            "tokens_per_chunk": 3,
            "input_tokens": 1234,
            "cache_read_tokens": 5,
            "cache_write_5m_tokens": 6,
            "cache_write_1h_tokens": 8,
            "web_search_requests": 2,
        },
    }));
    let events = parse_sse(
        &read_chunks(post(&server, "/v1/messages", &request).await)
            .await
            .text(),
    );

    let usage = &events[0].data["message"]["usage"];
    assert_eq!(usage["input_tokens"], 1234);
    assert_eq!(usage["cache_read_input_tokens"], 5);
    assert_eq!(usage["cache_creation_input_tokens"], 14);
    assert_eq!(
        usage["cache_creation"],
        json!({"ephemeral_5m_input_tokens": 6, "ephemeral_1h_input_tokens": 8})
    );
    assert_eq!(usage["server_tool_use"], json!({"web_search_requests": 2}));

    let deltas: Vec<usize> = events
        .iter()
        .filter(|e| e.name == "content_block_delta")
        .map(|e| {
            e.data["delta"]["text"]
                .as_str()
                .expect("text")
                .trim()
                .split(' ')
                .count()
        })
        .collect();
    assert_eq!(deltas, [3, 3, 1]);

    let final_usage = &events.iter().rev().nth(1).expect("message_delta").data["usage"];
    assert_eq!(
        *final_usage,
        json!({
            "input_tokens": 1234,
            "cache_creation_input_tokens": 14,
            "cache_read_input_tokens": 5,
            "server_tool_use": {"web_search_requests": 2},
            "output_tokens": 7,
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breakdown_and_the_delta_usage_can_be_left_out() {
    let server = start(cached_config()).await;
    let request = body(json!({
        "stream": true,
        "mock": {"omit_cache_breakdown": true, "usage_in_delta": false},
    }));
    let events = parse_sse(
        &read_chunks(post(&server, "/v1/messages", &request).await)
            .await
            .text(),
    );
    let usage = &events[0].data["message"]["usage"];
    assert!(usage.get("cache_creation").is_none());
    assert_eq!(usage["cache_creation_input_tokens"], 50);
    let delta = events
        .iter()
        .find(|e| e.name == "message_delta")
        .expect("a message_delta");
    assert_eq!(delta.data["usage"], json!({"output_tokens": 5}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_every_reports_cumulative_usage_along_the_way() {
    let server = start(cached_config()).await;
    let request = body(json!({"stream": true, "mock": {"output_tokens": 7, "delta_every": 3}}));
    let events = parse_sse(
        &read_chunks(post(&server, "/v1/messages", &request).await)
            .await
            .text(),
    );
    let deltas: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e.name == "message_delta")
        .map(|e| {
            (
                e.data["delta"]["stop_reason"].clone(),
                e.data["usage"]["output_tokens"].clone(),
            )
        })
        .collect();
    assert_eq!(
        deltas,
        [
            (Value::Null, json!(3)),
            (Value::Null, json!(6)),
            (json!("end_turn"), json!(7)),
        ]
    );
    let interim = events
        .iter()
        .find(|e| e.name == "message_delta")
        .expect("a delta");
    assert_eq!(interim.data["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_one_by_one_after_the_configured_delays() {
    let server = start(MockConfig {
        ttft_ms: 60,
        inter_token_ms: 40,
        output_tokens: 3,
        ..MockConfig::default()
    })
    .await;
    let sent = std::time::Instant::now();
    let response = post(&server, "/v1/messages", &body(json!({"stream": true}))).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(60),
        "headers wait for the TTFT"
    );
    let chunks = read_chunks(response).await;
    let arrival_of = |needle: &str| {
        chunks
            .chunks
            .iter()
            .find(|(_, c)| String::from_utf8_lossy(c).contains(needle))
            .map(|(at, _)| *at)
            .expect("the event arrived")
    };
    let first_delta = arrival_of("content_block_delta");
    let stop = arrival_of("message_stop");
    // Two pauses of 40 ms separate three token chunks.
    assert!(
        stop - first_delta >= Duration::from_millis(75),
        "{:?}",
        stop - first_delta
    );
    assert!(
        chunks.chunks.len() >= 3,
        "deltas were flushed as they were produced"
    );
    assert_eq!(names(&parse_sse(&chunks.text())).len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_request_gets_one_message() {
    let server = start(cached_config()).await;
    let request = body(json!({"model": "claude-opus-5-5", "mock": {"web_search_requests": 1}}));
    let expected_input = (serde_json::to_vec(&request).expect("json").len() as u64).div_ceil(4);
    let response = post(&server, "/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["request-id"]
        .to_str()
        .expect("ascii")
        .starts_with("req_mock_"));
    let message = json_of(response).await;
    assert!(message["id"].as_str().expect("id").starts_with("msg_mock_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-opus-5-5");
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["content"][0]["type"], "text");
    assert_eq!(
        message["content"][0]["text"]
            .as_str()
            .expect("text")
            .split(' ')
            .count(),
        5
    );
    assert_eq!(
        message["usage"],
        json!({
            "input_tokens": expected_input,
            "output_tokens": 5,
            "cache_creation_input_tokens": 50,
            "cache_read_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 20},
            "service_tier": "standard",
            "server_tool_use": {"web_search_requests": 1},
        })
    );
    assert_eq!(server.stats().streams_completed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_and_request_give_the_same_bytes() {
    let config = MockConfig {
        seed: 7,
        output_tokens: 20,
        tokens_per_chunk: 3,
        ..MockConfig::default()
    };
    let request = body(json!({"stream": true}));
    let first = start(config.clone()).await;
    let second = start(config.clone()).await;
    let a = read_chunks(post(&first, "/v1/messages", &request).await)
        .await
        .text();
    let b = read_chunks(post(&second, "/v1/messages", &request).await)
        .await
        .text();
    assert_eq!(
        a, b,
        "a replay under the same seed is byte-for-byte identical"
    );

    // Within one server the ids move on, so that nothing keyed on them collides; the content
    // stays the same.
    let again = read_chunks(post(&first, "/v1/messages", &request).await)
        .await
        .text();
    assert_ne!(a, again);
    let a_events = parse_sse(&a);
    let again_events = parse_sse(&again);
    assert_eq!(streamed_text(&a_events), streamed_text(&again_events));
    let after_start = |events: &[Event]| -> Vec<(String, Value)> {
        events[1..]
            .iter()
            .map(|e| (e.name.clone(), e.data.clone()))
            .collect()
    };
    assert_eq!(after_start(&a_events), after_start(&again_events));

    let other_seed = start(MockConfig { seed: 8, ..config }).await;
    let c = read_chunks(post(&other_seed, "/v1/messages", &request).await)
        .await
        .text();
    assert_ne!(streamed_text(&a_events), streamed_text(&parse_sse(&c)));
}
