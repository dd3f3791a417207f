use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn probe(body: &[u8]) -> RequestProbe<'_> {
    RequestProbe::read(body, &[]).unwrap()
}

fn media(images: u32, paged_documents: u32, text_documents: u32) -> MediaCount {
    MediaCount {
        images,
        paged_documents,
        text_documents,
    }
}

#[test]
fn reads_model_max_tokens_and_stream() {
    let p = probe(br#"{"model":"m","max_tokens":5,"stream":true,"x":[1,{"y":null}]}"#);
    assert_eq!(p.model.as_deref(), Some("m"));
    assert_eq!(p.max_tokens.and_then(|n| n.as_u64()), Some(5));
    assert_eq!(p.stream, Some(true));
    assert_eq!(p.media, MediaCount::default());
    assert!(p.server_tools.is_empty() && p.options.is_empty());
}

#[test]
fn counts_media_of_every_kind_and_source_at_any_depth() {
    let body = json!({"model": "m", "max_tokens": 1,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}},
                {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
                {"type": "document", "source": {"type": "content", "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image", "source": {"type": "file", "file_id": "file_2"}}]}},
                {"type": "text", "text": "describe the \"image\" and the \"document\""}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]},
            {"role": "user", "content": "a plain string"}]});
    let text = serde_json::to_vec(&body).unwrap();
    assert_eq!(probe(&text).media, media(4, 3, 2));
    assert_eq!(reference::media(&body), media(4, 3, 2));
}

#[test]
fn an_escaped_type_is_the_type_it_decodes_to() {
    let plain = br#"{"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"u"}}]}]}"#;
    let escaped = br#"{"messages":[{"role":"user","content":[{"type":"\u0064ocument","source":{"type":"\u0075rl","url":"u"}}]}]}"#;
    assert_eq!(probe(plain).media, media(0, 1, 0));
    assert_eq!(probe(escaped).media, media(0, 1, 0));
    // Mentions of the words in text, and keys named like a type, are not blocks.
    let mentions = br#"{"messages":[{"role":"user","content":"\"image\""}],"image":1}"#;
    assert_eq!(probe(mentions).media, MediaCount::default());
}

#[test]
fn counts_server_tools_with_their_max_uses() {
    let body = br#"{"tools":[
        {"name":"get_weather","input_schema":{"type":"object"}},
        {"type":"custom","name":"c","input_schema":{}},
        {"type":"web_search_20250305","name":"web_search","max_uses":3},
        {"type":"web_fetch_20250910","name":"web_fetch"},
        {"type":"code_execution_20250825","name":"code_execution","max_uses":-1}],
        "mcp_servers":[{"type":"url","url":"https://m","name":"m"}]}"#;
    let p = probe(body);
    let expected = vec![
        ServerTool {
            kind: ServerToolKind::WebSearch,
            max_uses: Some(3),
        },
        ServerTool {
            kind: ServerToolKind::WebFetch,
            max_uses: None,
        },
        ServerTool {
            kind: ServerToolKind::Other,
            max_uses: None,
        },
        ServerTool {
            kind: ServerToolKind::Other,
            max_uses: None,
        },
    ];
    assert_eq!(p.server_tools, expected);
    let value: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(reference::server_tools(&value), expected);
}

#[test]
fn captures_watched_options_only() {
    let body = br#"{"model":"m","speed":"fast","inference_geo":{"x":1},"other":"y"}"#;
    let watched = ["speed".to_string(), "inference_geo".to_string()];
    let p = RequestProbe::read(body, &watched).unwrap();
    assert_eq!(
        p.options,
        vec![
            ("speed".to_string(), OptionValue::Text("fast".into())),
            ("inference_geo".to_string(), OptionValue::Other),
        ]
    );
}

#[test]
fn duplicate_keys_and_non_objects_are_refused() {
    for bad in [
        &br#"{"model":"a","model":"b"}"#[..],
        br#"{"max_tokens":1,"max_tokens":2}"#,
        br#"{"messages":[{"type":"text","type":"image"}]}"#,
        br#"{"messages":[{"content":[{"type":"image"}],"content":[]}]}"#,
        br#"{"tools":[{"type":"web_search_1","type":"custom"}]}"#,
        br#"{"model":"a"} trailing"#,
        br#"[1,2]"#,
        b"",
        br#"{"model":5}"#,
    ] {
        assert!(
            RequestProbe::read(bad, &[]).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // A duplicate under a key the probe does not read is the upstream's business.
    assert!(RequestProbe::read(br#"{"metadata":{"a":1,"a":2}}"#, &[]).is_ok());
    // Objects with more keys than are remembered inline still find duplicates.
    let many: String = (0..20).map(|i| format!("\"k{i}\":{i},")).collect();
    let dup = format!("{{\"messages\":[{{{many}\"k3\":0}}]}}");
    assert!(RequestProbe::read(dup.as_bytes(), &[]).is_err());
    let unique = format!("{{\"messages\":[{{{many}\"type\":\"image\"}}]}}");
    assert_eq!(probe(unique.as_bytes()).media, media(1, 0, 0));
}

/// Any JSON value, with the block-shaped objects the probe counts among them.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "image", "document", "base64", "url", "file", "text", "content", "x",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["type", "source", "content", "data", "k"]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

proptest! {
    #[test]
    fn the_probe_counts_what_a_decoded_value_holds(
        messages in any_value(),
        system in any_value(),
        tools in any_value(),
        escape in any::<bool>(),
    ) {
        let request = json!({"model": "m", "max_tokens": 1, "messages": messages,
            "system": system, "tools": tools});
        let mut text = serde_json::to_string(&request).unwrap();
        if escape {
            // The same document, with its keys and block types spelt with escapes.
            for (plain, escaped) in [
                ("\"type\"", "\"\\u0074ype\""),
                ("\"source\"", "\"sourc\\u0065\""),
                ("\"image\"", "\"\\u0069mage\""),
                ("\"document\"", "\"\\u0064ocument\""),
                ("\"url\"", "\"\\u0075rl\""),
            ] {
                text = text.replace(plain, escaped);
            }
        }
        let p = RequestProbe::read(text.as_bytes(), &[]).unwrap();
        prop_assert_eq!(p.media, reference::media(&request));
        prop_assert_eq!(p.server_tools, reference::server_tools(&request));
    }
}

#[test]
fn hostile_nesting_neither_overflows_nor_counts_anything() {
    // A million nested arrays wherever the probe reads, skips or captures. What the walk
    // descends into (`messages`, `system`) is refused at serde_json's recursion limit (128)
    // before its own recursion goes deep; what is skipped as `IgnoredAny` is skipped by
    // serde_json without recursion (one byte of memory a level, bounded by the body limit),
    // and the upstream judges it.
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let watched = ["speed".to_string()];
    let read = |body: String| {
        RequestProbe::read(body.as_bytes(), &watched).map(|p| (p.media, p.server_tools))
    };
    for key in ["messages", "system"] {
        assert!(read(format!("{{\"{key}\":{deep}}}")).is_err(), "{key}");
    }
    let in_block = format!("{{\"messages\":[{{\"content\":[{{\"source\":{deep}}}]}}]}}");
    assert!(read(in_block).is_err());
    for key in ["tools", "mcp_servers", "metadata", "speed"] {
        if let Ok((media, tools)) = read(format!("{{\"{key}\":{deep}}}")) {
            assert_eq!(media, MediaCount::default(), "{key}");
            assert!(tools.len() <= 1, "{key}");
        }
    }
    let opaque = format!("{{\"messages\":[{{\"content\":[{{\"text\":{deep}}}]}}]}}");
    assert_eq!(read(opaque).map(|r| r.0).ok(), Some(MediaCount::default()));
    // Nesting within the limit is read, and the media inside counted.
    let nested = format!(
        "{{\"messages\":{}{{\"type\":\"image\"}}{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(probe(nested.as_bytes()).media, media(1, 0, 0));
}

#[test]
fn an_absurd_max_uses_is_read_as_given_or_not_at_all() {
    let body = br#"{"tools":[
        {"type":"web_search_1","max_uses":18446744073709551615},
        {"type":"web_search_1","max_uses":1e300},
        {"type":"web_search_1","max_uses":"5"},
        {"type":"web_search_1","max_uses":99999999999999999999999}]}"#;
    let uses: Vec<_> = probe(body)
        .server_tools
        .iter()
        .map(|t| t.max_uses)
        .collect();
    // u64::MAX is kept (the hold saturates and refuses it); the rest are not counts, so the
    // tool holds the default uses.
    assert_eq!(uses, [Some(u64::MAX), None, None, None]);
}
