//! Parsing and validation of scenarios, each refusal naming its field.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use super::*;

pub(crate) const SMOKE: &str = r#"
name: t
seed: 7
duration_secs: 2
warmup_secs: 0.5
arrival: { mode: open, rate: 20, distribution: poisson }
traffic:
  stream_share: 0.5
  models: [{ name: claude-sonnet-4-5, weight: 2 }, { name: claude-haiku-4-5 }]
  prompt_bytes: { min: 100, max: 1000 }
  max_tokens: 32
  disconnect_share: 0.1
tenants: { accounts: 2, keys_per_account: 2, balance_usd: "10.5" }
upstream: { output_tokens: 8, seed: 3 }
"#;

fn with(path: &str, value: &str) -> String {
    // Rewrites one `key: value` of SMOKE, found by its last path segment.
    let key = path.rsplit('.').next().unwrap();
    let mut out = String::new();
    let mut done = false;
    for line in SMOKE.lines() {
        if !done && line.contains(&format!("{key}:")) {
            let at = line.find(&format!("{key}:")).unwrap();
            let rest = &line[at + key.len() + 1..];
            let end = rest
                .find([',', '}'])
                .map(|i| at + key.len() + 1 + i)
                .unwrap_or(line.len());
            out.push_str(&line[..at]);
            out.push_str(&format!("{key}: {value}"));
            out.push_str(&line[end..]);
            done = true;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    assert!(done, "{path} not in SMOKE");
    out
}

fn error_of(text: &str) -> String {
    Scenario::from_yaml(text).unwrap_err().to_string()
}

#[test]
fn parses_the_example() {
    let s = Scenario::from_yaml(SMOKE).unwrap();
    assert_eq!(s.arrival.mode, LoopKind::Open);
    assert_eq!(s.traffic.models[1].weight, 1.0);
    assert_eq!(s.upstream.output_tokens, 8);
    assert_eq!(s.expect.max_error_share, Some(0.0));
    assert!(s.reconcile && s.baseline);
    assert_eq!(s.timeout_secs, 60.0);
}

#[test]
fn refuses_impossible_values_naming_the_field() {
    for (path, value, wanted) in [
        (
            "traffic.stream_share",
            "1.5",
            "traffic.stream_share: must be between 0 and 1",
        ),
        (
            "arrival.rate",
            "-3",
            "arrival.rate: must be a positive number",
        ),
        (
            "duration_secs",
            "0",
            "duration_secs: must be a positive number",
        ),
        (
            "traffic.prompt_bytes.min",
            "5000",
            "traffic.prompt_bytes.min: 5000 is more than",
        ),
        (
            "traffic.disconnect_share",
            "0.6",
            "traffic.disconnect_share: must not exceed",
        ),
        (
            "tenants.balance_usd",
            "\"-1\"",
            "tenants.balance_usd: must not be negative",
        ),
        (
            "tenants.balance_usd",
            "\"ten\"",
            "tenants.balance_usd: \"ten\" is not a decimal",
        ),
        (
            "tenants.accounts",
            "0",
            "tenants.accounts: must be at least 1",
        ),
        (
            "traffic.max_tokens",
            "0",
            "traffic.max_tokens: must be at least 1",
        ),
    ] {
        let error = error_of(&with(path, value));
        assert!(error.starts_with(wanted), "{path}={value}: {error}");
    }
}

#[test]
fn refuses_unknown_keys_everywhere() {
    let top = format!("{SMOKE}colour: blue\n");
    assert!(error_of(&top).contains("unknown field `colour`"));
    let nested = SMOKE.replace("max_tokens: 32", "max_tokens: 32\n  max_tokenz: 3");
    assert!(error_of(&nested).starts_with("traffic.max_tokenz: unknown field `max_tokenz`"));
    let model = SMOKE.replace("{ name: claude-haiku-4-5 }", "{ name: x, wieght: 2 }");
    assert!(error_of(&model).starts_with("traffic.models[1].wieght: unknown field"));
    let limits = SMOKE.replace(
        "balance_usd: \"10.5\"",
        "balance_usd: \"1\", limits: { rpm: 3 }",
    );
    assert!(error_of(&limits).starts_with("tenants.limits.rpm: unknown field `rpm`"));
    let upstream = SMOKE.replace("seed: 3 }", "seed: 3, ttft: 4 }");
    assert_eq!(error_of(&upstream), "upstream.ttft: unknown field");
}

#[test]
fn checks_abusers_and_closed_loops() {
    let abusive = format!(
        "{SMOKE}abusers: {{ accounts: 1, balance_usd: \"1\", requests_per_minute: 0, multiplier: 20 }}\n"
    );
    assert!(error_of(&abusive).starts_with("abusers.requests_per_minute: must be at least 1"));
    let closed = SMOKE.replace("mode: open, rate: 20", "mode: closed");
    assert!(error_of(&closed).starts_with("arrival.concurrency: must be at least 1"));
    let ok = SMOKE.replace("mode: open, rate: 20", "mode: closed, concurrency: 4");
    assert!(Scenario::from_yaml(&ok).is_ok());
}

#[test]
fn refuses_values_out_of_bounds() {
    for (path, value, wanted) in [
        (
            "duration_secs",
            "86401",
            "duration_secs: must be at most 86400",
        ),
        (
            "duration_secs",
            ".inf",
            "duration_secs: must be a positive number",
        ),
        (
            "duration_secs",
            ".nan",
            "duration_secs: must be a positive number",
        ),
        ("warmup_secs", "1e9", "warmup_secs: must be at most 86400"),
        ("warmup_secs", ".inf", "warmup_secs: must be zero or more"),
        (
            "arrival.rate",
            ".inf",
            "arrival.rate: must be a positive number",
        ),
        (
            "arrival.rate",
            ".nan",
            "arrival.rate: must be a positive number",
        ),
        (
            "arrival.rate",
            "0",
            "arrival.rate: must be a positive number",
        ),
        (
            "arrival.rate",
            "5000000",
            "arrival.rate: 5000000 req/s over 2.5 s",
        ),
        (
            "tenants.keys_per_account",
            "50001",
            "tenants.keys_per_account: accounts ×",
        ),
    ] {
        let error = error_of(&with(path, value));
        assert!(error.starts_with(wanted), "{path}={value}: {error}");
    }
    let timeout = format!("{SMOKE}timeout_secs: 1e300\n");
    assert!(error_of(&timeout).starts_with("timeout_secs: must be at most 86400"));
    let timeout = format!("{SMOKE}timeout_secs: .inf\n");
    assert!(error_of(&timeout).starts_with("timeout_secs: must be a positive number"));
    let in_flight = SMOKE.replace("distribution: poisson", "max_in_flight: 1000001");
    assert!(error_of(&in_flight).starts_with("arrival.max_in_flight: must be at most"));
    let closed = SMOKE.replace("mode: open, rate: 20", "mode: closed, concurrency: 100001");
    assert!(error_of(&closed).starts_with("arrival.concurrency: must be at most"));
    let keys = SMOKE.replace(
        "accounts: 2, keys_per_account: 2",
        &format!("accounts: {}, keys_per_account: 2", usize::MAX),
    );
    assert!(error_of(&keys).starts_with("tenants.keys_per_account: accounts ×"));
    // Durations of an unvalidated scenario never panic.
    let mut s = Scenario::from_yaml(SMOKE).unwrap();
    s.duration_secs = f64::NAN;
    s.warmup_secs = -1.0;
    s.timeout_secs = f64::INFINITY;
    assert!(s.validate().is_err());
    assert_eq!(s.duration() + s.warmup() + s.timeout(), Duration::ZERO);
}

#[test]
fn bounds_the_abusers_even_without_accounts() {
    let abusers = |fields: &str| format!("{SMOKE}abusers: {{ {fields} }}\n");
    for (fields, wanted) in [
        (
            "accounts: 0, balance_usd: \"1\", requests_per_minute: 0, multiplier: 2",
            "abusers.requests_per_minute: must be at least 1",
        ),
        (
            "accounts: 0, balance_usd: \"x\", requests_per_minute: 1, multiplier: 2",
            "abusers.balance_usd:",
        ),
        (
            "accounts: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: -2",
            "abusers.multiplier: must be a positive number",
        ),
        (
            "accounts: 0, keys_per_account: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2",
            "abusers.keys_per_account: must be at least 1",
        ),
        (
            "accounts: 1000, keys_per_account: 101, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2",
            "abusers.keys_per_account: accounts ×",
        ),
        (
            "accounts: 1, balance_usd: \"1\", requests_per_minute: 4000000000, multiplier: 1e300",
            "abusers.multiplier: 1 abusive key(s)",
        ),
        (
            "accounts: 10, balance_usd: \"1\", requests_per_minute: 1000000, multiplier: 100",
            "abusers.multiplier: 10 abusive key(s)",
        ),
    ] {
        let error = error_of(&abusers(fields));
        assert!(error.starts_with(wanted), "{fields}: {error}");
    }
    let none = abusers("accounts: 0, balance_usd: \"1\", requests_per_minute: 1, multiplier: 2");
    assert!(Scenario::from_yaml(&none).is_ok());
}

#[test]
fn refuses_unknown_models() {
    let text = SMOKE.replace("{ name: claude-haiku-4-5 }", "{ name: claude-haiku-9 }");
    assert_eq!(
        error_of(&text),
        "traffic.models[1].name: \"claude-haiku-9\" is not a model of loadgen's price table"
    );
    let dated = SMOKE.replace("claude-haiku-4-5", "claude-haiku-4-5-20251001");
    assert!(Scenario::from_yaml(&dated).is_ok());
}

#[test]
fn type_errors_name_their_path() {
    let negative = SMOKE.replace("max_tokens: 32", "max_tokens: -8");
    let error = error_of(&negative);
    assert!(
        error.starts_with("traffic.max_tokens: invalid type: integer `-8`, expected u64"),
        "{error}"
    );
    let misplaced = SMOKE.replace("rate: 20,", "rate: 20, reconcile: true,");
    let error = error_of(&misplaced);
    assert!(
        error.starts_with("arrival.reconcile: unknown field `reconcile`"),
        "{error}"
    );
    let variant = SMOKE.replace("mode: open", "mode: opne");
    let error = error_of(&variant);
    assert!(
        error.starts_with("arrival.mode: unknown variant `opne`"),
        "{error}"
    );
    let text = SMOKE.replace(
        "{ name: claude-haiku-4-5 }",
        "{ name: claude-haiku-4-5, weight: heavy }",
    );
    let error = Scenario::from_yaml(&text).unwrap_err();
    assert_eq!(error.field, "traffic.models[1].weight");
    assert!(error.message.starts_with("invalid type: string"), "{error}");
    let missing = SMOKE.replace("duration_secs: 2\n", "");
    assert!(error_of(&missing).starts_with("invalid scenario: missing field `duration_secs`"));
}

#[test]
fn mock_args_name_every_knob() {
    let s = Scenario::from_yaml(SMOKE).unwrap();
    let args = s.mock_args().unwrap();
    let at = args.iter().position(|a| a == "--output-tokens").unwrap();
    assert_eq!(args[at + 1], "8");
    assert!(!args.iter().any(|a| a == "--api-key"));
}

#[test]
fn the_shipped_scenarios_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} scenarios");
}

/// A price table for SMOKE's two models, one USD per million input tokens and two per
/// million output tokens, nothing else.
fn price_lines(indent: &str) -> String {
    [
        "models:",
        "  - ids: [claude-sonnet-4-5, claude-haiku-4-5]",
        "    usd_per_mtok: { input: \"1\", output: \"2\", cache_read: \"0\", cache_write_5m: \"0\", cache_write_1h: \"0\" }",
        "    web_search_per_use: \"0\"",
    ]
    .iter()
    .map(|line| format!("{indent}{line}\n"))
    .collect()
}

fn usage(input: u64, output: u64) -> crate::usage::Usage {
    crate::usage::Usage {
        input_tokens: input,
        output_tokens: output,
        ..Default::default()
    }
}

#[test]
fn the_shipped_prices_apply_unless_the_scenario_gives_its_own() {
    let shipped = Scenario::from_yaml(SMOKE).unwrap();
    assert!(shipped.prices.is_none());
    let cost = shipped
        .price_table()
        .unwrap()
        .cost("claude-haiku-4-5", &usage(1000, 0));
    assert_eq!(cost.unwrap(), rust_decimal::Decimal::new(1, 3));

    let inline = Scenario::from_yaml(&format!("{SMOKE}prices:\n{}", price_lines("  "))).unwrap();
    let cost = inline
        .price_table()
        .unwrap()
        .cost("claude-haiku-4-5", &usage(1000, 500));
    assert_eq!(cost.unwrap(), rust_decimal::Decimal::new(2, 3));
    // The scenario's table is the whole table: a model it does not price is refused.
    let one_model = format!("{SMOKE}prices:\n{}", price_lines("  ")).replace(
        "[claude-sonnet-4-5, claude-haiku-4-5]",
        "[claude-sonnet-4-5]",
    );
    assert_eq!(
        error_of(&one_model),
        "traffic.models[1].name: \"claude-haiku-4-5\" is not a model of loadgen's price table"
    );
}

#[test]
fn a_price_file_is_read_relative_to_the_scenario() {
    let dir = std::env::temp_dir().join(format!("loadgen-prices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prices.yaml"), price_lines("")).unwrap();
    std::fs::write(
        dir.join("s.yaml"),
        format!("{SMOKE}prices_file: prices.yaml\n"),
    )
    .unwrap();
    let loaded = Scenario::load(&dir.join("s.yaml"));
    std::fs::write(
        dir.join("both.yaml"),
        format!(
            "{SMOKE}prices_file: prices.yaml\nprices:\n{}",
            price_lines("  ")
        ),
    )
    .unwrap();
    let both = Scenario::load(&dir.join("both.yaml"));
    let missing = Scenario::from_yaml(&format!("{SMOKE}prices_file: /nonexistent/p.yaml\n"));
    std::fs::remove_dir_all(&dir).unwrap();

    let loaded = loaded.unwrap();
    assert_eq!(
        loaded.prices_file.as_deref(),
        Some(Path::new("prices.yaml"))
    );
    let cost = loaded
        .price_table()
        .unwrap()
        .cost("claude-sonnet-4-5", &usage(0, 1000));
    assert_eq!(cost.unwrap(), rust_decimal::Decimal::new(2, 3));
    let both = both.unwrap_err().to_string();
    assert!(
        both.starts_with("prices_file: give the prices inline"),
        "{both}"
    );
    let missing = missing.unwrap_err().to_string();
    assert!(
        missing.starts_with("prices_file: /nonexistent/p.yaml: "),
        "{missing}"
    );
}

#[test]
fn bad_inline_prices_name_their_field() {
    let text = format!("{SMOKE}prices:\n{}", price_lines("  "));
    let word = text.replace("input: \"1\"", "input: \"one\"");
    let error = error_of(&word);
    assert!(
        error.starts_with(
            "prices.models[0].usd_per_mtok.input: \"one\" is not a decimal number of USD"
        ),
        "{error}"
    );
    let typo = text.replace("web_search_per_use", "web_searches");
    assert!(
        error_of(&typo).starts_with("prices.models[0].web_searches: unknown field"),
        "{}",
        error_of(&typo)
    );
    let negative = text.replace("output: \"2\"", "output: \"-2\"");
    assert_eq!(
        error_of(&negative),
        "prices: models[0].usd_per_mtok.output: must not be negative"
    );
}
