//! What a settled request is billed, decided from what the upstream reported
//! ([`UsageReport`]). Pure code: the ticket applies it when it settles.
//!
//! Output produced is output billed, on every path:
//! - **The final usage came.** The upstream's counts are billed, each class at the largest
//!   value it reported.
//! - **It never came** (the drain ended, shutdown interrupted, the stream was cut or fell
//!   silent): the prompt as reported, and at least the output the content deltas relayed, at
//!   one token per `bytes_per_token` bytes of their payload, never more than `max_tokens`
//!   (docs/adr/0009-estimate-unreported-output.md). If a thinking block began, `max_tokens`
//!   of output: summarized thinking relays far fewer bytes than it is charged. The row is
//!   marked estimated.
//! - **The upstream reported no usage at all** for an answer it gave: the hold's estimate,
//!   its prompt estimate as uncached input and `max_tokens` of output. An upstream fault,
//!   marked and alerted (docs/adr/0010-usage-faults-billed-from-the-hold.md).
//! - **Absurd counts** (negative, above [`crate::usage::MAX_COUNT_PER_CLASS`], server-tool
//!   uses above [`crate::usage::MAX_SERVER_TOOL_USES`], output above `max_tokens`, a prompt
//!   above the hold's estimate plus its slack) are capped or ignored, never billed raw: an
//!   upstream fault too.

use serde::{Deserialize, Serialize};

use crate::usage::UsageReport;
use crate::Usage;

/// Why the upstream's usage could not be billed as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageFault {
    /// The answer reported no prompt usage (or none at all): billed from the hold's estimate.
    MissingUsage,
    /// A count was negative, too large to be real, or more output than `max_tokens` allows:
    /// capped or ignored.
    AbsurdCount,
}

impl UsageFault {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageFault::MissingUsage => "missing_usage",
            UsageFault::AbsurdCount => "absurd_count",
        }
    }
}

/// What the bill needs to know of the request besides its report: the hold's assumptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldFacts {
    /// The hold's estimate of the prompt, in tokens.
    pub prompt_estimate: u64,
    /// The request's `max_tokens`: the most output it can produce.
    pub max_tokens: u64,
    /// Bytes counted as one token (the hold's `bytes_per_token`; 0 is taken as 1).
    pub bytes_per_token: u32,
    /// The request carries media or server tools: part of its prompt is not in its body (a
    /// document fetched by URL, a search's results), so the estimate does not bound it.
    pub unseen_prompt: bool,
}

/// A request's bill: the usage it is charged for, and how much of it is tollgate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bill {
    pub usage: Usage,
    /// Some count is tollgate's estimate, not the upstream's final word.
    pub estimated: bool,
    /// The upstream's report was faulty (the first fault found, if several).
    pub fault: Option<UsageFault>,
}

/// The bill for `report`: see the module's rules.
pub fn bill(report: &UsageReport, request: &HoldFacts) -> Bill {
    let mut usage = report.usage;
    let mut estimated = false;
    let mut fault = report.absurd_count.then_some(UsageFault::AbsurdCount);
    if !report.prompt_reported {
        // Without a prompt count, the hold's estimate stands in for the whole prompt.
        usage.input_tokens = request.prompt_estimate;
        estimated = true;
        fault = fault.or(Some(UsageFault::MissingUsage));
    }
    if !report.prompt_reported && report.usage.is_zero() {
        // Nothing reported at all: the hold's estimate of the output too.
        usage.output_tokens = request.max_tokens;
    } else if !report.final_usage {
        let per_token = u64::from(request.bytes_per_token.max(1));
        let relayed = report.relayed_output_bytes.div_ceil(per_token);
        usage.output_tokens = usage.output_tokens.max(relayed);
        if report.answer_complete {
            // The answer is whole, yet its output was never counted.
            fault = fault.or(Some(UsageFault::MissingUsage));
        }
        if report.thinking_seen {
            // Summarized thinking relays far fewer bytes than the thinking tokens it is
            // charged for: the relayed output says nothing of it (ADR 0009).
            usage.output_tokens = request.max_tokens;
        }
        estimated = true;
    }
    let bound = prompt_bound(request, &usage);
    if cap_prompt(&mut usage, bound) {
        fault = fault.or(Some(UsageFault::AbsurdCount));
    }
    if report.usage.output_tokens > request.max_tokens {
        // No model writes past max_tokens; an estimate may, and is only capped.
        fault = fault.or(Some(UsageFault::AbsurdCount));
    }
    usage.output_tokens = usage.output_tokens.min(request.max_tokens);
    Bill {
        usage,
        estimated,
        fault,
    }
}

/// Prompt tokens that media or a server tool may add beyond what the body shows: the longest
/// context of any model. A document fetched by URL, or search and fetch results, enter the
/// prompt at a size the hold only guesses (its allowances; ADR 0012 resizes the hold when
/// `message_start` tells).
pub const SERVER_TOOL_PROMPT_MARGIN: u64 = 1_000_000;

/// Prompt tokens the upstream adds of its own beyond the body: the system prompt it writes for
/// tool use is a few hundred tokens.
pub const PROMPT_SLACK: u64 = 4_096;

/// The most prompt the upstream may report for this request before it is an absurd count: the
/// hold's prompt estimate at one byte a token (the estimate itself with the default
/// `bytes_per_token` of 1, which bounds any text prompt) plus [`PROMPT_SLACK`], and
/// [`SERVER_TOOL_PROMPT_MARGIN`] more when the request carries media or server tools, or a
/// server tool ran (docs/adr/0010-usage-faults-billed-from-the-hold.md).
fn prompt_bound(request: &HoldFacts, usage: &Usage) -> u64 {
    let prompt = request
        .prompt_estimate
        .saturating_mul(u64::from(request.bytes_per_token.max(1)))
        .saturating_add(PROMPT_SLACK);
    if request.unseen_prompt || usage.server_tools_ran() {
        prompt.saturating_add(SERVER_TOOL_PROMPT_MARGIN)
    } else {
        prompt
    }
}

/// Caps the prompt classes of `usage` at `bound` tokens in all, taking the excess off the
/// largest class first (the likeliest to be the bogus one). Returns whether it had to.
fn cap_prompt(usage: &mut Usage, bound: u64) -> bool {
    let mut excess = usage.prompt_tokens().saturating_sub(bound);
    if excess == 0 {
        return false;
    }
    let mut classes = [
        &mut usage.input_tokens,
        &mut usage.cache_read_tokens,
        &mut usage.cache_write_5m_tokens,
        &mut usage.cache_write_1h_tokens,
    ];
    classes.sort_by_key(|class| std::cmp::Reverse(**class));
    for class in classes {
        let cut = excess.min(*class);
        *class = class.saturating_sub(cut);
        excess = excess.saturating_sub(cut);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::MAX_COUNT_PER_CLASS;

    const FACTS: HoldFacts = HoldFacts {
        prompt_estimate: 900,
        max_tokens: 1000,
        bytes_per_token: 1,
        unseen_prompt: false,
    };

    fn reported(input: u64, output: u64) -> UsageReport {
        UsageReport {
            usage: Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            },
            prompt_reported: true,
            final_usage: true,
            relayed_output_bytes: 0,
            absurd_count: false,
            answer_complete: true,
            thinking_seen: false,
        }
    }

    #[test]
    fn a_final_usage_is_billed_as_reported() {
        let report = UsageReport {
            relayed_output_bytes: 5_000,
            ..reported(100, 40)
        };
        assert_eq!(
            bill(&report, &FACTS),
            Bill {
                usage: report.usage,
                estimated: false,
                fault: None
            }
        );
    }

    #[test]
    fn without_the_final_usage_the_relayed_output_is_billed_up_to_max_tokens() {
        let cut = UsageReport {
            final_usage: false,
            answer_complete: false,
            relayed_output_bytes: 701,
            ..reported(100, 1)
        };
        let billed = bill(&cut, &FACTS);
        assert_eq!(billed.usage.output_tokens, 701);
        assert_eq!(billed.usage.input_tokens, 100);
        assert!(billed.estimated);
        assert_eq!(billed.fault, None);
        // A divisor of 4 counts a quarter, rounded up.
        let quarter = HoldFacts {
            bytes_per_token: 4,
            ..FACTS
        };
        assert_eq!(bill(&cut, &quarter).usage.output_tokens, 176);
        // A reported count above the estimate stands.
        let counted = UsageReport {
            usage: Usage {
                output_tokens: 300,
                ..cut.usage
            },
            ..cut
        };
        assert_eq!(bill(&counted, &quarter).usage.output_tokens, 300);
        // Never more than max_tokens, and that is not the upstream's fault.
        let long = UsageReport {
            relayed_output_bytes: 50_000,
            ..cut
        };
        let billed = bill(&long, &FACTS);
        assert_eq!(billed.usage.output_tokens, 1000);
        assert_eq!(billed.fault, None);
    }

    #[test]
    fn without_the_final_usage_a_stream_that_thought_bills_max_tokens() {
        let thought = UsageReport {
            final_usage: false,
            answer_complete: false,
            relayed_output_bytes: 40,
            thinking_seen: true,
            ..reported(100, 1)
        };
        let billed = bill(&thought, &FACTS);
        assert_eq!(billed.usage.output_tokens, FACTS.max_tokens);
        assert!(billed.estimated);
        assert_eq!(billed.fault, None);
        // The final usage, when it comes, is billed as reported.
        let finished = UsageReport {
            final_usage: true,
            ..thought
        };
        assert_eq!(bill(&finished, &FACTS).usage.output_tokens, 1);
    }

    #[test]
    fn a_whole_answer_without_an_output_count_is_a_fault() {
        let prompt_only = UsageReport {
            final_usage: false,
            relayed_output_bytes: 70,
            ..reported(100, 0)
        };
        let billed = bill(&prompt_only, &FACTS);
        assert_eq!(billed.fault, Some(UsageFault::MissingUsage));
        assert_eq!(billed.usage.output_tokens, 70);
        assert!(billed.estimated);
        // A stream cut before its end is no fault: its usage just never came.
        let cut = UsageReport {
            answer_complete: false,
            ..prompt_only
        };
        assert_eq!(bill(&cut, &FACTS).fault, None);
    }

    #[test]
    fn an_answer_without_usage_is_billed_the_holds_estimate_as_a_fault() {
        for relayed in [0, 40] {
            let none = UsageReport {
                relayed_output_bytes: relayed,
                ..UsageReport::default()
            };
            let billed = bill(&none, &FACTS);
            assert_eq!(
                billed.usage,
                Usage {
                    input_tokens: 900,
                    output_tokens: 1000,
                    ..Usage::default()
                }
            );
            assert!(billed.estimated);
            assert_eq!(billed.fault, Some(UsageFault::MissingUsage));
        }
        // Output reported without a prompt: the prompt is the hold's, the output as counted.
        let output_only = UsageReport {
            prompt_reported: false,
            ..reported(0, 30)
        };
        let billed = bill(&output_only, &FACTS);
        assert_eq!(
            (billed.usage.input_tokens, billed.usage.output_tokens),
            (900, 30)
        );
        assert_eq!(billed.fault, Some(UsageFault::MissingUsage));
    }

    #[test]
    fn a_prompt_past_the_holds_estimate_is_a_fault_capped_there() {
        let flagged = UsageReport {
            absurd_count: true,
            ..reported(MAX_COUNT_PER_CLASS, 10)
        };
        let billed = bill(&flagged, &FACTS);
        assert_eq!(billed.fault, Some(UsageFault::AbsurdCount));
        let bound = FACTS.prompt_estimate + PROMPT_SLACK;
        assert_eq!(billed.usage.input_tokens, bound);
        // Below the per-class cap, but four classes of 9,999,999 are no prompt of 900 bytes:
        // the excess comes off the largest class first.
        let four = UsageReport {
            usage: Usage {
                input_tokens: 9_999_999,
                cache_read_tokens: 500,
                cache_write_5m_tokens: 9_999_999,
                cache_write_1h_tokens: 300,
                ..Usage::default()
            },
            ..reported(0, 10)
        };
        let billed = bill(&four, &FACTS);
        assert_eq!(billed.fault, Some(UsageFault::AbsurdCount));
        assert_eq!(billed.usage.prompt_tokens(), bound);
        assert_eq!(
            (
                billed.usage.cache_read_tokens,
                billed.usage.cache_write_1h_tokens
            ),
            (500, 300)
        );
        // A prompt within the estimate is no fault; a server tool's results get a margin.
        assert_eq!(bill(&reported(bound, 10), &FACTS).fault, None);
        let searched = UsageReport {
            usage: Usage {
                input_tokens: 50_000,
                web_search_requests: 2,
                ..Usage::default()
            },
            ..reported(0, 10)
        };
        assert_eq!(bill(&searched, &FACTS).fault, None);
        assert_eq!(bill(&searched, &FACTS).usage.input_tokens, 50_000);
        // So does a request whose media the body does not hold (a document by URL).
        let fetched = HoldFacts {
            unseen_prompt: true,
            ..FACTS
        };
        let document = reported(1_000_000, 10);
        assert_eq!(bill(&document, &FACTS).fault, Some(UsageFault::AbsurdCount));
        assert_eq!(bill(&document, &fetched).fault, None);
    }

    #[test]
    fn absurd_counts_are_a_fault_and_output_never_passes_max_tokens() {
        let too_long = bill(&reported(100, 5_000), &FACTS);
        assert_eq!(too_long.usage.output_tokens, 1000);
        assert_eq!(too_long.fault, Some(UsageFault::AbsurdCount));
        assert!(!too_long.estimated);
    }
}
