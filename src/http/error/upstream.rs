//! What a customer is told when the upstream answers with an error
//! (docs/adr/0015-upstream-error-messages-rewritten.md).
//!
//! The upstream's own words never reach the customer: they describe the operator's upstream
//! account as often as the customer's request ("rate limit for your organization (…)",
//! "Your credit balance is too low"). The customer gets the upstream's status and
//! `error.type`, our request id, and a message of tollgate's own:
//! - a few messages that clients act on, or that tell the customer what was wrong with their
//!   own request, are recognized and rebuilt, in tollgate's text, from the numbers, field
//!   paths and tool-use ids parsed out of them. Claude Code compacts its conversation on
//!   `prompt is too long: N tokens > M maximum`, so that text keeps its shape and numbers;
//! - an upstream refusal of the operator's account (its credentials, its credit balance, a
//!   disabled organization) is tollgate's 502, never the customer's fault;
//! - everything else gets one message per error type.
//!
//! The original goes to the log for operators, shortened and with anything shaped like a key
//! masked.

use std::borrow::Cow;
use std::sync::LazyLock;

use actix_web::http::StatusCode;
use bytes::Bytes;
use regex::Regex;
use serde::Deserialize;
use serde_json::json;

use super::anthropic::error_type;
use super::proxy::{ErrorKind, ProxyError};
use crate::http::request_id::RequestId;

/// How much of the upstream's message the log keeps, in characters.
const LOGGED_MESSAGE_CHARS: usize = 512;

/// Anthropic's error shape, read only as far as tollgate uses it.
#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// The customer's answer to an upstream error: the body to send with the upstream's status,
/// or tollgate's own failure when the error concerns the operator's upstream account. Either
/// way the upstream's message is logged here, with the request id, and with `operator_keys`
/// (and anything else shaped like a key) masked.
pub fn rewrite_upstream_error(
    body: &[u8],
    status: StatusCode,
    rid: RequestId,
    operator_keys: &[&str],
) -> Result<Bytes, ProxyError> {
    let unparsed;
    let parsed = serde_json::from_slice::<ErrorBody<'_>>(body).ok();
    let (upstream_type, upstream_message) = match &parsed {
        Some(body) => body.error.parts(),
        // Not Anthropic's shape (a proxy's HTML page, say): its start is logged instead.
        None => {
            unparsed = String::from_utf8_lossy(body.get(..1024).unwrap_or(body));
            ("", &*unparsed)
        }
    };
    let kind = ErrorKind::of_type(upstream_type).unwrap_or_else(|| ErrorKind::of_status(status));
    let answer = customer_message(status, kind, upstream_message);
    LoggedError {
        rid,
        status: Some(status.as_u16()),
        upstream_type: for_log(upstream_type, operator_keys),
        upstream_message: for_log(upstream_message, operator_keys),
    }
    .emit(&answer);
    let message = match answer {
        Answer::Message(message) => message,
        Answer::OperatorAccount => {
            return Err(ProxyError::UpstreamRefusedCredentials {
                status: status.as_u16(),
            })
        }
    };
    Ok(error_json(kind, &message, rid))
}

/// The event that takes the place of an upstream's `error` event inside a stream that has
/// begun (`data` is that event's data, empty if it was too long to keep): the same rules as
/// [`rewrite_upstream_error`], with no status to go by. The type is kept; an error about the
/// operator's upstream account becomes an `api_error` that says so; a type tollgate does not
/// know becomes `api_error`. The upstream's words are logged, never relayed.
pub fn rewrite_stream_error(data: &[u8], rid: RequestId, operator_keys: &[&str]) -> Bytes {
    let parsed = serde_json::from_slice::<ErrorBody<'_>>(data).ok();
    let (upstream_type, upstream_message) =
        parsed.as_ref().map_or(("", ""), |body| body.error.parts());
    let kind = ErrorKind::of_type(upstream_type).unwrap_or(ErrorKind::Api);
    let answer = match kind {
        ErrorKind::Api => {
            Answer::Message("the upstream provider failed during the response; retry".into())
        }
        // A stream has no retry-after header to point to.
        ErrorKind::RateLimit => Answer::Message(
            "the upstream provider is rate limiting this service; retry shortly".into(),
        ),
        // There is no status in a stream: an invalid request is read as the 400 it would have
        // been, so that an empty operator balance is recognized as such.
        ErrorKind::InvalidRequest => {
            customer_message(StatusCode::BAD_REQUEST, kind, upstream_message)
        }
        _ => customer_message(StatusCode::OK, kind, upstream_message),
    };
    LoggedError {
        rid,
        status: None,
        upstream_type: for_log(upstream_type, operator_keys),
        upstream_message: for_log(upstream_message, operator_keys),
    }
    .emit(&answer);
    let (kind, message) = match answer {
        Answer::Message(message) => (kind, message),
        Answer::OperatorAccount => (
            ErrorKind::Api,
            "the upstream provider refused this service's request; the operator must check the upstream account".into(),
        ),
    };
    let mut event = b"event: error\ndata: ".to_vec();
    event.extend_from_slice(&error_json(kind, &message, rid));
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// Anthropic's error object, with tollgate's words and request id.
fn error_json(kind: ErrorKind, message: &str, rid: RequestId) -> Bytes {
    let body = json!({
        "type": "error",
        "error": { "type": error_type(kind), "message": message },
        "request_id": rid.to_string(),
    });
    serde_json::to_vec(&body)
        .map(Bytes::from)
        .unwrap_or_default()
}

impl ErrorDetail<'_> {
    /// Its type and message, empty where absent.
    fn parts(&self) -> (&str, &str) {
        (
            self.kind.as_deref().unwrap_or(""),
            self.message.as_deref().unwrap_or(""),
        )
    }
}

/// What the customer is told.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// This message, with the upstream's status and type.
    Message(String),
    /// The error concerns the operator's upstream account: tollgate's 502.
    OperatorAccount,
}

/// The start of a field path in the request body, as Anthropic's validation messages name it
/// (`messages.3.content.0.image.source.base64`): one of the Messages API's top-level fields,
/// then up to 8 segments, each an index or one of the request's own field names (a free-form
/// name could carry anything the upstream put there, say `metadata.org_7f3e_credit_low`).
/// Only a path that matches is repeated to the customer.
const FIELD_PATH: &str = r"(?P<path>(?:messages|system|tools|tool_choice|max_tokens|model|metadata|thinking|temperature|top_p|top_k|stop_sequences|stream|mcp_servers|container|context_management|service_tier)(?:\.(?:\d{1,6}|content|role|type|text|image|document|source|base64|data|media_type|url|file_id|tool_use_id|tool_use|tool_result|input|input_schema|name|description|properties|cache_control|citations|thinking|signature|budget_tokens|user_id|is_error|title|context|id)){0,8})";

/// Tool-use ids as the customer's own messages carry them, comma separated.
const TOOL_IDS: &str = r"(?P<ids>[A-Za-z0-9_-]{1,64}(?:, [A-Za-z0-9_-]{1,64}){0,31})";

fn pattern(source: &str) -> Option<Regex> {
    match Regex::new(source) {
        Ok(regex) => Some(regex),
        Err(error) => {
            // The patterns are constants that the unit tests compile; this is not expected.
            tracing::error!(%error, "an upstream error pattern does not compile");
            None
        }
    }
}

/// Each recognized message: its pattern, and how tollgate words it from the captures.
struct Rebuilt {
    pattern: Option<Regex>,
    words: fn(&regex::Captures<'_>) -> String,
}

fn capture<'h>(captures: &regex::Captures<'h>, name: &str) -> &'h str {
    captures.name(name).map_or("", |m| m.as_str())
}

/// The invalid-request messages rebuilt from what they name. Order matters: the field-path
/// fallback is last.
static REBUILT: LazyLock<Vec<Rebuilt>> = LazyLock::new(|| {
    vec![
        // Claude Code compacts on this one; it reads the phrase and the two numbers.
        Rebuilt {
            pattern: pattern(
                r"(?i)prompt is too long:\s*(?P<n>\d{1,12})\s*tokens?\s*>\s*(?P<max>\d{1,12})\s*maximum",
            ),
            words: |c| {
                format!(
                    "prompt is too long: {} tokens > {} maximum",
                    capture(c, "n"),
                    capture(c, "max")
                )
            },
        },
        Rebuilt {
            pattern: pattern(r"(?i)^prompt is too long\b"),
            words: |_| "prompt is too long".into(),
        },
        // Older clients lower max_tokens on this one, from its three numbers.
        Rebuilt {
            pattern: pattern(
                r"input length and `max_tokens` exceed context limit:\s*(?P<input>\d{1,12})\s*\+\s*(?P<output>\d{1,12})\s*>\s*(?P<limit>\d{1,12})",
            ),
            words: |c| {
                format!(
                    "input length and `max_tokens` exceed context limit: {} + {} > {}, decrease input length or `max_tokens` and try again",
                    capture(c, "input"),
                    capture(c, "output"),
                    capture(c, "limit")
                )
            },
        },
        // The model is left out: with a model map it would be the upstream's name for it.
        Rebuilt {
            pattern: pattern(
                r"^max_tokens:\s*(?P<n>\d{1,12})\s*>\s*(?P<max>\d{1,12}), which is the maximum allowed number of output tokens",
            ),
            words: |c| {
                format!(
                    "max_tokens: {} > {}, which is the maximum allowed number of output tokens for this model",
                    capture(c, "n"),
                    capture(c, "max")
                )
            },
        },
        Rebuilt {
            pattern: pattern(&format!(
                r"^{FIELD_PATH}: image exceeds (?P<mb>\d{{1,6}}) MB maximum: (?P<n>\d{{1,12}}) bytes > (?P<max>\d{{1,12}}) bytes"
            )),
            words: |c| {
                format!(
                    "{}: image exceeds {} MB maximum: {} bytes > {} bytes",
                    capture(c, "path"),
                    capture(c, "mb"),
                    capture(c, "n"),
                    capture(c, "max")
                )
            },
        },
        Rebuilt {
            pattern: pattern(&format!(
                r"^{FIELD_PATH}: .*image dimensions exceed max allowed size[^:]*: (?P<n>\d{{1,6}}) pixels"
            )),
            words: |c| {
                format!(
                    "{}: image dimensions exceed max allowed size: {} pixels",
                    capture(c, "path"),
                    capture(c, "n")
                )
            },
        },
        Rebuilt {
            pattern: pattern(&format!(
                r"^{FIELD_PATH}: `tool_use` ids were found without `tool_result` blocks immediately after: {TOOL_IDS}\."
            )),
            words: |c| {
                format!(
                    "{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                    capture(c, "path"),
                    capture(c, "ids")
                )
            },
        },
        Rebuilt {
            pattern: pattern(&format!(
                r"^{FIELD_PATH}: unexpected `tool_use_id` found in `tool_result` blocks: {TOOL_IDS}\."
            )),
            words: |c| {
                format!(
                    "{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                    capture(c, "path"),
                    capture(c, "ids")
                )
            },
        },
        // Any other validation message that starts with a field path: the path, not the text.
        Rebuilt {
            pattern: pattern(&format!(r"^{FIELD_PATH}:")),
            words: |c| {
                format!(
                    "{}: the upstream provider refused this part of the request",
                    capture(c, "path")
                )
            },
        },
    ]
});

/// Invalid-request messages that are about the operator's upstream account, not the
/// customer's request: Anthropic answers an empty prepaid balance, a spend limit reached
/// or a disabled organization with a 400.
static OPERATOR_ACCOUNT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    pattern(
        r"(?i)credit balance is too low|organization has been disabled|specified api usage limits|workspace .*(?:disabled|archived)",
    )
});

/// Anything shaped like a credential, masked before the log: an `sk-` token, or a long run
/// of a key's alphabet (longer than a UUID, so an organization id stays readable).
static KEY_SHAPED: LazyLock<Option<Regex>> =
    LazyLock::new(|| pattern(r"sk-[A-Za-z0-9_-]+|[A-Za-z0-9_-]{40,}"));

fn customer_message(status: StatusCode, kind: ErrorKind, upstream: &str) -> Answer {
    use ErrorKind as K;
    // Whatever type it names, a 401, 402 or 403 refuses the operator's key or account: told
    // to the customer as such, it would read as a bad key or an empty balance of theirs.
    if matches!(status.as_u16(), 401..=403) {
        return Answer::OperatorAccount;
    }
    let generic = match kind {
        K::InvalidRequest => {
            if status == StatusCode::BAD_REQUEST
                && OPERATOR_ACCOUNT
                    .as_ref()
                    .is_some_and(|regex| regex.is_match(upstream))
            {
                return Answer::OperatorAccount;
            }
            let rebuilt = REBUILT.iter().find_map(|rebuilt| {
                let captures = rebuilt.pattern.as_ref()?.captures(upstream)?;
                Some((rebuilt.words)(&captures))
            });
            if let Some(message) = rebuilt {
                return Answer::Message(message);
            }
            "the upstream provider refused the request as invalid".to_string()
        }
        K::Authentication | K::Billing | K::Permission => return Answer::OperatorAccount,
        K::NotFound => "the upstream provider does not know the model or resource asked for".into(),
        K::RequestTooLarge => "request too large for the upstream provider".into(),
        K::RateLimit => {
            "the upstream provider is rate limiting this service; retry after the retry-after delay"
                .into()
        }
        K::Api => format!(
            "the upstream provider failed (HTTP {}); retry",
            status.as_u16()
        ),
        K::Timeout => "the upstream provider timed out; retry".into(),
        K::Overloaded => "the upstream provider is overloaded; retry shortly".into(),
    };
    Answer::Message(generic)
}

/// An upstream's words as the log keeps them: `operator_keys` and key-shaped tokens masked,
/// then cut to [`LOGGED_MESSAGE_CHARS`] characters. The configured keys go first: the shape
/// mask could rewrite part of one (a long run of key characters before a `.` or `=`), and
/// then the exact match would miss the rest.
fn for_log(message: &str, operator_keys: &[&str]) -> String {
    let mut masked = message.to_string();
    // A key too short to be one (a test's "key") would mask ordinary words.
    for key in operator_keys.iter().filter(|key| key.len() >= 8) {
        masked = masked.replace(key, "[masked]");
    }
    if let Some(regex) = KEY_SHAPED.as_ref() {
        masked = regex.replace_all(&masked, "[masked]").into_owned();
    }
    match masked.char_indices().nth(LOGGED_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}…", masked.get(..end).unwrap_or(&masked)),
        None => masked,
    }
}

/// The log line of one upstream error.
struct LoggedError {
    rid: RequestId,
    /// The upstream's status; `None` for an error event inside a stream.
    status: Option<u16>,
    upstream_type: String,
    upstream_message: String,
}

impl LoggedError {
    fn emit(&self, answer: &Answer) {
        let LoggedError {
            rid,
            status,
            upstream_type,
            upstream_message,
        } = self;
        match answer {
            Answer::OperatorAccount if status.is_none() => tracing::error!(
                %rid, %upstream_type, %upstream_message,
                "the upstream refused the operator's account mid-stream; the customer got tollgate's error event"
            ),
            Answer::OperatorAccount => tracing::error!(
                %rid, status, %upstream_type, %upstream_message,
                "the upstream refused the operator's account; the customer was answered 502"
            ),
            Answer::Message(_) if status.is_none() => tracing::warn!(
                %rid, %upstream_type, %upstream_message,
                "the upstream sent an error event mid-stream; the customer got tollgate's wording of it"
            ),
            // The customer's own mistakes and the upstream's throttling are routine.
            Answer::Message(_) if matches!(status, Some(400 | 404 | 413 | 429)) => tracing::info!(
                %rid, status, %upstream_type, %upstream_message,
                "the upstream answered an error; the customer got tollgate's wording of it"
            ),
            Answer::Message(_) => tracing::warn!(
                %rid, status, %upstream_type, %upstream_message,
                "the upstream answered an error; the customer got tollgate's wording of it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use uuid::Uuid;

    fn rid() -> RequestId {
        RequestId(Uuid::nil())
    }

    fn answer(status: u16, message: &str) -> Answer {
        let status = StatusCode::from_u16(status).unwrap();
        customer_message(status, ErrorKind::of_status(status), message)
    }

    fn said(status: u16, message: &str) -> String {
        match answer(status, message) {
            Answer::Message(message) => message,
            Answer::OperatorAccount => panic!("{message} was taken for the operator's account"),
        }
    }

    fn stream_error(data: &str) -> Value {
        let event = rewrite_stream_error(data.as_bytes(), rid(), &["sk-ant-operator-key"]);
        let event = std::str::from_utf8(&event).unwrap();
        let data = event
            .strip_prefix("event: error\ndata: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn an_error_event_keeps_its_type_and_gets_our_words() {
        let told = stream_error(
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"org 7f3e over its limit"}}"#,
        );
        assert_eq!(
            told,
            json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "the upstream provider is rate limiting this service; retry shortly"},
                "request_id": rid().to_string()})
        );
    }

    #[test]
    fn an_error_event_about_the_operators_account_says_so_as_an_api_error() {
        for data in [
            r#"{"type":"error","error":{"type":"billing_error","message":"credit balance 3.20"}}"#,
            r#"{"type":"error","error":{"type":"authentication_error","message":"sk-ant-operator-key"}}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}"#,
        ] {
            let told = stream_error(data);
            assert_eq!(told["error"]["type"], "api_error", "{data}");
            let message = told["error"]["message"].as_str().unwrap();
            assert!(message.contains("operator must check"), "{message}");
        }
    }

    #[test]
    fn an_unreadable_or_unknown_error_event_is_an_api_error() {
        for data in [
            "",
            "not json",
            r#"{"error":{"type":"brand_new_error","message":"x"}}"#,
        ] {
            let told = stream_error(data);
            assert_eq!(told["error"]["type"], "api_error", "{data:?}");
            assert_eq!(
                told["error"]["message"],
                "the upstream provider failed during the response; retry"
            );
        }
    }

    #[test]
    fn every_pattern_compiles() {
        assert!(REBUILT.iter().all(|rebuilt| rebuilt.pattern.is_some()));
        assert!(OPERATOR_ACCOUNT.is_some());
        assert!(KEY_SHAPED.is_some());
    }

    #[test]
    fn an_upstream_error_keeps_its_type_gets_our_request_id_and_loses_its_message() {
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded for org 7f3e"},"request_id":"req_upstream","extra":"x"}"#;
        let out: serde_json::Value = serde_json::from_slice(
            &rewrite_upstream_error(body, StatusCode::from_u16(529).unwrap(), rid(), &[]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "type": "error",
                "error": {"type": "overloaded_error", "message": "the upstream provider is overloaded; retry shortly"},
                "request_id": rid().to_string(),
            })
        );
        let out: serde_json::Value = serde_json::from_slice(
            &rewrite_upstream_error(b"<html>", StatusCode::BAD_GATEWAY, rid(), &[]).unwrap(),
        )
        .unwrap();
        assert_eq!(out["error"]["type"], "api_error");
        assert_eq!(
            out["error"]["message"],
            "the upstream provider failed (HTTP 502); retry"
        );
    }

    #[test]
    fn an_unknown_error_type_is_replaced_by_the_one_its_status_names() {
        let body = br#"{"type":"error","error":{"type":"org_7f3e_quota","message":"x"}}"#;
        let out: serde_json::Value = serde_json::from_slice(
            &rewrite_upstream_error(body, StatusCode::TOO_MANY_REQUESTS, rid(), &[]).unwrap(),
        )
        .unwrap();
        assert_eq!(out["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn the_messages_clients_act_on_keep_their_shape_and_numbers() {
        assert_eq!(
            said(400, "prompt is too long: 212345 tokens > 200000 maximum"),
            "prompt is too long: 212345 tokens > 200000 maximum"
        );
        assert_eq!(said(400, "Prompt is too long"), "prompt is too long");
        assert_eq!(
            said(400, "input length and `max_tokens` exceed context limit: 187254 + 20000 > 204798, decrease input length or `max_tokens` and try again"),
            "input length and `max_tokens` exceed context limit: 187254 + 20000 > 204798, decrease input length or `max_tokens` and try again"
        );
        assert_eq!(
            said(400, "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5-20250929"),
            "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for this model"
        );
        assert_eq!(
            said(400, "messages.1.content.0.image.source.base64: image exceeds 5 MB maximum: 7021308 bytes > 5242880 bytes"),
            "messages.1.content.0.image.source.base64: image exceeds 5 MB maximum: 7021308 bytes > 5242880 bytes"
        );
        assert_eq!(
            said(400, "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A, toolu_01B. Each `tool_use` block must have a corresponding `tool_result` block in the next message."),
            "messages.2: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A, toolu_01B. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
        );
    }

    #[test]
    fn other_validation_errors_name_the_field_but_not_the_upstreams_text() {
        assert_eq!(
            said(400, "messages.0.content: Field required (org 7f3e)"),
            "messages.0.content: the upstream provider refused this part of the request"
        );
        // Only the request's own field names follow the top-level one: a free-form name is
        // the upstream's words and stays upstream.
        assert_eq!(
            said(400, "metadata.org_7f3e_credit_low: balance 12.50 USD"),
            "the upstream provider refused the request as invalid"
        );
        assert_eq!(
            said(400, "messages.1.content.0.image.source.base64: invalid base64 data"),
            "messages.1.content.0.image.source.base64: the upstream provider refused this part of the request"
        );
        // A path that is not a request field is not repeated.
        assert_eq!(
            said(400, "org_7f3e: workspace quota"),
            "the upstream provider refused the request as invalid"
        );
        // Numbers only where a recognized pattern puts them.
        assert_eq!(
            said(
                400,
                "prompt is too long: 212345 tokens > 200000 maximum for org_7f3e"
            ),
            "prompt is too long: 212345 tokens > 200000 maximum"
        );
    }

    #[test]
    fn the_operators_account_troubles_are_tollgates_502() {
        for message in [
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            "This organization has been disabled.",
            "You have reached your specified API usage limits. You will regain access on 2026-12-01 at 00:00 UTC.",
        ] {
            assert_eq!(answer(400, message), Answer::OperatorAccount, "{message}");
            let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
            let refused = rewrite_upstream_error(
                body.to_string().as_bytes(),
                StatusCode::BAD_REQUEST,
                rid(),
                &[],
            );
            assert!(matches!(
                refused,
                Err(ProxyError::UpstreamRefusedCredentials { status: 400 })
            ));
        }
        assert_eq!(answer(401, "invalid x-api-key"), Answer::OperatorAccount);
        assert_eq!(answer(402, "anything"), Answer::OperatorAccount);
    }

    #[test]
    fn the_log_keeps_a_bounded_message_with_keys_masked() {
        let logged = for_log(
            "invalid x-api-key sk-ant-api03-abc_DEF-123 for org 7f3e9a6c-1111-2222-3333-444455556666",
            &[],
        );
        assert_eq!(
            logged,
            "invalid x-api-key [masked] for org 7f3e9a6c-1111-2222-3333-444455556666"
        );
        assert_eq!(for_log(&"k".repeat(45), &[]), "[masked]");
        // The operator's own key is masked whatever its shape.
        assert_eq!(
            for_log(
                "bad key relay.key.42 (relay.key.42)",
                &["relay.key.42", "key"]
            ),
            "bad key [masked] ([masked])"
        );
        // A configured key that is partly key-shaped is replaced whole, before the shape
        // mask could cut it into a masked head and a logged tail.
        let dotted = format!("{}.tail+x/y=", "A".repeat(45));
        assert_eq!(
            for_log(&format!("bad key {dotted} here"), &[dotted.as_str()]),
            "bad key [masked] here"
        );
        // Masked before it is cut, so no prefix of a key survives the cut.
        let straddling = format!("{}sk-ant-api03-{}", "a ".repeat(250), "x".repeat(90));
        assert_eq!(
            for_log(&straddling, &[]),
            format!("{}[masked]", "a ".repeat(250))
        );
        let long = "é".repeat(2000);
        let logged = for_log(&long, &[]);
        assert_eq!(logged.chars().count(), LOGGED_MESSAGE_CHARS + 1);
        assert!(logged.ends_with('…'));
    }
}
