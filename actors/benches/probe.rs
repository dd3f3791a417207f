//! What the request probe costs against the probe it replaced (model, max_tokens and stream
//! only, everything else skipped). Prints nanoseconds per parse for two bodies: the one
//! loadtest/instructions.sh sends (a 2,000-byte prompt) and a Claude Code-like one (many
//! messages of content blocks, a tool_result with an image, tools).
//!
//!   cargo bench -p tollgate-actors --bench probe            # timings
//!   PROBE_ITERATIONS=0 / 20000 under valgrind --tool=callgrind: instructions per parse
//!
//! PROBE_ITERATIONS sets the parses per body (default 20,000); PROBE_ONLY=old|new runs one
//! probe, PROBE_BODY=small|claude-code one body.

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use serde::Deserialize;
use tollgate_actors::probe::RequestProbe;

/// The probe before issue 9: three fields, the rest skipped by serde.
#[derive(Deserialize)]
#[allow(dead_code)]
struct OldProbe<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    max_tokens: Option<serde_json::Number>,
    stream: Option<bool>,
}

fn small_body() -> String {
    let prompt = "lorem ipsum dolor sit amet ".repeat(80);
    serde_json::json!({
        "model": "claude-opus-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": &prompt[..2_000]}],
    })
    .to_string()
}

fn claude_code_body() -> String {
    let mut messages = Vec::new();
    for i in 0..60 {
        messages.push(serde_json::json!({"role": "user", "content": [
            {"type": "text", "text": format!("step {i}: please edit src/main.rs\nand run the tests\n")},
            {"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": [
                {"type": "text", "text": "test result: ok. 42 passed; 0 failed\n".repeat(8)}]}]}));
        messages.push(serde_json::json!({"role": "assistant", "content": [
            {"type": "text", "text": "I'll run the tests."},
            {"type": "tool_use", "id": format!("toolu_{i}"), "name": "Bash",
             "input": {"command": "cargo test", "description": "Run tests"}}]}));
    }
    messages.push(serde_json::json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}));
    let tools: Vec<_> = (0..20)
        .map(|i| serde_json::json!({"name": format!("Tool{i}"), "description": "does a thing ".repeat(20),
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}}))
        .collect();
    serde_json::json!({
        "model": "claude-opus-5-5",
        "max_tokens": 32_000,
        "stream": true,
        "system": [{"type": "text", "text": "You are Claude Code. ".repeat(100)}],
        "messages": messages,
        "tools": tools,
    })
    .to_string()
}

fn time(name: &str, iterations: u32, body: &[u8], parse: impl Fn(&[u8])) {
    let started = Instant::now();
    for _ in 0..iterations {
        parse(black_box(body));
    }
    let per = started.elapsed().as_nanos() / u128::from(iterations.max(1));
    println!("{name:<28} {:>8} bytes {per:>8} ns/parse", body.len());
}

fn main() {
    let iterations = std::env::var("PROBE_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000u32);
    let only = std::env::var("PROBE_ONLY").unwrap_or_default();
    let watched = ["speed".to_string()];
    let body_only = std::env::var("PROBE_BODY").unwrap_or_default();
    for (label, body) in [("small", small_body()), ("claude-code", claude_code_body())] {
        if !body_only.is_empty() && body_only != label {
            continue;
        }
        let body = body.as_bytes();
        if only != "new" {
            time(&format!("old probe, {label}"), iterations, body, |b| {
                let _ = black_box(serde_json::from_slice::<OldProbe<'_>>(b));
            });
        }
        if only != "old" {
            time(&format!("new probe, {label}"), iterations, body, |b| {
                let _ = black_box(RequestProbe::read(b, &watched));
            });
        }
    }
}
