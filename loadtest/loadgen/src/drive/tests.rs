//! The workload against a real mock on loopback: schedules, loops, latency, plans.

#![allow(clippy::unwrap_used)]

use mock_anthropic::{Fate, MockConfig, MockServer};

use super::dispatch::Draws;
use super::request::is_planned_failure;
use super::*;
use crate::record::{Group, Outcome};
use crate::schedule::Source;

fn scenario(yaml_tail: &str) -> Scenario {
    let text = format!(
        r#"
name: unit
seed: 9
duration_secs: 1
warmup_secs: 0
timeout_secs: 10
traffic:
  stream_share: 0.5
  models: [{{ name: claude-sonnet-5-5 }}]
  prompt_bytes: {{ min: 10, max: 100 }}
  max_tokens: 8
  disconnect_share: 0.2
  disconnect_after_chunks: 1
tenants: {{ accounts: 1, balance_usd: "1" }}
upstream: {{ ttft_ms: 40, output_tokens: 4, seed: 1 }}
{yaml_tail}"#
    );
    Scenario::from_yaml(&text).unwrap()
}

fn anonymous_target(url: &str) -> RunTarget {
    RunTarget {
        name: "mock".into(),
        base_url: url.into(),
        well_behaved: vec![KeySlot::anonymous(None).unwrap()],
        abusers: Vec::new(),
    }
}

/// Runs `s`'s workload straight against a mock configured with `upstream`.
async fn run_on_mock(s: &Scenario, upstream: MockConfig) -> (RunResult, Vec<RequestRecord>) {
    let mock = MockServer::start(upstream, "127.0.0.1:0").await.unwrap();
    let client = http_client(s).unwrap();
    let run = run_workload(
        &client,
        s,
        anonymous_target(&mock.base_url()),
        RunOptions { progress: false },
    )
    .await
    .unwrap();
    mock.stop().await;
    run
}

/// The well-behaved bodies of an open-loop scenario, in schedule order.
fn well_behaved_bodies(s: &Scenario) -> Vec<bytes::Bytes> {
    let mix = Mix::new(&s.traffic);
    let keys = s.abusers().map_or(0, |a| a.accounts * a.keys_per_account);
    let rate = s.abusers().map_or(0.0, |a| {
        f64::from(a.requests_per_minute) * a.multiplier / 60.0
    });
    let slots = schedule::schedule(
        s.arrival.rate,
        keys,
        rate,
        s.arrival.distribution,
        s.warmup() + s.duration(),
        s.ramp(),
        s.seed,
    );
    let mut draws = Draws::new(s.seed);
    let mut bodies = Vec::new();
    for slot in &slots {
        let (spec, seq) = draws.next(&mix, slot.source);
        if slot.source == Source::WellBehaved {
            bodies.push(mix.body(&spec, &format!("lg{}-{seq}", s.seed)));
        }
    }
    bodies
}

#[test]
fn abusers_do_not_change_the_well_behaved_requests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let abuse = Scenario::load(&dir.join("abuse.yaml")).unwrap();
    let none = Scenario::load(&dir.join("abuse-none.yaml")).unwrap();
    assert!(abuse.abusers().is_some() && none.abusers().is_none());
    let with = well_behaved_bodies(&abuse);
    let without = well_behaved_bodies(&none);
    assert!(with.len() > 1000, "{}", with.len());
    assert!(with == without, "the well-behaved requests differ");
}

#[test]
fn only_the_planned_failure_is_expected() {
    let status = |status: u16| Outcome::Status {
        status,
        error_type: String::new(),
    };
    assert!(is_planned_failure(&status(529), Fate::Status(529)));
    assert!(!is_planned_failure(&status(429), Fate::Status(529)));
    assert!(!is_planned_failure(&status(502), Fate::ErrorAfter(3)));
    assert!(!is_planned_failure(&status(429), Fate::Complete));
    assert!(is_planned_failure(
        &Outcome::StreamError("overloaded_error".into()),
        Fate::ErrorAfter(0)
    ));
    assert!(!is_planned_failure(
        &Outcome::StreamError(String::new()),
        Fate::ResetAfter(2)
    ));
    assert!(is_planned_failure(&Outcome::Cut, Fate::ResetAfter(2)));
    assert!(!is_planned_failure(&Outcome::Cut, Fate::ErrorAfter(2)));
    for fate in [Fate::Status(500), Fate::ErrorAfter(1), Fate::ResetAfter(1)] {
        assert!(!is_planned_failure(&Outcome::Timeout, fate));
        assert!(!is_planned_failure(&Outcome::Network, fate));
        assert!(!is_planned_failure(&Outcome::Ok, fate));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_counts_from_the_intended_time() {
    // 40 ms per answer, one in flight, one request every 25 ms: the queue grows, and the
    // latency measured from the intended send time must show it (no coordinated omission).
    let s = scenario("arrival: { mode: open, rate: 40, distribution: constant, max_in_flight: 1 }");
    let (run, records) = run_on_mock(&s, s.upstream.clone()).await;
    assert!(records.is_empty(), "no accounts, no records");
    assert_eq!(run.sends.scheduled, 40);
    assert!(run.sends.late >= 20, "late sends {}", run.sends.late);
    let requests: u64 = run.classes.iter().map(|c| c.requests).sum();
    assert_eq!(requests, 40);
    let all = &run.well_behaved["all"].total;
    // The last request was due at 975 ms but could only start after ~39 × 40 ms.
    assert!(all.max_us > 500_000, "max {} µs", all.max_us);
    assert!(all.p50_us > 100_000, "p50 {} µs", all.p50_us);
    let drops: u64 = run.classes.iter().map(|c| c.disconnected).sum();
    assert!(drops > 0);
    assert!(run
        .classes
        .iter()
        .all(|c| c.group == Group::WellBehaved && c.failures == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_runs_its_clients() {
    let s = scenario("arrival: { mode: closed, concurrency: 2 }");
    let (run, _) = run_on_mock(&s, s.upstream.clone()).await;
    let requests: u64 = run.classes.iter().map(|c| c.requests).sum();
    // Two clients, 40 ms each, for one second: about 50 requests, and never more than the
    // two clients can send back to back. (Only bounded loosely below: a loaded machine
    // slows the clients, and that is not what this test is about.)
    assert!((4..=60).contains(&requests), "{requests}");
    let all = &run.well_behaved["all"].total;
    assert!(
        all.p50_us >= 40_000 && all.p50_us < 100_000,
        "p50 {}",
        all.p50_us
    );
    assert!(!run.series.is_empty());
    assert_eq!(run.usage_mismatches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_that_differs_from_the_plan_is_counted() {
    // The scenario plans 4 output tokens; the mock actually reports 5.
    let s = scenario("arrival: { mode: closed, concurrency: 2 }");
    let mut upstream = s.upstream.clone();
    upstream.output_tokens = 5;
    let (run, _) = run_on_mock(&s, upstream).await;
    let ok: u64 = run.classes.iter().map(|c| c.ok).sum();
    assert!(ok > 0);
    assert!(
        run.usage_mismatches >= ok,
        "{} of {ok}",
        run.usage_mismatches
    );
}
