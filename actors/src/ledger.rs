//! The ledger's entries as the engine makes them: a settled request's usage record, and the
//! balance changes that are not usage. The flusher and the store write them; a usage record's
//! `request_id` makes its write idempotent.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::AccountId;
use crate::bill::UsageFault;
use crate::Usage;

/// Why money was added to or taken from a balance outside of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// An operator's grant.
    Credit,
    /// An operator's correction, which may be negative.
    Adjustment,
    /// The balance of an account its owner deleted, written off (always negative).
    Forfeiture,
    /// A recharge order, paid: its USD at the rate it locked.
    Recharge,
    /// A redemption code, redeemed: its USD.
    Redemption,
    /// An inviter's reward for an invitee's first paid recharge.
    ReferralReward,
    /// A referral reward taken back by an operator (negative).
    ReferralReversal,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CreditKind::Credit => "credit",
            CreditKind::Adjustment => "adjustment",
            CreditKind::Forfeiture => "forfeiture",
            CreditKind::Recharge => "recharge",
            CreditKind::Redemption => "redemption",
            CreditKind::ReferralReward => "referral_reward",
            CreditKind::ReferralReversal => "referral_reversal",
        }
    }

    /// The route an `Idempotency-Key` of this kind belongs to ([`IdempotencyClaim::scope`]).
    pub fn scope(self) -> &'static str {
        match self {
            CreditKind::Credit => "credit",
            CreditKind::Adjustment => "adjust",
            CreditKind::Forfeiture => "forfeit",
            CreditKind::Recharge => "recharge",
            CreditKind::Redemption => "redeem",
            CreditKind::ReferralReward => "referral",
            CreditKind::ReferralReversal => "referral-reversal",
        }
    }
}

/// A balance change that is not usage. The store writes it and its ledger entry in one
/// transaction before the actor applies it in memory.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    pub id: Uuid,
    pub account_id: AccountId,
    pub kind: CreditKind,
    pub amount: Decimal,
    pub reason: String,
    /// The operator's `Idempotency-Key`, claimed in the same transaction as the change.
    pub idempotency: Option<IdempotencyClaim>,
    /// What else the change settles, in the same transaction; the change is written only if
    /// that holds ([`ChangeApplied::Refused`] otherwise).
    pub settles: Option<Settles>,
}

/// What a balance change settles besides the balance, in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settles {
    /// A recharge order, from `pending` to `paid` by this payer and reference. The change's
    /// id is the order's, and its amount the order's USD: the order credits once. A store
    /// error leaves the change unconfirmed like an idempotency key's (the actor remembers
    /// it by the order's id), so that a retry that finds it committed still adds it here.
    RechargeOrder {
        /// `epay`, `webhook` or `manual`: which path pays it. EPay and webhooks pay only
        /// orders made for them; an operator confirms any.
        path: PaymentPath,
        /// Who paid, as recorded: `epay`, `webhook:<provider>` or `manual`.
        provider: String,
        /// The payer's reference for the payment, unique per provider.
        provider_ref: String,
        /// An operator's reason, for a confirmation by hand.
        reason: Option<String>,
    },
    /// A redemption code, from unredeemed to redeemed by the change's account. The change's
    /// id is the code's, and its amount the code's: a code credits once. Redeemed already by
    /// this account: [`ChangeApplied::AlreadyApplied`]; by another, or expired:
    /// [`ChangeApplied::Refused`].
    RedemptionCode,
    /// A referral reward, from `pending` to `paid` to the change's account (the inviter). The
    /// change's id is the reward's, and its amount the reward's: a reward credits once.
    ReferralReward,
    /// A paid referral reward, from `paid` to `reversed`, debited from the change's account
    /// (the inviter) by the reward's amount; the balance may go below zero. The change's id
    /// is derived from the reward's, so that a reward is reversed once.
    ReferralReversal { reward_id: Uuid, reason: String },
}

/// Which path reports a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentPath {
    Epay,
    Webhook,
    Manual,
}

/// An operator's `Idempotency-Key` on a balance change
/// (docs/adr/0016-idempotent-operator-writes.md). The store claims it in the transaction
/// that applies the change, so the change is applied once however often it is sent: a key
/// already claimed applies nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyClaim {
    /// The route the key belongs to (`credit`, `adjust`): a key is unique per account and
    /// scope.
    pub scope: &'static str,
    pub key: String,
    /// A digest of what the request asks (kind, amount, reason): a retry must ask the same.
    pub fingerprint: Vec<u8>,
}

/// What the store did with a balance change, so that the actor's balance follows the
/// stored one exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeApplied {
    /// Written now, with its ledger entry.
    Applied,
    /// Written before: its idempotency key was claimed (or its id entered) by the change
    /// `change_id`. Nothing was written now.
    AlreadyApplied { change_id: Uuid },
    /// What the change [settles](BalanceChange::settles) did not hold (an order expired, or
    /// not payable by that path): nothing was written. An order paid already, under any
    /// reference, is [`ChangeApplied::AlreadyApplied`]: its credit is in the ledger.
    Refused,
}

/// A balance change as the account's actor answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceChanged {
    pub applied: ChangeApplied,
    /// The live balance afterwards.
    pub balance: Decimal,
}

/// How a metered request ended; recorded on its usage row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream finished the response and the client received it.
    Completed,
    /// The client went away; usage is the upstream's final (or last seen, if the drain
    /// timed out) cumulative usage.
    ClientDisconnected,
    /// The upstream stream was cut or reported an error after it had started.
    UpstreamCut,
    /// Shutdown's drain bound passed while the stream was running; usage is the last
    /// cumulative usage seen.
    Interrupted,
    /// `message_start` revealed a prompt whose cost the account's balance could not cover:
    /// tollgate ended the stream before any output (docs/adr/0012-a-stream-ends-at-message-start-when-the-balance-cannot-cover-it.md).
    /// Usage is what `message_start` reported.
    BalanceExceeded,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientDisconnected => "client_disconnected",
            Outcome::UpstreamCut => "upstream_cut",
            Outcome::Interrupted => "interrupted",
            Outcome::BalanceExceeded => "balance_exceeded",
        }
    }
}

/// One settled request, as the flusher writes it. `request_id` is the idempotency key: a
/// record written twice is stored and debited once.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub request_id: Uuid,
    pub account_id: AccountId,
    pub key_id: Uuid,
    pub model: String,
    pub usage: Usage,
    pub cost: Decimal,
    /// The `effective_from` of the rate-card version the request was priced at.
    pub price_version: DateTime<Utc>,
    pub long_prompt_tier: bool,
    pub outcome: Outcome,
    /// Some count is tollgate's estimate, because the upstream's final usage never came
    /// (see [`crate::bill`]).
    pub estimated: bool,
    /// The upstream's usage report was faulty: missing, or absurd.
    pub usage_fault: Option<UsageFault>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}
