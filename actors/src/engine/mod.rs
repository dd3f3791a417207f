//! The engine's public face: a cloneable handle that activates account actors, admits
//! requests with a hold, and hands back a [`HoldTicket`] that settles or releases it.
//! Callers never see an actix type.
//!
//! - `admission`: letting a request in before its body is read ([`Admission`]), then its hold;
//!   an unbilled one ([`UnbilledAdmission`]) with no slot and no hold.
//! - `placement`: which thread a new account actor starts on ([`ActorPlacement`]).
//! - `ticket`: the [`HoldTicket`] an admitted request carries until it settles or releases.
//! - `redelivery`: the settles and releases a stopped actor dropped, sent to its successor.
//! - `shutdown`: the graceful drain and final flush ([`Engine::shutdown`]).

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

use crate::account::actor::{
    AccountActor, ApplyChange, CarriedHolds, Forfeit, ForfeitRefused, Forfeited, Orphans,
    SetLimits, SetStatus, Snapshot,
};
use crate::account::gate::AccountGate;
use crate::account::{AccountId, AccountStatus, AccountView, Refusal, SpendCaps};
use crate::flusher::{FlusherHandle, FlusherStats};
use crate::hold::{HoldPolicy, RequestShape};
use crate::journal::{Journal, JournalHealth};
use crate::ledger::{BalanceChange, BalanceChanged, CreditKind, IdempotencyClaim};
use crate::limits::AccountLimits;
use crate::pricing::PriceVersion;
use crate::store::{LedgerStore, StoreError};

mod admission;
mod placement;
mod redelivery;
mod shutdown;
mod ticket;

pub use admission::{Admission, UnbilledAdmission};
pub use placement::ActorPlacement;
pub use shutdown::{INTERRUPT_GRACE, SNAPSHOT_DEADLINE};
pub use ticket::{Durability, Durably, HoldTicket, Resize, Settlement, DURABLE_WAIT};

/// How long a request waits for room in a full account mailbox before it is told the service
/// is overloaded.
pub(crate) const MAILBOX_WAIT: Duration = Duration::from_secs(2);

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
    /// The write-ahead journal cannot take more (docs/adr/0019-write-ahead-journal.md): it
    /// failed, hangs, is full or falls behind. New requests are refused (fail closed).
    #[error("the usage journal cannot be written: {0:?}")]
    JournalUnavailable(JournalHealth),
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

/// Settings the engine needs from the service's configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub flush_interval: Duration,
    pub placement: ActorPlacement,
    pub hold_policy: HoldPolicy,
    /// While the ledger cannot be written, new holds are refused once this many settled
    /// requests are waiting for it: it bounds what a crash could lose.
    pub max_unflushed: u64,
    /// The write-ahead journal every settle is appended to, if one is configured
    /// (`metering.journal_dir`; docs/adr/0019-write-ahead-journal.md). Its replay must be
    /// written to the ledger before the engine starts ([`crate::flusher::write_replay`]).
    pub journal: Option<Journal>,
    /// Whether the last bytes of a reply wait until its settle is durable in the journal
    /// (`metering.durable_before_reply`).
    pub durable_before_reply: bool,
}

/// The metering engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    accounts: DashMap<AccountId, Arc<OnceCell<Active>>>,
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
    /// Requests from the moment they are let in (before their body is read) until their
    /// upstream work, relay and settle are done, so that a graceful shutdown can wait for
    /// them. Closed when shutdown begins: new requests are refused so the drain can finish.
    in_flight: TaskTracker,
    /// Fired when the drain bound has passed: running relays stop and settle what they saw.
    interrupt: CancellationToken,
    /// Settles answered without being durable in the journal: refused by it, failed, or
    /// not committed within [`ticket::DURABLE_WAIT`].
    replies_not_durable: Arc<std::sync::atomic::AtomicU64>,
}

/// A running account actor and the gate it keeps current.
#[derive(Clone)]
struct Active {
    addr: Addr<AccountActor>,
    gate: Arc<AccountGate>,
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
    /// The key's spend caps, if it has any: the hold must fit under them as under the balance.
    pub spend_caps: Option<SpendCaps>,
    /// The key's own rate limits, if it has any (0 in a field inherits the account's).
    pub key_limits: Option<AccountLimits>,
}

impl Engine {
    /// Starts the engine: its account arbiters and the flusher. Must run inside an actix
    /// `System` (as actix-web's main does).
    pub fn start(config: EngineConfig, store: Arc<dyn LedgerStore>) -> Engine {
        // Threads for account actors. Nothing joins them, on purpose: what runs on them is
        // actors, whose work shutdown accounts for by a round trip to each (every settle sent
        // before it has been handed to the flusher); an idle thread has nothing left to lose,
        // and it ends with the process.
        let own_arbiters = (0..config.placement.own_arbiters())
            .map(|_| Arbiter::new())
            .collect();
        let flusher = FlusherHandle::start_journaled(
            store.clone(),
            config.flush_interval,
            config.journal.clone(),
        );
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
                interrupt: CancellationToken::new(),
                replies_not_durable: Arc::default(),
            }),
        }
    }

    pub fn hold_policy(&self) -> &HoldPolicy {
        &self.inner.config.hold_policy
    }

    pub fn flusher(&self) -> &FlusherHandle {
        &self.inner.flusher
    }

    /// The write-ahead journal, if one is configured.
    pub fn journal(&self) -> Option<&Journal> {
        self.inner.config.journal.as_ref()
    }

    /// Settles whose reply went out, or whose settle counted, without the journal holding
    /// them: refused by it, failed, or not committed within [`DURABLE_WAIT`].
    pub fn settles_not_durable(&self) -> u64 {
        self.inner
            .replies_not_durable
            .load(std::sync::atomic::Ordering::Relaxed)
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
        self.active(id).await.map(|active| active.addr)
    }

    /// The account's running actor and its gate ([`Engine::actor`]).
    async fn active(&self, id: AccountId) -> Result<Active, EngineError> {
        // The common case, an active account, takes only a shard read lock.
        if let Some(active) = self
            .inner
            .accounts
            .get(&id)
            .and_then(|cell| cell.get().cloned())
        {
            if active.addr.connected() {
                return Ok(active);
            }
            tracing::error!(account_id = %id, "an account actor stopped; starting a new one");
            // Marked here, not only by the actor's own hand-over: the new actor must load
            // after a flush even if this thread sees the closed mailbox first. The gate goes
            // with it, so the slots of requests still running stay counted.
            self.inner
                .orphaned
                .entry(id)
                .or_default()
                .gate
                .get_or_insert_with(|| active.gate.clone());
            self.inner.accounts.remove_if(&id, |_, cell| {
                cell.get().is_some_and(|a| !a.addr.connected())
            });
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
                let home = self.home_of(id)?;
                let store = self.inner.store.clone();
                let flusher = self.inner.flusher.clone();
                let (holds, gate) = self
                    .inner
                    .orphaned
                    .remove(&id)
                    .map(|(_, orphan)| (orphan.holds, orphan.gate))
                    .unwrap_or_default();
                let gate = gate.unwrap_or_default();
                // Published before the gate can be seen: the actor starts on its arbiter a
                // moment after `start_in_arbiter` returns.
                let held: Decimal = holds.iter().map(|(_, amount)| *amount).sum();
                gate.set_max_concurrent(record.limits.max_concurrent);
                gate.publish(record.status, record.balance, record.balance - held);
                let carried = CarriedHolds::new(id, holds, self.inner.orphaned.clone());
                let actor_gate = gate.clone();
                // Tracked by `accounts`: shutdown reaches every actor through it.
                let addr = AccountActor::start_in_arbiter(&home, |_| {
                    AccountActor::new(record, carried, actor_gate, store, flusher)
                });
                Ok::<_, EngineError>(Active { addr, gate })
            })
            .await;
        match loaded {
            Ok(active) => Ok(active.clone()),
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

    /// Lets a request in and reserves its worst-case cost, in one call: [`Engine::check_in`],
    /// then [`Admission::pre_authorize`]. On success the returned ticket must be settled or
    /// released; dropping it releases the hold.
    pub async fn pre_authorize(&self, request: HoldRequest) -> Result<HoldTicket, AdmitError> {
        self.check_in(request.account_id)
            .await?
            .pre_authorize(request)
            .await
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
        let changed = self
            .change_balance_once(account_id, kind, amount, reason, None)
            .await?;
        Ok(changed.balance)
    }

    /// [`Engine::change_balance`], applied once per idempotency key: a change whose key was
    /// claimed already applies nothing and answers [`AlreadyApplied`](crate::ChangeApplied::AlreadyApplied).
    pub async fn change_balance_once(
        &self,
        account_id: AccountId,
        kind: CreditKind,
        amount: Decimal,
        reason: String,
        idempotency: Option<IdempotencyClaim>,
    ) -> Result<BalanceChanged, EngineError> {
        let addr = self.actor(account_id).await?;
        let change = BalanceChange {
            id: Uuid::now_v7(),
            account_id,
            kind,
            amount,
            reason,
            idempotency,
            settles: None,
        };
        let changed = addr
            .send(ApplyChange(change))
            .await
            .map_err(|_| EngineError::Stopped)??;
        Ok(changed)
    }

    /// Applies a change made whole by the caller (its id, and what it
    /// [settles](BalanceChange::settles)) through its account's actor: a paid recharge order,
    /// whose id is the order's.
    pub async fn apply_change(&self, change: BalanceChange) -> Result<BalanceChanged, EngineError> {
        let addr = self.actor(change.account_id).await?;
        addr.send(ApplyChange(change))
            .await
            .map_err(|_| EngineError::Stopped)?
            .map_err(EngineError::from)
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
            .map_err(|_| EngineError::Stopped)??;
        Ok(())
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

    /// Closes an account its owner is deleting: its whole positive balance written off with a
    /// `forfeiture` ledger entry and its status set to `deleted`, in one transaction, once no
    /// request of it is running ([`ForfeitRefused::Running`] until then). For an account
    /// already suspended with its keys revoked, so that nothing new starts.
    pub async fn close(
        &self,
        account_id: AccountId,
        reason: String,
    ) -> Result<Forfeited, ForfeitRefused> {
        let addr = self.actor(account_id).await?;
        addr.send(Forfeit { reason })
            .await
            .map_err(|_| EngineError::Stopped)?
    }

    /// The live view of an account (activating it if needed).
    pub async fn view(&self, account_id: AccountId) -> Result<AccountView, EngineError> {
        let addr = self.actor(account_id).await?;
        addr.send(Snapshot)
            .timeout(MAILBOX_WAIT)
            .await
            .map_err(mailbox_error)
    }
}

fn mailbox_error(error: MailboxError) -> EngineError {
    match error {
        MailboxError::Timeout => EngineError::Overloaded,
        MailboxError::Closed => EngineError::Stopped,
    }
}
