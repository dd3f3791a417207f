//! The bytes the mock sends: SSE frames, Message JSON and Anthropic error bodies.
//!
//! Frames are assembled from static fragments and numbers instead of going through
//! `serde_json::Value`: a stream is a few dozen small frames and benchmarks want thousands of
//! streams per second from two cores. Only the echoed model name needs escaping, and it is
//! escaped once per request by the caller.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use bytes::Bytes;

use crate::plan::Plan;
use crate::text::push_tokens;

pub(crate) const CONTENT_BLOCK_START: &[u8] = b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
pub(crate) const PING: &[u8] = b"event: ping\ndata: {\"type\":\"ping\"}\n\n";
pub(crate) const CONTENT_BLOCK_STOP: &[u8] =
    b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
pub(crate) const MESSAGE_STOP: &[u8] =
    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

const TEXT_DELTA_HEAD: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"";
const TEXT_DELTA_TAIL: &[u8] = b"\"}}\n\n";

/// Appends a decimal number. Writing into a `String` cannot fail, hence the ignored result.
fn push_num(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

/// The full usage object of `message_start` and of a non-streaming Message.
pub(crate) fn usage_object(plan: &Plan, output_tokens: u64) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"input_tokens\":");
    push_num(&mut out, plan.input_tokens);
    out.push_str(",\"cache_creation_input_tokens\":");
    push_num(&mut out, plan.cache_creation_tokens());
    out.push_str(",\"cache_read_input_tokens\":");
    push_num(&mut out, plan.cache_read_tokens);
    if !plan.omit_cache_breakdown {
        out.push_str(",\"cache_creation\":{\"ephemeral_5m_input_tokens\":");
        push_num(&mut out, plan.cache_write_5m_tokens);
        out.push_str(",\"ephemeral_1h_input_tokens\":");
        push_num(&mut out, plan.cache_write_1h_tokens);
        out.push('}');
    }
    out.push_str(",\"output_tokens\":");
    push_num(&mut out, output_tokens);
    out.push_str(",\"service_tier\":\"standard\"");
    push_server_tool_use(&mut out, plan);
    out.push('}');
    out
}

fn push_server_tool_use(out: &mut String, plan: &Plan) {
    if plan.web_search_requests > 0 {
        out.push_str(",\"server_tool_use\":{\"web_search_requests\":");
        push_num(out, plan.web_search_requests);
        out.push('}');
    }
}

/// What every `message_delta.usage` of a request carries before `output_tokens`: the
/// cumulative input and cache counts, or nothing when `usage_in_delta` is off. Rendered once
/// per stream and reused by each delta.
pub(crate) fn delta_usage_prefix(plan: &Plan) -> String {
    let mut out = String::new();
    if let Some(input) = plan.delta_input_tokens {
        let _ = write!(out, "\"input_tokens\":{input},");
    }
    if plan.usage_in_delta {
        if plan.delta_input_tokens.is_none() {
            out.push_str("\"input_tokens\":");
            push_num(&mut out, plan.input_tokens);
            out.push(',');
        }
        out.push_str("\"cache_creation_input_tokens\":");
        push_num(&mut out, plan.cache_creation_tokens());
        out.push_str(",\"cache_read_input_tokens\":");
        push_num(&mut out, plan.cache_read_tokens);
        push_server_tool_use(&mut out, plan);
        out.push(',');
    }
    out
}

/// The `message_start` frame. `model_json` is the model name already encoded as a JSON string.
pub(crate) fn message_start(message_id: &str, model_json: &str, plan: &Plan) -> Bytes {
    let mut out = String::with_capacity(512);
    out.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"");
    out.push_str(message_id);
    out.push_str("\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":");
    out.push_str(model_json);
    out.push_str(",\"stop_reason\":null,\"stop_sequence\":null");
    if !plan.omit_usage {
        out.push_str(",\"usage\":");
        out.push_str(&usage_object(plan, 1));
    }
    out.push_str("}}\n\n");
    Bytes::from(out)
}

/// A `message_delta` frame with cumulative usage, or none when `usage_prefix` is `None`.
/// `stop_reason` is `None` for the intermediate deltas of `delta_every`, which report usage
/// before the message is over.
pub(crate) fn message_delta(
    usage_prefix: Option<&str>,
    stop_reason: Option<&str>,
    output_tokens: i64,
) -> Bytes {
    let mut out = String::with_capacity(256);
    out.push_str(
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":",
    );
    match stop_reason {
        Some(reason) => {
            out.push('"');
            out.push_str(reason);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"stop_sequence\":null}");
    if let Some(usage_prefix) = usage_prefix {
        out.push_str(",\"usage\":{");
        out.push_str(usage_prefix);
        let _ = write!(out, "\"output_tokens\":{output_tokens}}}");
    }
    out.push_str("}\n\n");
    Bytes::from(out)
}

/// A `content_block_delta` frame carrying output tokens `start .. start + count`.
pub(crate) fn text_delta(text_key: u64, start: u64, count: u64) -> Bytes {
    let mut out =
        Vec::with_capacity(TEXT_DELTA_HEAD.len() + TEXT_DELTA_TAIL.len() + 12 * count as usize);
    out.extend_from_slice(TEXT_DELTA_HEAD);
    push_tokens(&mut out, text_key, start, count);
    out.extend_from_slice(TEXT_DELTA_TAIL);
    Bytes::from(out)
}

/// The mid-stream `event: error` of `error_after_tokens`: the upstream became overloaded after
/// the 200 was sent, as the reference says can happen. `message` replaces "Overloaded".
pub(crate) fn overloaded_event(request_id: &str, message: Option<&str>) -> Bytes {
    let body = error_json(
        "overloaded_error",
        message.unwrap_or("Overloaded"),
        request_id,
    );
    let mut out = String::with_capacity(body.len() + 20);
    out.push_str("event: error\ndata: ");
    out.push_str(&body);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// A complete non-streaming Message.
pub(crate) fn message_json(message_id: &str, model_json: &str, plan: &Plan) -> Bytes {
    if plan.error_body_with_200 {
        return Bytes::from_static(
            br#"{"type":"error","error":{"type":"api_error","message":"proxy error"}}"#,
        );
    }
    let mut text = Vec::with_capacity(8 * plan.output_tokens as usize);
    push_tokens(&mut text, plan.text_key, 0, plan.output_tokens);
    // The words are plain ASCII, so the bytes are valid UTF-8 needing no escaping.
    let text = String::from_utf8_lossy(&text);

    let mut out = String::with_capacity(text.len() + 512);
    out.push_str("{\"id\":\"");
    out.push_str(message_id);
    out.push_str("\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    out.push_str(model_json);
    out.push_str(",\"content\":[{\"type\":\"text\",\"text\":\"");
    out.push_str(&text);
    out.push_str("\"}],\"stop_reason\":\"");
    out.push_str(plan.stop_reason());
    out.push_str("\",\"stop_sequence\":null");
    if plan.omit_output_usage {
        out.push_str(",\"usage\":{\"input_tokens\":");
        out.push_str(&plan.input_tokens.to_string());
        out.push('}');
    } else if !plan.omit_usage {
        out.push_str(",\"usage\":");
        out.push_str(&usage_object(plan, plan.output_tokens));
    }
    out.push('}');
    Bytes::from(out)
}

/// The Anthropic `error.type` for an HTTP status, per the reference's table; statuses it does
/// not list fall back to the generic type of their class.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A plausible message for an injected error status.
pub(crate) fn default_error_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "invalid x-api-key",
        402 => "Your credit balance is too low to access the Anthropic API.",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "The requested resource could not be found.",
        408 | 504 => "Request timed out.",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "Number of requests has exceeded your rate limit (mock).",
        529 => "Overloaded",
        500..=599 => "Internal server error",
        _ => "Invalid request (mock).",
    }
}

/// `{"type":"error","error":{"type","message"},"request_id"}`, keys in Anthropic's order.
pub(crate) fn error_json(error_type: &str, message: &str, request_id: &str) -> String {
    // Encoding a str as JSON cannot fail; the fallback only keeps the output valid.
    let message = serde_json::to_string(message).unwrap_or_else(|_| String::from("\"\""));
    let mut out = String::with_capacity(96 + message.len());
    out.push_str("{\"type\":\"error\",\"error\":{\"type\":\"");
    out.push_str(error_type);
    out.push_str("\",\"message\":");
    out.push_str(&message);
    out.push_str("},\"request_id\":\"");
    out.push_str(request_id);
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MockConfig, Overrides};

    fn plan(overrides: Overrides) -> Plan {
        let config = MockConfig {
            cache_read_tokens: 3,
            cache_write_5m_tokens: 5,
            cache_write_1h_tokens: 7,
            input_tokens: Some(11),
            ..MockConfig::default()
        };
        let request = crate::plan::RequestFacts {
            fetched_documents: 0,
            body_len: 0,
            body_key: 9,
            max_tokens: 100,
            stream: true,
        };
        match Plan::resolve(&config, &overrides, &request) {
            Ok(plan) => plan,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse(bytes: &[u8]) -> serde_json::Value {
        match serde_json::from_slice(bytes) {
            Ok(value) => value,
            Err(e) => panic!("{e}: {}", String::from_utf8_lossy(bytes)),
        }
    }

    fn data_of(frame: &[u8]) -> serde_json::Value {
        let text = String::from_utf8_lossy(frame);
        let data = text
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap_or_default();
        parse(data.as_bytes())
    }

    #[test]
    fn usage_reports_both_cache_ttls_and_their_sum() {
        let usage = parse(usage_object(&plan(Overrides::default()), 9).as_bytes());
        assert_eq!(
            usage,
            serde_json::json!({
                "input_tokens": 11,
                "cache_creation_input_tokens": 12,
                "cache_read_input_tokens": 3,
                "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 7},
                "output_tokens": 9,
                "service_tier": "standard",
            })
        );
    }

    #[test]
    fn usage_can_omit_the_breakdown_and_report_web_searches() {
        let usage = parse(
            usage_object(
                &plan(Overrides {
                    omit_cache_breakdown: true,
                    web_search_requests: 2,
                    ..Overrides::default()
                }),
                1,
            )
            .as_bytes(),
        );
        assert!(usage.get("cache_creation").is_none());
        assert_eq!(usage["cache_creation_input_tokens"], 12);
        assert_eq!(usage["server_tool_use"]["web_search_requests"], 2);
    }

    #[test]
    fn every_frame_is_one_event_with_valid_json() {
        let p = plan(Overrides::default());
        let prefix = delta_usage_prefix(&p);
        let frames = [
            message_start("msg_x", "\"m\\\"q\"", &p),
            Bytes::from_static(CONTENT_BLOCK_START),
            Bytes::from_static(PING),
            text_delta(1, 0, 3),
            Bytes::from_static(CONTENT_BLOCK_STOP),
            message_delta(Some(&prefix), None, 4),
            message_delta(Some(&prefix), Some("end_turn"), 5),
            Bytes::from_static(MESSAGE_STOP),
            overloaded_event("req_x", None),
        ];
        for frame in &frames {
            assert!(frame.starts_with(b"event: "));
            assert!(frame.ends_with(b"\n\n"));
            let event = String::from_utf8_lossy(
                &frame[7..frame.iter().position(|b| *b == b'\n').unwrap_or(7)],
            )
            .to_string();
            assert_eq!(data_of(frame)["type"], event.as_str());
        }
        assert_eq!(data_of(&frames[0])["message"]["model"], "m\"q");
        assert_eq!(data_of(&frames[5])["usage"]["cache_read_input_tokens"], 3);
        assert_eq!(data_of(&frames[6])["delta"]["stop_reason"], "end_turn");
    }

    #[test]
    fn delta_usage_can_be_output_only() {
        let p = plan(Overrides {
            usage_in_delta: Some(false),
            ..Overrides::default()
        });
        let frame = message_delta(Some(&delta_usage_prefix(&p)), Some("end_turn"), 5);
        assert_eq!(
            data_of(&frame)["usage"],
            serde_json::json!({"output_tokens": 5})
        );
    }

    #[test]
    fn usage_can_be_omitted_or_misreported() {
        let none = plan(Overrides {
            omit_usage: true,
            ..Overrides::default()
        });
        assert!(data_of(&message_start("msg_x", "\"m\"", &none))["message"]
            .get("usage")
            .is_none());
        assert!(parse(&message_json("msg_x", "\"m\"", &none))
            .get("usage")
            .is_none());
        assert!(data_of(&message_delta(None, Some("end_turn"), 5))
            .get("usage")
            .is_none());
        let smaller = plan(Overrides {
            delta_input_tokens: Some(-3),
            usage_in_delta: Some(false),
            ..Overrides::default()
        });
        let frame = message_delta(Some(&delta_usage_prefix(&smaller)), Some("end_turn"), 7);
        assert_eq!(
            data_of(&frame)["usage"],
            serde_json::json!({"input_tokens": -3, "output_tokens": 7})
        );
    }

    #[test]
    fn a_message_echoes_the_model_and_counts_its_words() {
        let p = plan(Overrides::default());
        let message = parse(&message_json("msg_x", "\"claude-x\"", &p));
        assert_eq!(message["model"], "claude-x");
        assert_eq!(message["usage"]["output_tokens"], 16);
        let text = message["content"][0]["text"].as_str().unwrap_or_default();
        assert_eq!(text.split(' ').count(), 16);
    }
}
