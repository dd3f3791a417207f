//! The account actor: the one writer of an account's money while the account is active.
//!
//! Every change to the balance or the holds is a message handled here, one at a time, so two
//! parallel requests can never both spend the same dollar. Operator changes that must be on
//! disk before they count (credits, suspensions) are handled atomically: the actor processes
//! nothing else until the store has answered.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use dashmap::DashMap;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::gate::AccountGate;
use super::key_limits::KeyThrottles;
use super::key_spend::KeySpends;
use super::uncertain::UncertainChanges;
use super::{AccountId, AccountRecord, AccountStatus, AccountView, Refusal, SpendCaps};
use crate::flusher::FlusherHandle;
use crate::journal::Lsn;
use crate::ledger::{BalanceChange, BalanceChanged, ChangeApplied, CreditKind, UsageRecord};
use crate::limits::{AccountLimits, Limiters};
use crate::store::{LedgerStore, StoreError};

/// How many messages may wait in one account's mailbox. A sender that finds it full waits a
/// bounded time (the engine's mailbox wait) and then gets an overload error, never an
/// unbounded queue.
pub(crate) const MAILBOX_CAPACITY: usize = 4096;

/// One request's reservation.
struct Hold {
    amount: Decimal,
    /// Its token estimate, counted in `pending_tokens` until it settles or is released.
    tokens: u64,
    /// The key whose spend caps count this hold, if its key has any.
    capped_key: Option<Uuid>,
    /// The key whose own rate limits count this request, if its key has any.
    limited_key: Option<Uuid>,
}

/// Accounts whose actor stopped (its thread did). The account's next actor takes the holds
/// over, so money reserved for requests still running stays reserved until they settle or
/// release.
pub(crate) type Orphans = Arc<DashMap<AccountId, Orphan>>;

#[derive(Debug, Default)]
pub(crate) struct Orphan {
    /// The holds of the requests that were running when the actor stopped.
    pub holds: Vec<(Uuid, Decimal)>,
    /// Set once the stopped actor has handed its holds over (the engine may notice the
    /// stop a moment before the actor is dropped).
    pub handed_over: bool,
    /// The account's gate, kept for the next actor: the concurrency slots of the requests
    /// still running stay counted.
    pub gate: Option<Arc<AccountGate>>,
}

/// Holds on their way to a new actor. If the actor never starts (its thread stopped before
/// it could), they go back to the orphans for the next one.
pub(crate) struct CarriedHolds {
    account_id: AccountId,
    /// Taken by the actor when it starts.
    holds: Option<Vec<(Uuid, Decimal)>>,
    orphans: Orphans,
}

impl CarriedHolds {
    pub(crate) fn new(
        account_id: AccountId,
        holds: Vec<(Uuid, Decimal)>,
        orphans: Orphans,
    ) -> Self {
        CarriedHolds {
            account_id,
            holds: Some(holds),
            orphans,
        }
    }
}

impl Drop for CarriedHolds {
    fn drop(&mut self) {
        if let Some(holds) = self.holds.take() {
            hand_over(&self.orphans, self.account_id, holds.into_iter());
        }
    }
}

fn hand_over(orphans: &Orphans, id: AccountId, holds: impl Iterator<Item = (Uuid, Decimal)>) {
    let mut orphan = orphans.entry(id).or_default();
    orphan.holds.extend(holds);
    orphan.handed_over = true;
}

/// Where a settle or a release goes when the actor it was sent to drops it unhandled: to the
/// account's next actor. Cloned into every settle and release, so it is one reference count.
#[derive(Clone)]
pub(crate) struct Redelivery(Arc<dyn Redeliver>);

/// What re-sending needs: an actor for the account, started if the old one is gone. Only the
/// engine can start one, so it implements this; the trait keeps the account actor free of
/// any dependency on the engine.
pub(crate) trait Redeliver: Send + Sync + 'static {
    /// Sends the settle of `record` (at `lsn` in the journal, if it has one) again, to the
    /// next actor of its account.
    fn settle(self: Arc<Self>, record: UsageRecord, lsn: Option<Lsn>);
    /// Sends the release of `request_id`'s hold again, to the next actor of `account_id`.
    fn release(self: Arc<Self>, account_id: AccountId, request_id: Uuid);
}

impl Redelivery {
    pub(crate) fn new(to: Arc<dyn Redeliver>) -> Redelivery {
        Redelivery(to)
    }

    fn settle(&self, record: UsageRecord, lsn: Option<Lsn>) {
        Arc::clone(&self.0).settle(record, lsn);
    }

    fn release(&self, account_id: AccountId, request_id: Uuid) {
        Arc::clone(&self.0).release(account_id, request_id);
    }
}

pub(crate) struct AccountActor {
    id: AccountId,
    status: AccountStatus,
    /// Stored balance minus the debits this actor settled that may not be flushed yet.
    balance: Decimal,
    holds: HashMap<Uuid, Hold>,
    /// Sum of `holds`, kept alongside so admission is O(1).
    held: Decimal,
    /// Sum of the holds' token estimates: what the tokens-per-minute limit must leave room
    /// for before admitting another request (docs/adr/0014-limiter-order.md). Holds carried
    /// over from a stopped actor count none.
    pending_tokens: u64,
    limits: AccountLimits,
    limiters: Limiters,
    /// Spent and held per key with a spend cap. Holds carried over from a stopped actor count
    /// against no key (they say not which); their settles still count as spent.
    key_spends: KeySpends,
    /// Running requests and allowances per key with limits of its own. Holds carried over
    /// from a stopped actor count against no key.
    key_throttles: KeyThrottles,
    /// What the HTTP side checks before reading a body; kept current after every change.
    gate: Arc<AccountGate>,
    store: Arc<dyn LedgerStore>,
    flusher: FlusherHandle,
    orphans: Orphans,
    /// Idempotent changes whose write failed without saying whether it committed. A retry
    /// with the same key learns from the store which it was, and the balance follows
    /// (docs/adr/0016-idempotent-operator-writes.md). Bounded; empty in a new actor, which
    /// starts from the stored balance.
    uncertain: UncertainChanges,
}

impl AccountActor {
    /// `carried` are the holds of requests still running under the account's previous actor.
    pub(crate) fn new(
        record: AccountRecord,
        mut carried: CarriedHolds,
        gate: Arc<AccountGate>,
        store: Arc<dyn LedgerStore>,
        flusher: FlusherHandle,
    ) -> AccountActor {
        let orphans = carried.orphans.clone();
        let carried = carried.holds.take().unwrap_or_default();
        let held = carried.iter().map(|(_, amount)| amount).sum();
        let holds = carried
            .into_iter()
            .map(|(request_id, amount)| {
                let hold = Hold {
                    amount,
                    tokens: 0,
                    capped_key: None,
                    limited_key: None,
                };
                (request_id, hold)
            })
            .collect();
        gate.set_max_concurrent(record.limits.max_concurrent);
        let actor = AccountActor {
            id: record.id,
            status: record.status,
            balance: record.balance,
            holds,
            held,
            pending_tokens: 0,
            limiters: Limiters::new(&record.limits),
            limits: record.limits,
            key_spends: KeySpends::load(record.key_spent),
            key_throttles: KeyThrottles::default(),
            gate,
            store,
            flusher,
            orphans,
            uncertain: UncertainChanges::default(),
        };
        actor.publish();
        actor
    }

    fn available(&self) -> Decimal {
        self.balance - self.held
    }

    /// Shows the HTTP side what a new request would find now.
    fn publish(&self) {
        self.gate
            .publish(self.status, self.balance, self.available());
    }

    fn remove_hold(&mut self, request_id: &Uuid) -> Option<Hold> {
        let hold = self.holds.remove(request_id)?;
        self.held -= hold.amount;
        self.pending_tokens = self.pending_tokens.saturating_sub(hold.tokens);
        if self.holds.is_empty() {
            // Guard against drift: with no holds the sum is zero by definition.
            self.held = Decimal::ZERO;
            self.pending_tokens = 0;
        }
        Some(hold)
    }
}

/// An actor is dropped only when the thread it runs on stops: an HTTP worker that actix
/// replaced, or the end of the process. actix handles none of the messages still in its
/// mailbox then; it drops them, and the settles and releases among them send themselves to
/// the account's next actor (see [`Settle`]). What the actor itself holds that is not on its
/// way to the ledger is the holds of requests still running: it hands them over here.
impl Drop for AccountActor {
    fn drop(&mut self) {
        let holds = self.holds.drain().map(|(id, hold)| (id, hold.amount));
        hand_over(&self.orphans, self.id, holds);
        if let Some(mut orphan) = self.orphans.get_mut(&self.id) {
            orphan.gate.get_or_insert_with(|| Arc::clone(&self.gate));
        }
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        tracing::debug!(account_id = %self.id, balance = %self.balance, "account actor started");
    }
}

/// Reserve `amount` for a request before it goes upstream. Its concurrency slot was taken
/// at the account's gate, before its body was read.
#[derive(Message)]
#[rtype(result = "Result<(), Refusal>")]
pub(crate) struct PreAuthorize {
    pub request_id: Uuid,
    pub amount: Decimal,
    /// The request's own token estimate, which the tokens-per-minute limit must have room for.
    pub tokens: u64,
    pub key_id: Uuid,
    /// The key's spend caps, which the hold must fit under as it must under the balance.
    pub caps: Option<SpendCaps>,
    /// The key's own rate limits (0 inherits the account's), if it has any.
    pub key_limits: Option<AccountLimits>,
}

impl Handler<PreAuthorize> for AccountActor {
    type Result = Result<(), Refusal>;

    /// Status, then balance, then the key's spend caps, then the key's own rate limits, then
    /// the account's, which spend their allowance only for a request that every other check
    /// admitted (docs/adr/0014-limiter-order.md).
    fn handle(&mut self, msg: PreAuthorize, _: &mut Self::Context) -> Self::Result {
        if self.status != AccountStatus::Active {
            return Err(Refusal::Suspended);
        }
        // A balance at or below zero admits nothing, whatever the hold.
        let available = self.available();
        if self.balance <= Decimal::ZERO || available < msg.amount {
            return Err(Refusal::InsufficientBalance {
                required: msg.amount,
                available: available.max(Decimal::ZERO),
            });
        }
        // The caps are checked without taking anything, so a throttled request holds nothing.
        if let Some(caps) = msg.caps {
            self.key_spends
                .check(msg.key_id, caps, msg.amount, Utc::now().date_naive())?;
        }
        if let Some(limits) = msg.key_limits {
            self.key_throttles
                .check(msg.key_id, limits, msg.tokens)
                .map_err(|(which, retry_after)| Refusal::KeyThrottled { which, retry_after })?;
        }
        self.limiters
            .admit(msg.tokens, self.pending_tokens)
            .map_err(|(which, retry_after)| Refusal::Throttled { which, retry_after })?;
        let limited_key = msg.key_limits.map(|_| {
            self.key_throttles.admit(msg.key_id, msg.tokens);
            msg.key_id
        });
        let capped_key = msg.caps.map(|_| {
            self.key_spends.hold(msg.key_id, msg.amount);
            msg.key_id
        });
        self.held += msg.amount;
        self.pending_tokens = self.pending_tokens.saturating_add(msg.tokens);
        let hold = Hold {
            amount: msg.amount,
            tokens: msg.tokens,
            capped_key,
            limited_key,
        };
        self.holds.insert(msg.request_id, hold);
        self.publish();
        Ok(())
    }
}

/// Replace a hold's amount once `message_start` revealed the real prompt. The request is
/// already running, so a larger hold is recorded, not refused; the answer says whether the
/// balance still covers every hold (the relay ends a stream that it does not cover).
#[derive(Message)]
#[rtype(result = "bool")]
pub(crate) struct ResizeHold {
    pub request_id: Uuid,
    pub amount: Decimal,
}

impl Handler<ResizeHold> for AccountActor {
    type Result = bool;

    fn handle(&mut self, msg: ResizeHold, _: &mut Self::Context) -> bool {
        if let Some(hold) = self.holds.get_mut(&msg.request_id) {
            self.held += msg.amount - hold.amount;
            if let Some(key) = hold.capped_key {
                self.key_spends.resize(key, msg.amount - hold.amount);
            }
            hold.amount = msg.amount;
            self.publish();
            self.balance > Decimal::ZERO && self.available() >= Decimal::ZERO
        } else {
            // A hold this actor does not know (its predecessor's resize was lost): judge the
            // amount alone against what is available.
            self.balance > Decimal::ZERO && self.available() >= msg.amount
        }
    }
}

/// Debit a finished request's exact cost, drop its hold, and queue its usage for the ledger.
///
/// A settle must not vanish with a stopped actor: one dropped unhandled (refused by a closed
/// mailbox, or still queued in the mailbox of an actor whose thread stopped) is sent again,
/// to the account's next actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Settle {
    record: Option<UsageRecord>,
    /// The record's place in the journal, if it was appended to one: the flusher reports it
    /// flushed once the ledger holds the record.
    lsn: Option<Lsn>,
    redelivery: Redelivery,
}

impl Settle {
    pub(crate) fn new(record: UsageRecord, lsn: Option<Lsn>, redelivery: Redelivery) -> Settle {
        Settle {
            record: Some(record),
            lsn,
            redelivery,
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            self.redelivery.settle(record, self.lsn);
        }
    }
}

impl Handler<Settle> for AccountActor {
    type Result = ();

    fn handle(&mut self, mut msg: Settle, _: &mut Self::Context) {
        let Some(record) = msg.record.take() else {
            return;
        };
        let hold = self.remove_hold(&record.request_id);
        let used_tokens = record.usage.rate_limited_tokens();
        if let Some((key, tokens)) = hold
            .as_ref()
            .and_then(|hold| hold.limited_key.map(|key| (key, hold.tokens)))
        {
            self.key_throttles.finish(key, tokens, used_tokens);
        }
        let key_held = hold
            .filter(|hold| hold.capped_key.is_some())
            .map_or(Decimal::ZERO, |hold| hold.amount);
        self.key_spends.settle(
            record.key_id,
            key_held,
            record.cost,
            record.started_at.date_naive(),
            Utc::now().date_naive(),
        );
        self.balance -= record.cost;
        self.limiters.charge_tokens(used_tokens);
        self.publish();
        tracing::debug!(
            account_id = %self.id,
            request_id = %record.request_id,
            cost = %record.cost,
            balance = %self.balance,
            "settled"
        );
        self.flusher.push(record, msg.lsn);
    }
}

/// Drop a hold without a debit: the upstream failed before reporting any usage. Like a
/// settle, a release dropped unhandled is sent again to the account's next actor, which
/// carries the hold over.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Release {
    request_id: Option<Uuid>,
    account_id: AccountId,
    redelivery: Redelivery,
}

impl Release {
    pub(crate) fn new(account_id: AccountId, request_id: Uuid, redelivery: Redelivery) -> Release {
        Release {
            request_id: Some(request_id),
            account_id,
            redelivery,
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(request_id) = self.request_id.take() {
            self.redelivery.release(self.account_id, request_id);
        }
    }
}

impl Handler<Release> for AccountActor {
    type Result = ();

    fn handle(&mut self, mut msg: Release, _: &mut Self::Context) {
        if let Some(request_id) = msg.request_id.take() {
            if let Some(hold) = self.remove_hold(&request_id) {
                if let Some(key) = hold.capped_key {
                    self.key_spends.release(key, hold.amount);
                }
                if let Some(key) = hold.limited_key {
                    self.key_throttles.finish(key, hold.tokens, 0);
                }
            }
            self.publish();
        }
    }
}

/// Apply a credit or adjustment: written to the store first, then to the balance, and only
/// if the store wrote it now.
#[derive(Message)]
#[rtype(result = "Result<BalanceChanged, StoreError>")]
pub(crate) struct ApplyChange(pub BalanceChange);

impl Handler<ApplyChange> for AccountActor {
    type Result = AtomicResponse<Self, Result<BalanceChanged, StoreError>>;

    fn handle(&mut self, msg: ApplyChange, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.apply(msg.0))
    }
}

impl AccountActor {
    /// Writes `change` to the store, then to the balance if the store wrote it now; the
    /// actor handles nothing else meanwhile.
    fn apply(
        &mut self,
        change: BalanceChange,
    ) -> ResponseActFuture<Self, Result<BalanceChanged, StoreError>> {
        if self.status == AccountStatus::Deleted {
            return Box::pin(fut::ready(Err(StoreError(format!(
                "account {} is deleted",
                self.id
            )))));
        }
        let store = self.store.clone();
        let (id, amount) = (change.id, change.amount);
        // A change whose answer is lost may have committed: what a retry finds tells, by the
        // operator's key or, for an order, by the order's id (the change's).
        let claim = change
            .idempotency
            .as_ref()
            .map(|claim| (claim.scope, claim.key.clone()))
            .or_else(|| {
                change
                    .settles
                    .as_ref()
                    .map(|_| (change.kind.scope(), change.id.to_string()))
            });
        Box::pin(
            async move { store.apply_balance_change(&change).await }
                .into_actor(self)
                .map(move |written, actor, _| {
                    let applied = match written {
                        Ok(applied) => applied,
                        Err(error) => {
                            // It may have committed all the same: a retry with the key finds out.
                            if let Some(claim) = claim {
                                if let Some((scope, key)) =
                                    actor.uncertain.remember(claim, id, amount)
                                {
                                    tracing::warn!(
                                        account_id = %actor.id,
                                        scope,
                                        idempotency_key = %key,
                                        "too many unconfirmed balance changes: this key's is \
                                         forgotten, and the live balance may be short of it \
                                         until the account is reloaded"
                                    );
                                }
                            }
                            return Err(error);
                        }
                    };
                    // A write of this key's that failed may have been the one that committed:
                    // its amount was never applied here.
                    let unconfirmed = claim
                        .map(|claim| actor.uncertain.resolve(&claim, applied))
                        .unwrap_or_default();
                    match applied {
                        ChangeApplied::Applied => actor.balance += amount,
                        ChangeApplied::AlreadyApplied { .. } => actor.balance += unconfirmed,
                        ChangeApplied::Refused => {}
                    }
                    actor.publish();
                    Ok(BalanceChanged {
                        applied,
                        balance: actor.balance,
                    })
                }),
        )
    }
}

/// Close an account whose owner is deleting it: write off its whole positive balance with a
/// `forfeiture` ledger entry and set its status to `deleted`, in one store transaction
/// (docs/adr/0021-account-deletion.md). Refused while requests are still running, since their
/// settles would then debit a balance already written off, and while a balance change of
/// this actor's is unconfirmed, since the stored balance may then differ from this one; the
/// caller waits and asks again. A debt (a balance below zero) is refused too: writing it off
/// would be a credit, which is the operator's to make.
#[derive(Message)]
#[rtype(result = "Result<Forfeited, ForfeitRefused>")]
pub(crate) struct Forfeit {
    pub reason: String,
}

/// What a forfeiture wrote off (zero when there was nothing to write off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forfeited {
    pub amount: Decimal,
}

/// Why an account was not closed.
#[derive(Debug, thiserror::Error)]
pub enum ForfeitRefused {
    #[error("{0} requests are still running")]
    Running(usize),
    #[error("a balance change's outcome is not known yet")]
    Unconfirmed,
    #[error("the account owes {0} USD")]
    Debt(Decimal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

impl Handler<Forfeit> for AccountActor {
    type Result = AtomicResponse<Self, Result<Forfeited, ForfeitRefused>>;

    fn handle(&mut self, msg: Forfeit, _: &mut Self::Context) -> Self::Result {
        let refused = if !self.holds.is_empty() {
            Some(ForfeitRefused::Running(self.holds.len()))
        } else if !self.uncertain.is_empty() {
            Some(ForfeitRefused::Unconfirmed)
        } else if self.balance < Decimal::ZERO {
            Some(ForfeitRefused::Debt(-self.balance))
        } else {
            None
        };
        if let Some(refused) = refused {
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused))));
        }
        let amount = self.balance;
        // The forfeiture's id is the account's own, so a retry of a close whose answer was
        // lost finds it entered and writes it again nowhere.
        let forfeiture = (amount > Decimal::ZERO).then(|| BalanceChange {
            id: self.id,
            account_id: self.id,
            kind: CreditKind::Forfeiture,
            amount: -amount,
            reason: msg.reason.clone(),
            idempotency: None,
            settles: None,
        });
        let store = self.store.clone();
        let id = self.id;
        AtomicResponse::new(Box::pin(
            async move {
                store
                    .close_account(id, forfeiture.as_ref(), &msg.reason)
                    .await
            }
            .into_actor(self)
            .map(move |written, actor, _| {
                written?;
                actor.balance -= amount;
                actor.status = AccountStatus::Deleted;
                actor.publish();
                Ok(Forfeited { amount })
            }),
        ))
    }
}

/// Suspend or reinstate the account: stored first, effective for the next request.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub(crate) struct SetStatus {
    pub status: AccountStatus,
    pub reason: String,
}

impl Handler<SetStatus> for AccountActor {
    type Result = AtomicResponse<Self, Result<(), StoreError>>;

    fn handle(&mut self, msg: SetStatus, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let id = self.id;
        AtomicResponse::new(Box::pin(
            async move { store.set_status(id, msg.status, &msg.reason).await }
                .into_actor(self)
                .map(move |written, actor, _| {
                    written?;
                    actor.status = msg.status;
                    actor.publish();
                    Ok(())
                }),
        ))
    }
}

/// Replace the account's throttles (the operator changed them).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetLimits(pub AccountLimits);

impl Handler<SetLimits> for AccountActor {
    type Result = ();

    fn handle(&mut self, msg: SetLimits, _: &mut Self::Context) {
        self.limits = msg.0;
        self.limiters = Limiters::new(&msg.0);
        self.gate.set_max_concurrent(msg.0.max_concurrent);
    }
}

/// Read the live view.
#[derive(Message)]
#[rtype(result = "AccountView")]
pub(crate) struct Snapshot;

impl Handler<Snapshot> for AccountActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(AccountView {
            id: self.id,
            status: self.status,
            balance: self.balance,
            held: self.held,
            active_requests: self.holds.len() as u32,
            limits: self.limits,
        })
    }
}
