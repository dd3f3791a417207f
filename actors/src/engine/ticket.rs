//! The hold ticket: what an admitted request carries until it settles or releases its hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use crate::journal::{Durable, Lsn};
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

/// The longest a reply's last bytes wait for its settle to be durable. A working disk takes a
/// millisecond or two; past this the disk hangs, admission already refuses new requests
/// (the journal reports `Stalled` after 2 s), and the reply goes out, billed from memory.
pub const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// What the client's last bytes wait for: the journal's commit of the request's settle.
#[must_use = "the reply's last bytes must wait for the settle to be durable"]
pub enum Durability {
    /// Nothing to wait for: no journal, or `durable_before_reply` is off.
    Nothing,
    /// The journal refused the settle: nothing will make it durable.
    Refused,
    /// Appended; durable once this resolves.
    Pending {
        request_id: Uuid,
        durable: Durable,
        /// Counts the replies that went out without their settle on disk.
        missed: Arc<AtomicU64>,
    },
}

/// How a wait for durability ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durably {
    /// On disk (or there was nothing to wait for).
    Yes,
    /// Not on disk: the journal refused or failed it, or it took longer than
    /// [`DURABLE_WAIT`]. The settle is billed from memory all the same.
    No,
}

impl Durability {
    /// Waits, at most [`DURABLE_WAIT`], until the settle is on disk. Whatever happens the
    /// reply then goes out: its settle is in memory and on its way to the ledger; only a
    /// crash before the next flush would lose it, and that is logged and counted here.
    pub async fn wait(self) -> Durably {
        let (request_id, durable, missed) = match self {
            Durability::Nothing => return Durably::Yes,
            // Counted, and logged, when the journal refused it.
            Durability::Refused => return Durably::No,
            Durability::Pending {
                request_id,
                durable,
                missed,
            } => (request_id, durable, missed),
        };
        let failure = match tokio::time::timeout(DURABLE_WAIT, durable).await {
            Ok(Ok(())) => return Durably::Yes,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no commit within {DURABLE_WAIT:?}"),
        };
        tracing::error!(%request_id, error = %failure, "the journal did not make a settle durable; answering anyway, billed from memory");
        missed.fetch_add(1, Ordering::Relaxed);
        Durably::No
    }
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
    ///
    /// What answers the client must wait for the settle to be durable first: use
    /// [`HoldTicket::settle_durably`].
    pub fn settle_report(self, report: UsageReport, outcome: Outcome) -> Settlement {
        self.settle_durably(report, outcome).0
    }

    /// [`HoldTicket::settle_report`], with the journal's promise: the client's last bytes
    /// wait for [`Durability::wait`] (docs/adr/0019-write-ahead-journal.md). The record is
    /// appended to the journal before the settle goes to the account's actor, so it is
    /// durable before it counts as settled; a journal that refuses it (failed, stopped or
    /// overloaded) does not stop the settle, which is billed from memory as without one.
    pub fn settle_durably(
        mut self,
        report: UsageReport,
        outcome: Outcome,
    ) -> (Settlement, Durability) {
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
        let (lsn, durability) = self.journal(&record);
        // `do_send` ignores the mailbox bound, so a settle is never dropped for room; one
        // refused by a closed mailbox goes to the account's next actor (`Settle`'s `Drop`).
        self.addr
            .do_send(Settle::new(record, lsn, self.engine.redelivery()));
        let settlement = Settlement {
            usage,
            cost,
            outcome,
            estimated: billed.estimated,
            usage_fault: billed.fault,
        };
        (settlement, durability)
    }

    /// Appends `record` to the journal, if there is one: its number, and what the reply
    /// must wait for (nothing unless `durable_before_reply`).
    fn journal(&self, record: &UsageRecord) -> (Option<Lsn>, Durability) {
        let Some(journal) = self.engine.journal() else {
            return (None, Durability::Nothing);
        };
        match journal.append(record) {
            Ok(appended) => {
                let durability = if self.engine.inner.config.durable_before_reply {
                    Durability::Pending {
                        request_id: record.request_id,
                        durable: appended.durable,
                        missed: Arc::clone(&self.engine.inner.replies_not_durable),
                    }
                } else {
                    Durability::Nothing
                };
                (Some(appended.lsn), durability)
            }
            Err(error) => {
                tracing::error!(
                    request_id = %record.request_id,
                    account_id = %record.account_id,
                    cost = %record.cost,
                    %error,
                    "the journal refused a settle; it is billed from memory, and lost if the process dies before the next flush"
                );
                self.engine
                    .inner
                    .replies_not_durable
                    .fetch_add(1, Ordering::Relaxed);
                (None, Durability::Refused)
            }
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
