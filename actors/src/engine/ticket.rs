//! The hold ticket: what an admitted request carries until it settles or releases its hold.

use actix::prelude::*;
use chrono::Utc;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::admission::Passes;
use super::{Engine, HoldRequest, MAILBOX_WAIT};
use crate::account::actor::{AccountActor, Release, ResizeHold, Settle};
use crate::account::AccountId;
use crate::bill::{bill, HoldFacts, UsageFault};
use crate::hold::resized_hold;
use crate::ledger::{Outcome, UsageRecord};
use crate::pricing::PriceVersion;
use crate::usage::UsageReport;
use crate::Usage;

/// A request's admitted hold. Settle it with the usage the upstream reported, or release it
/// if the upstream failed before reporting any. Dropping an unsettled ticket releases it.
pub struct HoldTicket {
    pub(super) engine: Engine,
    pub(super) addr: Addr<AccountActor>,
    pub(super) amount: Decimal,
    pub(super) request: HoldRequest,
    /// Set once nothing is left to release: settled, released, or never granted.
    pub(super) done: bool,
    /// The concurrency slot and the shutdown's tracking, given back when the ticket is
    /// dropped: after its settle or release is queued.
    pub(super) _passes: Passes,
}

/// Whether the account covers a re-sized hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// The available balance covers the hold (always so for a hold that did not grow).
    Covered,
    /// The hold grew past what the account has available: the request must end now.
    Uncovered,
}

/// What a settled request cost.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub usage: Usage,
    pub cost: Decimal,
    pub outcome: Outcome,
    /// Some count is tollgate's estimate (the final usage never came).
    pub estimated: bool,
    /// The upstream's usage report was faulty.
    pub usage_fault: Option<UsageFault>,
}

impl HoldTicket {
    pub fn request_id(&self) -> Uuid {
        self.request.request_id
    }

    pub fn account_id(&self) -> AccountId {
        self.request.account_id
    }

    /// The amount currently held.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn version(&self) -> &PriceVersion {
        &self.request.version
    }

    /// Re-sizes the hold to the real prompt that `message_start` reported, and says whether
    /// the account can still cover it.
    ///
    /// A hold that shrinks or stays (the common case) is sent without waiting: the actor's
    /// mailbox keeps it ahead of the settle that follows, and it is covered by definition. A
    /// hold that grows waits for the actor's answer, because a request whose real prompt
    /// costs more than the account can cover must end before it produces output on credit
    /// (docs/adr/0012-a-stream-ends-at-message-start-when-the-balance-cannot-cover-it.md). The
    /// larger hold is recorded either way, so no other request is admitted against it; a
    /// mailbox that cannot answer counts as not covered (fail closed).
    pub async fn resize_to_prompt(&mut self, started: &Usage) -> Resize {
        let amount = resized_hold(&self.request.version, started, &self.request.shape);
        let grows = amount > self.amount;
        if amount == self.amount {
            return Resize::Covered;
        }
        self.amount = amount;
        let resize = ResizeHold {
            request_id: self.request.request_id,
            amount,
        };
        if !grows {
            self.addr.do_send(resize);
            return Resize::Covered;
        }
        match self.addr.send(resize).timeout(MAILBOX_WAIT).await {
            Ok(true) => Resize::Covered,
            Ok(false) => Resize::Uncovered,
            Err(error) => {
                tracing::error!(request_id = %self.request.request_id, %error, "the account actor did not answer a growing hold; treating it as uncovered");
                Resize::Uncovered
            }
        }
    }

    /// Debits the cost of `usage`, a final usage the upstream reported, at the request's price
    /// version (see [`HoldTicket::settle_report`]).
    pub fn settle(self, usage: Usage, outcome: Outcome) -> Settlement {
        self.settle_report(UsageReport::reported(usage), outcome)
    }

    /// Debits the bill of `report` ([`crate::bill`]) at the request's price version: the
    /// upstream's counts, or tollgate's estimate where they are missing or absurd. The settle is
    /// queued in the account's mailbox without waiting for a reply, so it cannot be lost if the
    /// caller goes away before the actor gets to it; [`Engine::shutdown`] waits for every
    /// queued settle before the final flush.
    pub fn settle_report(mut self, report: UsageReport, outcome: Outcome) -> Settlement {
        self.done = true;
        let policy = self.engine.hold_policy();
        let facts = HoldFacts {
            prompt_estimate: policy.estimate_prompt_tokens(&self.request.shape),
            max_tokens: self.request.shape.max_tokens,
            bytes_per_token: policy.bytes_per_token,
            unseen_prompt: self.request.shape.media_tokens > 0
                || self.request.shape.tool_tokens > 0,
        };
        let billed = bill(&report, &facts);
        let request_id = self.request.request_id;
        if let Some(fault) = billed.fault {
            tracing::error!(
                %request_id,
                account_id = %self.request.account_id,
                fault = fault.as_str(),
                reported = ?report.usage,
                billed = ?billed.usage,
                "the upstream's usage report is faulty; billing tollgate's estimate"
            );
        } else if billed.estimated {
            tracing::info!(
                %request_id,
                output_tokens = billed.usage.output_tokens,
                "the final usage never came; billing the output relayed (estimated)"
            );
        }
        let usage = billed.usage;
        let version = &self.request.version;
        let cost = version.cost(&usage);
        let long_prompt_tier = version
            .long_prompt
            .as_ref()
            .is_some_and(|tier| usage.prompt_tokens() > tier.threshold_tokens);
        let record = UsageRecord {
            request_id,
            account_id: self.request.account_id,
            key_id: self.request.key_id,
            model: std::mem::take(&mut self.request.model),
            usage,
            cost,
            price_version: version.effective_from,
            long_prompt_tier,
            outcome,
            estimated: billed.estimated,
            usage_fault: billed.fault,
            started_at: self.request.started_at,
            finished_at: Utc::now(),
        };
        // `do_send` ignores the mailbox bound, so a settle is never dropped for room; one
        // refused by a closed mailbox goes to the account's next actor (`Settle`'s `Drop`).
        self.addr
            .do_send(Settle::new(record, self.engine.redelivery()));
        Settlement {
            usage,
            cost,
            outcome,
            estimated: billed.estimated,
            usage_fault: billed.fault,
        }
    }

    /// Drops the hold without a debit.
    pub fn release(mut self) {
        self.send_release();
    }

    fn send_release(&mut self) {
        self.done = true;
        self.addr.do_send(Release::new(
            self.request.account_id,
            self.request.request_id,
            self.engine.redelivery(),
        ));
    }
}

impl Drop for HoldTicket {
    fn drop(&mut self) {
        if !self.done {
            self.send_release();
        }
    }
}
