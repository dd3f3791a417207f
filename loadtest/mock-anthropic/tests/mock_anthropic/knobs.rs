//! Server-wide knobs: drawn output lengths, cache mix and injected faults, and the promise
//! that `planned_usage` predicts exactly what the server reports.

use std::collections::BTreeMap;

use mock_anthropic::{planned_usage, Fate, MockConfig, PlannedUsage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::helpers::*;

/// Every knob away from its default, with room for each kind of fate.
fn knobby_config() -> MockConfig {
    MockConfig {
        output_tokens: 1,
        output_tokens_max: Some(24),
        tokens_per_chunk: 3,
        cache_read_tokens: 300,
        cache_write_5m_tokens: 40,
        cache_write_1h_tokens: 60,
        cache_hit_rate: 0.6,
        cache_write_rate: 0.3,
        error_rate_429: 0.05,
        error_rate_529: 0.05,
        error_rate_500: 0.05,
        stream_error_rate: 0.15,
        reset_rate: 0.15,
        seed: 11,
        ..MockConfig::default()
    }
}

/// A distinct Messages body: a nonce in the message, and now and then a small `max_tokens`
/// or a `"mock"` override.
fn random_body(rng: &mut StdRng, i: usize) -> (bool, Vec<u8>) {
    let stream = rng.gen_bool(0.6);
    let mut body = json!({
        "model": "claude-sonnet-5-5",
        "max_tokens": if rng.gen_bool(0.2) { rng.gen_range(1..=8) } else { 1024 },
        "stream": stream,
        "messages": [{"role": "user", "content": format!("request {i} nonce {}", rng.gen::<u64>())}],
    });
    let mut mock = serde_json::Map::new();
    if rng.gen_bool(0.1) {
        mock.insert("output_tokens".into(), rng.gen_range(1..=30).into());
    }
    if rng.gen_bool(0.1) {
        mock.insert("cache_read_tokens".into(), rng.gen_range(0..500).into());
    }
    if rng.gen_bool(0.05) {
        mock.insert("cache_write_1h_tokens".into(), 9.into());
    }
    if rng.gen_bool(0.05) {
        mock.insert("web_search_requests".into(), 2.into());
    }
    if rng.gen_bool(0.05) {
        mock.insert("status".into(), 200.into());
    }
    if !mock.is_empty() {
        body["mock"] = Value::Object(mock);
    }
    (stream, serde_json::to_vec(&body).expect("a body encodes"))
}

fn plan(config: &MockConfig, body: &[u8]) -> PlannedUsage {
    planned_usage(config, body).expect("a valid Messages body")
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The parts of a usage object `planned_usage` predicts, in `planned`'s terms.
fn assert_usage(usage: &Value, planned: &PlannedUsage, context: &str) {
    assert_eq!(usage["input_tokens"], planned.input_tokens, "{context}");
    assert_eq!(usage["output_tokens"], planned.output_tokens, "{context}");
    assert_eq!(
        usage["cache_read_input_tokens"], planned.cache_read_tokens,
        "{context}"
    );
    assert_eq!(
        usage["cache_creation_input_tokens"],
        planned.cache_write_5m_tokens + planned.cache_write_1h_tokens,
        "{context}"
    );
    let searches = usage["server_tool_use"]["web_search_requests"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(searches, planned.web_search_requests, "{context}");
}

fn assert_breakdown(usage: &Value, planned: &PlannedUsage, context: &str) {
    let breakdown = &usage["cache_creation"];
    assert_eq!(
        breakdown["ephemeral_5m_input_tokens"], planned.cache_write_5m_tokens,
        "{context}"
    );
    assert_eq!(
        breakdown["ephemeral_1h_input_tokens"], planned.cache_write_1h_tokens,
        "{context}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_usage_is_what_the_server_reports() {
    let config = knobby_config();
    let server = start(config.clone()).await;
    let mut rng = StdRng::seed_from_u64(3);
    let mut fates: BTreeMap<&str, u64> = BTreeMap::new();
    for i in 0..300 {
        let (stream, body) = random_body(&mut rng, i);
        let planned = plan(&config, &body);
        let context = format!("{planned:?} for {}", String::from_utf8_lossy(&body));
        let response = post_bytes(&server, "/v1/messages", body).await;

        if let Fate::Status(code) = planned.fate {
            *fates.entry("status").or_default() += 1;
            assert_eq!(response.status(), code, "{context}");
            if matches!(code, 429 | 529) {
                assert_eq!(response.headers()["retry-after"], "1", "{context}");
            }
            let error = json_of(response).await;
            assert_eq!(error["type"], "error", "{context}");
            continue;
        }
        assert_eq!(response.status(), 200, "{context}");

        if !stream {
            *fates.entry("message").or_default() += 1;
            assert_eq!(planned.fate, Fate::Complete, "{context}");
            let message = json_of(response).await;
            assert_usage(&message["usage"], &planned, &context);
            assert_breakdown(&message["usage"], &planned, &context);
            continue;
        }

        let chunks = read_chunks(response).await;
        let events = parse_sse(&chunks.text());
        let start_usage = &events[0].data["message"]["usage"];
        assert_eq!(events[0].name, "message_start", "{context}");
        assert_breakdown(start_usage, &planned, &context);
        let text = streamed_text(&events);
        match planned.fate {
            Fate::Complete => {
                *fates.entry("complete").or_default() += 1;
                assert!(chunks.error.is_none(), "{context}");
                let names = names(&events);
                assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
                let delta = &events[events.len() - 2].data;
                assert_usage(&delta["usage"], &planned, &context);
                assert_eq!(words(&text), planned.output_tokens, "{context}");
            }
            Fate::ErrorAfter(after) => {
                *fates.entry("error_event").or_default() += 1;
                assert!(chunks.error.is_none(), "{context}");
                let last = events.last().expect("events");
                assert_eq!(last.name, "error", "{context}");
                assert_eq!(last.data["error"]["type"], "overloaded_error");
                assert_eq!(words(&text), after, "{context}");
                assert!(after < planned.output_tokens.max(1), "{context}");
                if after == 0 {
                    assert_eq!(names(&events), ["message_start", "error"], "{context}");
                }
            }
            Fate::ResetAfter(after) => {
                *fates.entry("reset").or_default() += 1;
                assert!(chunks.error.is_some(), "{context}");
                assert_eq!(words(&text), after, "{context}");
                assert!(after < planned.output_tokens.max(1), "{context}");
            }
            Fate::Status(_) => unreachable!("handled above"),
        }
    }
    for fate in ["status", "message", "complete", "error_event", "reset"] {
        assert!(
            fates.get(fate).is_some_and(|n| *n >= 5),
            "{fate}: {fates:?}"
        );
    }

    let stats = wait_for_stats(&server, |s| {
        s.streams_completed + s.streams_failed
            == fates["complete"] + fates["error_event"] + fates["reset"]
    })
    .await;
    assert_eq!(stats.injected_status, fates["status"]);
    assert_eq!(stats.injected_stream_errors, fates["error_event"]);
    assert_eq!(stats.injected_resets, fates["reset"]);
    assert_eq!(stats.streams_completed, fates["complete"]);
    assert_eq!(stats.streams_cancelled, 0);
}

/// Counts of what the knobs drew over `n` distinct bodies.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    fates: BTreeMap<String, u64>,
    cache_hits: u64,
    cache_writes: u64,
    output_min: u64,
    output_max: u64,
    output_sum: u64,
}

fn tally(config: &MockConfig, n: usize, stream: bool) -> Tally {
    let mut tally = Tally {
        output_min: u64::MAX,
        ..Tally::default()
    };
    for i in 0..n {
        let body = serde_json::to_vec(&json!({
            "model": "claude-sonnet-5-5",
            "max_tokens": 4096,
            "stream": stream,
            "metadata": {"user_id": format!("user-{i}")},
            "messages": [{"role": "user", "content": "the same prompt every time"}],
        }))
        .expect("a body encodes");
        let planned = plan(config, &body);
        let fate = match planned.fate {
            Fate::Complete => "complete".to_owned(),
            Fate::Status(code) => code.to_string(),
            Fate::ErrorAfter(_) => "error_event".to_owned(),
            Fate::ResetAfter(_) => "reset".to_owned(),
        };
        *tally.fates.entry(fate).or_default() += 1;
        tally.cache_hits += u64::from(planned.cache_read_tokens > 0);
        let writes = (planned.cache_write_5m_tokens, planned.cache_write_1h_tokens);
        assert!(writes == (0, 0) || writes == (40, 60), "both TTLs together");
        tally.cache_writes += u64::from(writes != (0, 0));
        tally.output_min = tally.output_min.min(planned.output_tokens);
        tally.output_max = tally.output_max.max(planned.output_tokens);
        tally.output_sum += planned.output_tokens;
    }
    tally
}

fn assert_near(what: &str, count: u64, n: usize, rate: f64) {
    let expected = rate * n as f64;
    let slack = 0.3 * expected + 5.0;
    assert!(
        (count as f64 - expected).abs() <= slack,
        "{what}: {count} of {n}, expected about {expected}"
    );
}

#[test]
fn rates_are_honoured_over_distinct_bodies_and_stable_across_runs() {
    let config = MockConfig {
        output_tokens: 10,
        output_tokens_max: Some(50),
        cache_read_tokens: 300,
        cache_write_5m_tokens: 40,
        cache_write_1h_tokens: 60,
        cache_hit_rate: 0.7,
        cache_write_rate: 0.2,
        error_rate_429: 0.05,
        error_rate_529: 0.03,
        error_rate_500: 0.02,
        stream_error_rate: 0.1,
        reset_rate: 0.1,
        seed: 99,
        ..MockConfig::default()
    };
    let n = 2_000;
    let streams = tally(&config, n, true);
    let fate = |t: &Tally, name: &str| t.fates.get(name).copied().unwrap_or(0);
    assert_near("429", fate(&streams, "429"), n, 0.05);
    assert_near("529", fate(&streams, "529"), n, 0.03);
    assert_near("500", fate(&streams, "500"), n, 0.02);
    assert_near("error events", fate(&streams, "error_event"), n, 0.1);
    assert_near("resets", fate(&streams, "reset"), n, 0.1);
    assert_near("complete", fate(&streams, "complete"), n, 0.7);
    assert_near("cache hits", streams.cache_hits, n, 0.7);
    assert_near("cache writes", streams.cache_writes, n, 0.2);
    assert_eq!((streams.output_min, streams.output_max), (10, 50));
    let mean = streams.output_sum as f64 / n as f64;
    assert!((27.0..=33.0).contains(&mean), "mean output {mean}");

    // Deterministic under the seed: a second run draws exactly the same.
    assert_eq!(tally(&config, n, true), streams);
    // Another seed draws differently, at about the same rates.
    let reseeded = tally(
        &MockConfig {
            seed: 100,
            ..config.clone()
        },
        n,
        true,
    );
    assert_ne!(reseeded, streams);
    assert_near("529 reseeded", fate(&reseeded, "529"), n, 0.03);

    // Without streaming there is nothing to break mid-stream: those bands complete.
    let messages = tally(&config, n, false);
    assert_eq!(fate(&messages, "error_event") + fate(&messages, "reset"), 0);
    // (Different bodies, since `stream` is part of them, so different draws.)
    assert_near("429 messages", fate(&messages, "429"), n, 0.05);
    assert_near("complete messages", fate(&messages, "complete"), n, 0.9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_always_meets_the_same_fate() {
    let config = MockConfig {
        error_rate_429: 0.3,
        error_rate_500: 0.2,
        reset_rate: 0.2,
        cache_read_tokens: 10,
        cache_hit_rate: 0.5,
        output_tokens: 4,
        output_tokens_max: Some(40),
        seed: 5,
        ..MockConfig::default()
    };
    let server = start(config.clone()).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        let body = serde_json::to_vec(&body(json!({
            "stream": true,
            "metadata": {"user_id": format!("u{i}")},
        })))
        .expect("encodes");
        let planned = plan(&config, &body);
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            let response = post_bytes(&server, "/v1/messages", body.clone()).await;
            let status = response.status().as_u16();
            let chunks = read_chunks(response).await;
            outcomes.push((status, chunks.error.is_some(), chunks.text().len()));
        }
        assert!(
            outcomes.windows(2).all(|w| w[0] == w[1]),
            "{planned:?}: {outcomes:?}"
        );
        assert_eq!(plan(&config, &body), planned);
        seen.push(planned);
    }
    assert!(
        seen.windows(2).any(|w| w[0] != w[1]),
        "distinct bodies draw distinct plans: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_win_over_the_drawn_fate() {
    let config = MockConfig {
        output_tokens: 5,
        output_tokens_max: Some(500),
        cache_read_tokens: 10,
        cache_hit_rate: 0.0,
        error_rate_529: 1.0,
        ..MockConfig::default()
    };
    let server = start(config.clone()).await;

    let always = post(&server, "/v1/messages", &body(json!({"stream": true}))).await;
    assert_eq!(always.status(), 529);

    let steered = body(json!({
        "mock": {"status": 200, "output_tokens": 7, "cache_read_tokens": 3},
    }));
    let bytes = serde_json::to_vec(&steered).expect("encodes");
    let planned = plan(&config, &bytes);
    assert_eq!(
        (
            planned.fate,
            planned.output_tokens,
            planned.cache_read_tokens
        ),
        (Fate::Complete, 7, 3)
    );
    let message = json_of(post_bytes(&server, "/v1/messages", bytes).await).await;
    assert_usage(&message["usage"], &planned, "steered");

    let reset = body(json!({"stream": true, "mock": {"reset_after_tokens": 2}}));
    let bytes = serde_json::to_vec(&reset).expect("encodes");
    assert!(matches!(plan(&config, &bytes).fate, Fate::ResetAfter(2)));

    let stats = server.stats();
    assert_eq!(stats.injected_status, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_token_stream_fails_right_after_message_start() {
    let config = MockConfig {
        output_tokens: 1,
        stream_error_rate: 1.0,
        ..MockConfig::default()
    };
    let server = start(config.clone()).await;
    let request = body(json!({"stream": true}));
    let bytes = serde_json::to_vec(&request).expect("encodes");
    assert_eq!(plan(&config, &bytes).fate, Fate::ErrorAfter(0));
    let chunks = read_chunks(post_bytes(&server, "/v1/messages", bytes).await).await;
    let events = parse_sse(&chunks.text());
    assert_eq!(names(&events), ["message_start", "error"]);

    // Not streaming: nothing to break, the message completes.
    let message = post(&server, "/v1/messages", &body(json!({}))).await;
    assert_eq!(message.status(), 200);
    let stats = wait_for_stats(&server, |s| s.injected_stream_errors == 1).await;
    assert_eq!((stats.injected_stream_errors, stats.streams_failed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_does_not_start() {
    let bad = MockConfig {
        error_rate_500: 0.6,
        reset_rate: 0.6,
        ..MockConfig::default()
    };
    let error = mock_anthropic::MockServer::start(bad, "127.0.0.1:0")
        .await
        .expect_err("rates summing past 1 are refused");
    assert!(error.to_string().contains("error_rate_500"), "{error}");
}

#[test]
fn planned_usage_refuses_what_the_server_refuses() {
    let config = MockConfig::default();
    for body in [
        &b"{not json"[..],
        br#"{"max_tokens": 10}"#,
        br#"{"model": "m", "max_tokens": 0}"#,
        br#"{"model": "m", "max_tokens": 5, "mock": {"output_tokenz": 3}}"#,
        br#"{"model": "m", "max_tokens": 5, "mock": {"status": 302}}"#,
    ] {
        assert_eq!(planned_usage(&config, body), None);
    }
    let ok = planned_usage(&config, br#"{"model": "m", "max_tokens": 5}"#);
    assert_eq!(
        ok.map(|p| (p.output_tokens, p.input_tokens, p.fate)),
        Some((5, 8, Fate::Complete))
    );
}
