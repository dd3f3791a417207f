//! Counters of settled requests and billed tokens, for `/metrics`.

use std::sync::OnceLock;

use tollgate_actors::Outcome;
use tollgate_actors::Settlement;

/// Counter handles for settled requests, looked up once rather than per request.
struct SettleCounters {
    tokens: [metrics::Counter; 5],
    completed: metrics::Counter,
    other: [(Outcome, metrics::Counter); 3],
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
            ],
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
}
