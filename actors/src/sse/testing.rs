//! Streams and events shared by the parser's tests.

use serde_json::json;

use super::UsageParser;

pub(super) const MINIMAL: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

pub(super) fn parse(stream: &[u8]) -> UsageParser {
    let mut p = UsageParser::new();
    p.feed(stream);
    p
}

pub(super) fn event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

pub(super) fn start(usage: serde_json::Value) -> String {
    event(
        "message_start",
        &json!({"type":"message_start","message":{"id":"msg_1","type":"message",
            "role":"assistant","content":[],"model":"claude-opus-5-5","stop_reason":null,
            "usage":usage}}),
    )
}

pub(super) fn delta(usage: serde_json::Value) -> String {
    event(
        "message_delta",
        &json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":usage}),
    )
}
