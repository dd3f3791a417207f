//! The engine's public face: a cloneable handle that activates account actors, admits
//! requests with a hold, and hands back a [`HoldTicket`] that settles or releases it.
//! Callers never see an actix type.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use rust_decimal::Decimal;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::account::{
    AccountActor, AccountView, ApplyChange, CarriedHolds, Orphans, PreAuthorize, Refusal, Release,
    ResizeHold, SetLimits, SetStatus, Settle, Snapshot,
};
use crate::flusher::{FlusherHandle, FlusherStats};
use crate::hold::{resized_hold, HoldPolicy, RequestShape};
use crate::limits::AccountLimits;
use crate::pricing::PriceVersion;
use crate::store::{
    AccountId, AccountStatus, BalanceChange, CreditKind, LedgerStore, Outcome, StoreError,
    UsageRecord,
};
use crate::Usage;

/// How long a request waits for room in a full account mailbox before it is told the service
/// is overloaded.
pub(crate) const MAILBOX_WAIT: Duration = Duration::from_secs(2);

/// After the drain bound, interrupted requests settle what they saw; this bounds how long
/// that takes.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);
/// How long a replacement actor waits for its stopped predecessor's holds.
const HAND_OVER_WAIT: Duration = Duration::from_secs(1);

/// Engine failures that are not a refusal of the request itself.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("account not found")]
    AccountNotFound,
    #[error("the account's mailbox is full")]
    Overloaded,
    #[error("the ledger cannot be written and too much usage is waiting for it")]
    LedgerUnavailable,
    #[error("the engine is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why pre-authorization did not produce a hold.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Where account actors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorPlacement {
    /// On the threads that registered with [`Engine::host_actors_here`] (the HTTP workers),
    /// spread by account id. A request served by its account's own worker reaches the actor
    /// without waking another thread. Until a thread registers, actors start on one
    /// dedicated arbiter.
    Workers,
    /// On this many threads of their own, spread by account id.
    Dedicated(usize),
}

/// Settings the engine needs from the service's configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub flush_interval: Duration,
    pub placement: ActorPlacement,
    pub hold_policy: HoldPolicy,
    /// While the ledger cannot be written, new holds are refused once this many settled
    /// requests are waiting for it: it bounds what a crash could lose.
    pub max_unflushed: u64,
}

/// The metering engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    accounts: DashMap<AccountId, Arc<OnceCell<Addr<AccountActor>>>>,
    /// Threads of the engine's own: every dedicated arbiter, or the fallback for
    /// [`ActorPlacement::Workers`] before any worker registered.
    own_arbiters: Vec<Arbiter>,
    /// Threads that offered to host actors ([`ActorPlacement::Workers`]).
    hosts: RwLock<Vec<ArbiterHandle>>,
    /// Accounts whose actor stopped (its thread did), with the holds of their running
    /// requests: the next actor must not load the stored balance before every debit the old
    /// one settled has been flushed, and it carries those holds over.
    orphaned: Orphans,
    /// The runtime the engine started on (the main thread's). Messages re-sent after their
    /// actor stopped are sent from here: the thread they were dropped on may be stopping.
    runtime: tokio::runtime::Handle,
    store: Arc<dyn LedgerStore>,
    flusher: FlusherHandle,
    config: EngineConfig,
    /// Requests whose upstream work is still running (relays, drains, settles), so that a
    /// graceful shutdown can wait for them.
    in_flight: TaskTracker,
    /// Set when shutdown begins: new requests are refused so the drain can finish.
    draining: AtomicBool,
    /// Fired when the drain bound has passed: running relays stop and settle what they saw.
    interrupt: CancellationToken,
}

/// What the HTTP layer knows about a request when it asks for a hold.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub request_id: Uuid,
    pub account_id: AccountId,
    pub key_id: Uuid,
    /// The canonical model id from the rate card.
    pub model: String,
    /// The rate-card version in force when the request started; the request is billed at it.
    pub version: PriceVersion,
    pub shape: RequestShape,
    pub started_at: DateTime<Utc>,
}

impl Engine {
    /// Starts the engine: its account arbiters and the flusher. Must run inside an actix
    /// `System` (as actix-web's main does).
    pub fn start(config: EngineConfig, store: Arc<dyn LedgerStore>) -> Engine {
        let own = match config.placement {
            ActorPlacement::Workers => 1,
            ActorPlacement::Dedicated(n) => n.max(1),
        };
        let own_arbiters = (0..own).map(|_| Arbiter::new()).collect();
        let flusher = FlusherHandle::start(store.clone(), config.flush_interval);
        Engine {
            inner: Arc::new(Inner {
                accounts: DashMap::new(),
                own_arbiters,
                hosts: RwLock::new(Vec::new()),
                orphaned: Orphans::default(),
                runtime: tokio::runtime::Handle::current(),
                store,
                flusher,
                config,
                in_flight: TaskTracker::new(),
                draining: AtomicBool::new(false),
                interrupt: CancellationToken::new(),
            }),
        }
    }

    /// Offers the current thread's arbiter (an HTTP worker's) to host account actors. Does
    /// nothing unless the placement is [`ActorPlacement::Workers`]. Actors already running
    /// stay where they are; the placement only decides where new ones start.
    pub fn host_actors_here(&self) {
        if self.inner.config.placement != ActorPlacement::Workers {
            return;
        }
        let mut hosts = match self.inner.hosts.write() {
            Ok(hosts) => hosts,
            Err(poisoned) => poisoned.into_inner(),
        };
        hosts.push(Arbiter::current());
    }

    /// The arbiter a new actor for `id` starts on. A host whose thread has stopped (it no
    /// longer accepts work) is forgotten rather than given actors that would never run.
    fn home_of(&self, id: AccountId) -> ArbiterHandle {
        let mut hosts = match self.inner.hosts.write() {
            Ok(hosts) => hosts,
            Err(poisoned) => poisoned.into_inner(),
        };
        while !hosts.is_empty() {
            let index = arbiter_index(id, hosts.len());
            if hosts[index].spawn(async {}) {
                return hosts[index].clone();
            }
            tracing::warn!("an HTTP worker that hosted account actors has stopped");
            hosts.swap_remove(index);
        }
        let own = &self.inner.own_arbiters;
        own[arbiter_index(id, own.len())].handle()
    }

    pub fn hold_policy(&self) -> &HoldPolicy {
        &self.inner.config.hold_policy
    }

    pub fn flusher(&self) -> &FlusherHandle {
        &self.inner.flusher
    }

    pub fn flusher_stats(&self) -> FlusherStats {
        self.inner.flusher.stats()
    }

    /// Number of accounts with a live actor.
    pub fn active_accounts(&self) -> usize {
        self.inner.accounts.len()
    }

    /// Accounts whose actor stopped and has not been replaced yet.
    pub fn orphaned_accounts(&self) -> usize {
        self.inner.orphaned.len()
    }

    /// Fires when a shutdown's drain bound has passed. Relays watch it to settle the usage
    /// they have seen instead of being dropped.
    pub fn interrupted(&self) -> CancellationToken {
        self.inner.interrupt.clone()
    }

    /// Runs a request's upstream work on the current runtime, tracked for graceful shutdown.
    /// The task is detached from the client's connection: a client that goes away does not
    /// cancel the metering of what the upstream already produced.
    pub fn spawn_tracked<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.in_flight.spawn(work)
    }

    /// The actor of an account, started on its arbiter on first use, and started again if the
    /// thread it ran on has stopped.
    async fn actor(&self, id: AccountId) -> Result<Addr<AccountActor>, EngineError> {
        // The common case, an active account, takes only a shard read lock.
        if let Some(addr) = self
            .inner
            .accounts
            .get(&id)
            .and_then(|cell| cell.get().cloned())
        {
            if addr.connected() {
                return Ok(addr);
            }
            tracing::error!(account_id = %id, "an account actor stopped; starting a new one");
            // Marked here, not only by the actor's own hand-over: the new actor must load
            // after a flush even if this thread sees the closed mailbox first.
            self.inner.orphaned.entry(id).or_default();
            self.inner
                .accounts
                .remove_if(&id, |_, cell| cell.get().is_some_and(|a| !a.connected()));
        }
        let cell = self
            .inner
            .accounts
            .entry(id)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let loaded = cell
            .get_or_try_init(|| async {
                if self.inner.orphaned.contains_key(&id) {
                    // The stored balance lacks the debits still queued for the ledger.
                    if !self.inner.flusher.flush_now().await {
                        return Err(EngineError::LedgerUnavailable);
                    }
                    self.wait_for_hand_over(id).await;
                }
                let record = self
                    .inner
                    .store
                    .load_account(id)
                    .await?
                    .ok_or(EngineError::AccountNotFound)?;
                let home = self.home_of(id);
                let store = self.inner.store.clone();
                let flusher = self.inner.flusher.clone();
                let holds = self
                    .inner
                    .orphaned
                    .remove(&id)
                    .map(|(_, orphan)| orphan.holds)
                    .unwrap_or_default();
                let carried = CarriedHolds::new(id, holds, self.inner.orphaned.clone());
                Ok::<_, EngineError>(AccountActor::start_in_arbiter(&home, |_| {
                    AccountActor::new(record, carried, store, flusher)
                }))
            })
            .await;
        match loaded {
            Ok(addr) => Ok(addr.clone()),
            Err(error) => {
                if matches!(error, EngineError::AccountNotFound) {
                    self.inner.accounts.remove(&id);
                }
                Err(error)
            }
        }
    }

    /// Waits, briefly, until the stopped actor of `id` has handed its holds over. actix drops
    /// an actor before its mailbox, so this is normally done before the stop is noticed;
    /// the wait covers any other order.
    async fn wait_for_hand_over(&self, id: AccountId) {
        let deadline = tokio::time::Instant::now() + HAND_OVER_WAIT;
        while self
            .inner
            .orphaned
            .get(&id)
            .is_some_and(|orphan| !orphan.handed_over)
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::error!(account_id = %id, "a stopped account actor did not hand its holds over");
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reserves the worst-case cost of a request. On success the returned ticket must be
    /// settled or released; dropping it releases the hold.
    pub async fn pre_authorize(&self, request: HoldRequest) -> Result<HoldTicket, AdmitError> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(EngineError::Stopped.into());
        }
        let flusher = self.inner.flusher.stats();
        if flusher.failing && flusher.backlog >= self.inner.config.max_unflushed {
            return Err(EngineError::LedgerUnavailable.into());
        }
        let addr = self.actor(request.account_id).await?;
        let amount = self
            .inner
            .config
            .hold_policy
            .initial_hold(&request.version, &request.shape);
        // From here on a hold may exist even if this future is dropped (the client went away,
        // or the mailbox wait timed out just as the actor admitted the request): the ticket
        // releases it on drop. A release of a hold that was never granted is a no-op, and the
        // mailbox keeps it behind the admission.
        let mut ticket = HoldTicket {
            engine: self.clone(),
            addr,
            amount,
            request,
            done: false,
        };
        let admitted = ticket
            .addr
            .send(PreAuthorize {
                request_id: ticket.request.request_id,
                amount,
            })
            .timeout(MAILBOX_WAIT)
            .await;
        match admitted {
            Ok(Ok(())) => Ok(ticket),
            Ok(Err(refusal)) => {
                // Nothing was held.
                ticket.done = true;
                Err(refusal.into())
            }
            Err(error) => Err(mailbox_error(error).into()),
        }
    }

    /// Credits (or, for an adjustment, possibly debits) an account through its actor. Returns
    /// the live balance afterwards.
    pub async fn change_balance(
        &self,
        account_id: AccountId,
        kind: CreditKind,
        amount: Decimal,
        reason: String,
    ) -> Result<Decimal, EngineError> {
        let addr = self.actor(account_id).await?;
        let change = BalanceChange {
            id: Uuid::now_v7(),
            account_id,
            kind,
            amount,
            reason,
        };
        addr.send(ApplyChange(change))
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    pub async fn set_status(
        &self,
        account_id: AccountId,
        status: AccountStatus,
        reason: String,
    ) -> Result<(), EngineError> {
        let addr = self.actor(account_id).await?;
        addr.send(SetStatus { status, reason })
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    pub async fn set_limits(
        &self,
        account_id: AccountId,
        limits: AccountLimits,
    ) -> Result<(), EngineError> {
        let addr = self.actor(account_id).await?;
        addr.send(SetLimits(limits))
            .await
            .map_err(|_| EngineError::Stopped)
    }

    /// The live view of an account (activating it if needed).
    pub async fn view(&self, account_id: AccountId) -> Result<AccountView, EngineError> {
        let addr = self.actor(account_id).await?;
        addr.send(Snapshot)
            .timeout(MAILBOX_WAIT)
            .await
            .map_err(mailbox_error)
    }

    /// Graceful shutdown:
    /// 1. refuses new requests;
    /// 2. waits (at most `drain`) for in-flight requests to finish and settle;
    /// 3. past that bound, interrupts the rest, which settle the usage they have seen;
    /// 4. waits until every account actor has applied every settle sent to it;
    /// 5. flushes everything (at most `flush_deadline`).
    ///
    /// Call it while the runtimes the requests run on are still up (before stopping the HTTP
    /// server's workers). Returns whether every request finished and everything was flushed.
    pub async fn shutdown(&self, drain: Duration, flush_deadline: Duration) -> bool {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.in_flight.close();
        let drained = tokio::time::timeout(drain, self.inner.in_flight.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                remaining = self.inner.in_flight.len(),
                "in-flight requests did not finish within the drain bound; settling what they saw"
            );
            self.inner.interrupt.cancel();
            if tokio::time::timeout(INTERRUPT_GRACE, self.inner.in_flight.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    remaining = self.inner.in_flight.len(),
                    "requests still running after the interrupt"
                );
            }
        }
        // Settles are queued without waiting; a round trip to every actor proves that each
        // one has applied (and so handed to the flusher) every settle queued before it.
        let actors: Vec<_> = self
            .inner
            .accounts
            .iter()
            .filter_map(|entry| entry.value().get().cloned())
            .collect();
        for addr in actors {
            if addr.send(Snapshot).await.is_err() {
                tracing::error!("an account actor stopped before shutdown finished");
            }
        }
        let flushed = self.inner.flusher.shutdown(flush_deadline).await;
        drained && flushed
    }
}

impl Engine {
    /// A settle dropped unhandled because its actor stopped (the actor's thread did). The
    /// debit goes through the account's next actor, which applies it to the balance it
    /// loads after the flush and drops the hold it carried over; if no actor can be started,
    /// the usage goes straight to the ledger.
    pub(crate) fn redeliver_settle(&self, record: UsageRecord) {
        let engine = self.clone();
        self.redeliver(async move {
            let id = record.account_id;
            match engine.actor(id).await {
                Ok(addr) => addr.do_send(Settle::new(record, engine.clone())),
                Err(_) if engine.inner.flusher.has_stopped() => {
                    tracing::error!(account_id = %id, request_id = %record.request_id, cost = %record.cost, "a settle arrived after the final flush; its usage is not recorded");
                }
                Err(error) => {
                    tracing::error!(account_id = %id, %error, "no actor for a settle; its usage goes straight to the ledger");
                    engine.forget_carried_hold(id, record.request_id);
                    engine.inner.flusher.push(record);
                }
            }
        });
    }

    /// A release dropped unhandled because its actor stopped: the account's next actor drops
    /// the hold it carried over.
    pub(crate) fn redeliver_release(&self, account_id: AccountId, request_id: Uuid) {
        let engine = self.clone();
        self.redeliver(async move {
            match engine.actor(account_id).await {
                Ok(addr) => addr.do_send(Release::new(account_id, request_id, engine.clone())),
                Err(_) => engine.forget_carried_hold(account_id, request_id),
            }
        });
    }

    /// Runs a re-send on the engine's own runtime, tracked so that shutdown waits for it.
    fn redeliver(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.in_flight.spawn_on(work, &self.inner.runtime);
    }

    /// No actor could take over the account: the hold is dropped from what the next one
    /// will carry over.
    fn forget_carried_hold(&self, account_id: AccountId, request_id: Uuid) {
        if let Some(mut orphan) = self.inner.orphaned.get_mut(&account_id) {
            orphan.holds.retain(|(id, _)| *id != request_id);
        }
    }
}

fn arbiter_index(id: AccountId, n: usize) -> usize {
    // UUIDv7 ids start with a timestamp; the low bits are random, so they spread evenly.
    (id.as_u128() as u64 % n as u64) as usize
}

fn mailbox_error(error: MailboxError) -> EngineError {
    match error {
        MailboxError::Timeout => EngineError::Overloaded,
        MailboxError::Closed => EngineError::Stopped,
    }
}

/// A request's admitted hold. Settle it with the usage the upstream reported, or release it
/// if the upstream failed before reporting any. Dropping an unsettled ticket releases it.
pub struct HoldTicket {
    engine: Engine,
    addr: Addr<AccountActor>,
    amount: Decimal,
    request: HoldRequest,
    done: bool,
}

/// What a settled request cost.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub usage: Usage,
    pub cost: Decimal,
    pub outcome: Outcome,
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

    /// Re-sizes the hold to the real prompt that `message_start` reported. Does not wait: the
    /// actor's mailbox keeps this ahead of the settle that follows it.
    pub fn resize_to_prompt(&mut self, started: &Usage) {
        let amount = resized_hold(
            &self.request.version,
            started,
            self.request.shape.max_tokens,
        );
        if amount != self.amount {
            self.amount = amount;
            self.addr.do_send(ResizeHold {
                request_id: self.request.request_id,
                amount,
            });
        }
    }

    /// Debits the exact cost of `usage` at the request's price version. The settle is queued
    /// in the account's mailbox without waiting for a reply, so it cannot be lost if the
    /// caller goes away before the actor gets to it; [`Engine::shutdown`] waits for every
    /// queued settle before the final flush.
    pub fn settle(mut self, usage: Usage, outcome: Outcome) -> Settlement {
        self.done = true;
        let version = &self.request.version;
        let cost = version.cost(&usage);
        let long_prompt_tier = version
            .long_prompt
            .as_ref()
            .is_some_and(|tier| usage.prompt_tokens() > tier.threshold_tokens);
        let record = UsageRecord {
            request_id: self.request.request_id,
            account_id: self.request.account_id,
            key_id: self.request.key_id,
            model: std::mem::take(&mut self.request.model),
            usage,
            cost,
            price_version: version.effective_from,
            long_prompt_tier,
            outcome,
            started_at: self.request.started_at,
            finished_at: Utc::now(),
        };
        // `do_send` ignores the mailbox bound, so a settle is never dropped for room; one
        // refused by a closed mailbox goes to the account's next actor (`Settle`'s `Drop`).
        self.addr.do_send(Settle::new(record, self.engine.clone()));
        Settlement {
            usage,
            cost,
            outcome,
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
            self.engine.clone(),
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
