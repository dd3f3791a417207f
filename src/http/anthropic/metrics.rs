//! Counters of settled requests and billed tokens, for `/metrics`.

use std::sync::OnceLock;

use tollgate_actors::Outcome;
use tollgate_actors::Settlement;
use tollgate_actors::UsageFault;

/// Counter handles for settled requests, looked up once rather than per request.
struct SettleCounters {
    tokens: [metrics::Counter; 5],
    completed: metrics::Counter,
    other: [(Outcome, metrics::Counter); 4],
    /// Settled requests whose count was tollgate's estimate.
    estimated: metrics::Counter,
    /// Upstream usage reports that were faulty, by kind: an alert for operators.
    faults: [(UsageFault, metrics::Counter); 2],
}

fn settle_counters() -> &'static SettleCounters {
    static COUNTERS: OnceLock<SettleCounters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let tokens = |class: &'static str| metrics::counter!("tollgate_billed_tokens_total", "class" => class);
        let settled = |outcome: Outcome| {
            metrics::counter!("tollgate_settled_requests_total", "outcome" => outcome.as_str())
        };
        SettleCounters {
            tokens: [
                tokens("input"),
                tokens("output"),
                tokens("cache_read"),
                tokens("cache_write_5m"),
                tokens("cache_write_1h"),
            ],
            completed: settled(Outcome::Completed),
            other: [
                (Outcome::ClientDisconnected, settled(Outcome::ClientDisconnected)),
                (Outcome::UpstreamCut, settled(Outcome::UpstreamCut)),
                (Outcome::Interrupted, settled(Outcome::Interrupted)),
                (Outcome::BalanceExceeded, settled(Outcome::BalanceExceeded)),
            ],
            estimated: metrics::counter!("tollgate_estimated_usage_total"),
            faults: [UsageFault::MissingUsage, UsageFault::AbsurdCount].map(|fault| {
                let counter = metrics::counter!("tollgate_upstream_usage_faults_total", "kind" => fault.as_str());
                (fault, counter)
            }),
        }
    })
}

/// Counts a settled request and its tokens.
pub(super) fn record(settlement: &Settlement) {
    let counters = settle_counters();
    let usage = &settlement.usage;
    for (counter, tokens) in counters.tokens.iter().zip([
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
    ]) {
        counter.increment(tokens);
    }
    if settlement.outcome == Outcome::Completed {
        counters.completed.increment(1);
    } else if let Some((_, counter)) = counters
        .other
        .iter()
        .find(|(o, _)| *o == settlement.outcome)
    {
        counter.increment(1);
    }
    if settlement.estimated {
        counters.estimated.increment(1);
    }
    if let Some((_, counter)) = counters
        .faults
        .iter()
        .find(|(fault, _)| Some(*fault) == settlement.usage_fault)
    {
        counter.increment(1);
    }
}
