//! Starting mocks, sending requests and reading SSE back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use mock_anthropic::{MockConfig, MockServer, MockStats};
use serde_json::Value;

pub async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config, "127.0.0.1:0")
        .await
        .expect("the mock starts on a loopback port")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// A Messages request body; `extra` fields are merged in at the top level.
pub fn body(extra: Value) -> Value {
    let mut body = serde_json::json!({
        "model": "claude-sonnet-5-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}],
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

pub async fn post(server: &MockServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("the request reaches the mock")
}

pub async fn post_raw(server: &MockServer, path: &str, body: &'static str) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the request reaches the mock")
}

pub async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// One SSE event: its `event:` name and its parsed `data:`.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: Value,
}

pub fn parse_sse(text: &str) -> Vec<Event> {
    text.split_terminator("\n\n")
        .map(|frame| {
            let mut lines = frame.lines();
            let name = lines
                .next()
                .and_then(|line| line.strip_prefix("event: "))
                .expect("every frame starts with its event line");
            let data = lines
                .next()
                .and_then(|line| line.strip_prefix("data: "))
                .expect("every frame has a data line");
            assert!(lines.next().is_none(), "one event per frame: {frame}");
            let data: Value = serde_json::from_str(data).expect("data is JSON");
            assert_eq!(data["type"], name, "event name matches data.type");
            Event {
                name: name.to_owned(),
                data,
            }
        })
        .collect()
}

pub fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

/// The body chunks as they arrived, with their arrival times, and the error that ended the
/// body if any.
pub struct Chunks {
    pub chunks: Vec<(Instant, Bytes)>,
    pub error: Option<reqwest::Error>,
}

impl Chunks {
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
        String::from_utf8(bytes).expect("SSE is UTF-8")
    }
}

pub async fn read_chunks(response: reqwest::Response) -> Chunks {
    let mut stream = response.bytes_stream();
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => chunks.push((Instant::now(), chunk)),
            Err(error) => {
                return Chunks {
                    chunks,
                    error: Some(error),
                }
            }
        }
    }
    Chunks {
        chunks,
        error: None,
    }
}

/// Waits until the mock's counters satisfy `done`, for at most two seconds.
pub async fn wait_for_stats(server: &MockServer, done: impl Fn(&MockStats) -> bool) -> MockStats {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stats = server.stats();
        if done(&stats) || Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The text the deltas of a stream carry, concatenated.
pub fn streamed_text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name == "content_block_delta")
        .map(|e| {
            e.data["delta"]["text"]
                .as_str()
                .expect("text_delta")
                .to_owned()
        })
        .collect()
}

/// Posts exactly these bytes, so the mock hashes the same body a test planned with.
pub async fn post_bytes(server: &MockServer, path: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the request reaches the mock")
}
