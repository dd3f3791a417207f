//! The engine on its own, against an in-memory ledger that can be made to fail: the cases a
//! real Postgres will not produce on demand.

// The helpers beside the tests are test code too, which clippy.toml's allowances (made for
// #[test] functions and #[cfg(test)] modules) do not reach.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use tollgate_actors::hold::HoldPolicy;
use tollgate_actors::pricing::RateCard;
use tollgate_actors::probe::MediaCount;
use tollgate_actors::store::{BatchOutcome, LedgerStore, StoreError};
use tollgate_actors::{
    AccountId, AccountRecord, AccountStatus, BalanceChange, BalanceChanged, ChangeApplied,
    CreditKind, IdempotencyClaim, Outcome, UsageRecord,
};
use tollgate_actors::{
    AccountLimits, AccountView, ActorPlacement, AdmitError, Engine, EngineConfig, EngineError,
    HoldRequest,
};
use uuid::Uuid;

/// A ledger in memory; `down` makes every write fail. Every account opens with the same
/// balance, and each keeps its own from there.
#[derive(Default)]
struct MemoryLedger {
    opening: Decimal,
    balances: Mutex<HashMap<AccountId, Decimal>>,
    rows: Mutex<Vec<UsageRecord>>,
    down: AtomicBool,
    /// How long a credit takes to be stored.
    credit_delay_ms: AtomicU64,
    /// How long a batch takes to be written.
    write_delay_ms: AtomicU64,
    /// Idempotency keys claimed, by (account, scope, key): the id of the change that did.
    claims: Mutex<HashMap<(AccountId, &'static str, String), Uuid>>,
    /// The next balance change commits, then its caller is told it failed, as when the
    /// connection drops after the commit.
    lose_next_answer: AtomicBool,
    /// The next balance change fails before anything is written.
    refuse_next_change: AtomicBool,
    /// Each batch written, or tried, while up: its size, and whether it was written at once
    /// (more waiting behind it) rather than paced.
    writes: Mutex<Vec<(usize, bool)>>,
    /// The write, counted from 1 in `writes`, that fails; 0 for none.
    fail_write: AtomicU64,
}

impl MemoryLedger {
    fn opening_with(balance: Decimal) -> Arc<MemoryLedger> {
        Arc::new(MemoryLedger {
            opening: balance,
            ..MemoryLedger::default()
        })
    }

    fn balance_of(&self, id: AccountId) -> Decimal {
        *self
            .balances
            .lock()
            .unwrap()
            .get(&id)
            .unwrap_or(&self.opening)
    }

    fn add(&self, id: AccountId, amount: Decimal) {
        *self
            .balances
            .lock()
            .unwrap()
            .entry(id)
            .or_insert(self.opening) += amount;
    }
}

#[async_trait]
impl LedgerStore for MemoryLedger {
    async fn load_account(&self, id: AccountId) -> Result<Option<AccountRecord>, StoreError> {
        Ok(Some(AccountRecord {
            id,
            status: AccountStatus::Active,
            balance: self.balance_of(id),
            limits: AccountLimits {
                requests_per_minute: 0,
                tokens_per_minute: 0,
                max_concurrent: 0,
            },
            key_spent: Vec::new(),
        }))
    }

    async fn apply_balance_change(
        &self,
        change: &BalanceChange,
    ) -> Result<ChangeApplied, StoreError> {
        let delay = self.credit_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.refuse_next_change.swap(false, Ordering::SeqCst) {
            return Err(StoreError("the database is down".into()));
        }
        if let Some(claim) = &change.idempotency {
            let slot = (change.account_id, claim.scope, claim.key.clone());
            let mut claims = self.claims.lock().unwrap();
            if let Some(change_id) = claims.get(&slot) {
                return Ok(ChangeApplied::AlreadyApplied {
                    change_id: *change_id,
                });
            }
            claims.insert(slot, change.id);
        }
        self.add(change.account_id, change.amount);
        if self.lose_next_answer.swap(false, Ordering::SeqCst) {
            return Err(StoreError("connection lost after the commit".into()));
        }
        Ok(ChangeApplied::Applied)
    }

    async fn set_status(&self, _: AccountId, _: AccountStatus, _: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn write_batch(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        self.write(batch, false).await
    }

    async fn write_batch_at_once(&self, batch: &[UsageRecord]) -> Result<BatchOutcome, StoreError> {
        self.write(batch, true).await
    }
}

impl MemoryLedger {
    async fn write(
        &self,
        batch: &[UsageRecord],
        at_once: bool,
    ) -> Result<BatchOutcome, StoreError> {
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError("the database is down".into()));
        }
        let attempt = {
            let mut writes = self.writes.lock().unwrap();
            writes.push((batch.len(), at_once));
            writes.len() as u64
        };
        if self.fail_write.load(Ordering::SeqCst) == attempt {
            return Err(StoreError("the connection dropped".into()));
        }
        let mut rows = self.rows.lock().unwrap();
        let stored: HashSet<Uuid> = rows.iter().map(|r| r.request_id).collect();
        let mut inserted = 0;
        for record in batch {
            if !stored.contains(&record.request_id) {
                self.add(record.account_id, -record.cost);
                rows.push(record.clone());
                inserted += 1;
            }
        }
        Ok(BatchOutcome { inserted })
    }

    /// The request ids stored, in the order they were.
    fn stored_ids(&self) -> Vec<Uuid> {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.request_id)
            .collect()
    }
}

fn engine(ledger: Arc<MemoryLedger>, max_unflushed: u64) -> Engine {
    engine_placed(ledger, max_unflushed, ActorPlacement::Dedicated(1))
}

fn engine_placed(
    ledger: Arc<MemoryLedger>,
    max_unflushed: u64,
    placement: ActorPlacement,
) -> Engine {
    Engine::start(
        EngineConfig {
            flush_interval: Duration::from_millis(20),
            placement,
            hold_policy: HoldPolicy::default(),
            max_unflushed,
            journal: None,
            durable_before_reply: true,
        },
        ledger,
    )
}

/// An engine whose actors live on the threads that offer to host them, and one such thread,
/// which has offered (as each HTTP worker does when it starts).
async fn engine_with_a_host(ledger: Arc<MemoryLedger>) -> (Engine, actix_rt::Arbiter) {
    let engine = engine_placed(ledger, 100, ActorPlacement::Workers);
    let host = actix_rt::Arbiter::new();
    let (offered, was_offered) = tokio::sync::oneshot::channel();
    let offering = engine.clone();
    assert!(host.spawn(async move {
        offering.host_actors_here();
        let _ = offered.send(());
    }));
    was_offered.await.unwrap();
    (engine, host)
}

/// Stops a host thread and waits until it has ended, and its actors with it.
async fn stop_host(host: actix_rt::Arbiter) {
    host.stop();
    tokio::task::spawn_blocking(move || host.join())
        .await
        .unwrap()
        .unwrap();
}

fn request(account_id: AccountId) -> HoldRequest {
    let card = RateCard::builtin().unwrap();
    HoldRequest {
        request_id: Uuid::now_v7(),
        account_id,
        key_id: Uuid::now_v7(),
        model: "claude-haiku-5-5".into(),
        version: card
            .price_at("claude-haiku-5-5", Utc::now())
            .unwrap()
            .clone(),
        shape: HoldPolicy::default().shape(28, 10, MediaCount::default(), &[]),
        started_at: Utc::now(),
        spend_caps: None,
        key_limits: None,
    }
}

/// Settles `n` requests of `account` while the ledger is down, so that they wait in the
/// flusher's buffer; their request ids in the order they settled.
async fn backlog(
    engine: &Engine,
    ledger: &MemoryLedger,
    account: AccountId,
    n: usize,
) -> Vec<Uuid> {
    ledger.down.store(true, Ordering::SeqCst);
    let template = request(account);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let request = HoldRequest {
            request_id: Uuid::now_v7(),
            ..template.clone()
        };
        ids.push(request.request_id);
        let ticket = engine.pre_authorize(request).await.unwrap();
        ticket.settle(usage(), Outcome::Completed);
    }
    // A round trip through the same mailbox: every settle is with the flusher.
    engine.view(account).await.unwrap();
    assert_eq!(engine.flusher_stats().backlog, n as u64);
    ids
}

fn usage() -> tollgate_actors::Usage {
    tollgate_actors::Usage {
        input_tokens: 10,
        output_tokens: 5,
        ..Default::default()
    }
}

#[actix_rt::test]
async fn while_the_ledger_cannot_be_written_new_requests_are_refused_past_the_backlog_bound() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    ledger.down.store(true, Ordering::SeqCst);
    let engine = engine(ledger.clone(), 3);
    let account = Uuid::now_v7();
    for _ in 0..3 {
        let ticket = engine.pre_authorize(request(account)).await.unwrap();
        ticket.settle(usage(), Outcome::Completed);
    }
    // Settles are queued without a reply; a round trip through the same mailbox proves the
    // actor has handed all three to the flusher. Then let the writer try (and fail).
    engine.view(account).await.unwrap();
    let _ = engine.flusher().flush_now().await;
    let stats = engine.flusher_stats();
    assert!(stats.failing && stats.backlog == 3, "{stats:?}");
    let refused = engine.pre_authorize(request(account)).await;
    assert!(
        matches!(
            refused,
            Err(AdmitError::Engine(EngineError::LedgerUnavailable))
        ),
        "admitted while {} debits wait for a failing ledger",
        engine.flusher_stats().backlog
    );
    // The database comes back: the backlog is written once, and requests are admitted again.
    ledger.down.store(false, Ordering::SeqCst);
    assert!(engine.flusher().flush_now().await);
    assert_eq!(ledger.rows.lock().unwrap().len(), 3);
    assert!(engine.pre_authorize(request(account)).await.is_ok());
    let view = engine.view(account).await.unwrap();
    assert_eq!(ledger.balance_of(account), view.balance);
}

#[actix_rt::test]
async fn a_dropped_ticket_releases_its_hold_and_a_resize_follows_the_real_prompt() {
    let ledger = MemoryLedger::opening_with(dec!(1));
    let engine = engine(ledger, 1000);
    let account = Uuid::now_v7();
    let mut ticket = engine.pre_authorize(request(account)).await.unwrap();
    let initial = ticket.amount();
    assert_eq!(engine.view(account).await.unwrap().held, initial);
    let resized = ticket
        .resize_to_prompt(&tollgate_actors::Usage {
            input_tokens: 2,
            ..Default::default()
        })
        .await;
    assert_eq!(resized, tollgate_actors::Resize::Covered);
    // haiku-5-5: 2 prompt tokens at 0.10 + 10 output tokens at 0.50, per million.
    assert_eq!(ticket.amount(), dec!(0.0000052));
    assert_eq!(engine.view(account).await.unwrap().held, dec!(0.0000052));
    drop(ticket);
    let view = engine.view(account).await.unwrap();
    assert_eq!((view.held, view.active_requests), (Decimal::ZERO, 0));
    assert_eq!(view.balance, dec!(1));
    // A first actor for an account is not a replacement: nothing is marked orphaned.
    assert_eq!(engine.orphaned_accounts(), 0);
}

#[actix_rt::test]
async fn shutdown_applies_every_queued_settle_before_the_final_flush() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let engine = engine(ledger.clone(), 1000);
    let account = Uuid::now_v7();
    let mut costs = Decimal::ZERO;
    for _ in 0..50 {
        let ticket = engine.pre_authorize(request(account)).await.unwrap();
        costs += ticket.settle(usage(), Outcome::Completed).cost;
    }
    assert!(
        engine
            .shutdown(Duration::from_secs(1), Duration::from_secs(5))
            .await
    );
    assert_eq!(ledger.rows.lock().unwrap().len(), 50);
    assert_eq!(ledger.balance_of(account), dec!(10) - costs);
    assert!(matches!(
        engine.pre_authorize(request(account)).await,
        Err(AdmitError::Engine(EngineError::Stopped))
    ));
}

#[actix_rt::test]
async fn a_request_checked_in_before_shutdown_is_waited_for_and_its_settle_flushed() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let engine = engine(ledger.clone(), 1000);
    let account = Uuid::now_v7();
    // Let in (its body not read yet), but holding nothing.
    let admission = engine.check_in(account).await.unwrap();
    let stopping = engine.clone();
    let shutdown = actix_rt::spawn(async move {
        stopping
            .shutdown(Duration::from_secs(5), Duration::from_secs(5))
            .await
    });
    // Shutdown has begun: a new request is refused, and this one is still waited for.
    while !matches!(
        engine.check_in(account).await,
        Err(AdmitError::Engine(EngineError::Stopped))
    ) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!shutdown.is_finished());
    let ticket = admission.pre_authorize(request(account)).await.unwrap();
    let cost = ticket.settle(usage(), Outcome::Completed).cost;
    assert!(shutdown.await.unwrap(), "drained and flushed");
    assert_eq!(ledger.rows.lock().unwrap().len(), 1);
    assert_eq!(ledger.balance_of(account), dec!(10) - cost);
}

#[actix_rt::test]
async fn actors_start_on_the_threads_that_offered_to_host_them_and_never_on_a_stopped_one() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let (engine, host) = engine_with_a_host(ledger.clone()).await;
    let hosted = Uuid::now_v7();
    let ticket = engine.pre_authorize(request(hosted)).await.unwrap();
    let first = ticket.settle(usage(), Outcome::Completed).cost;
    assert_eq!(engine.view(hosted).await.unwrap().balance, dec!(10) - first);
    // Two requests of that account are still running when the host stops.
    let running = engine.pre_authorize(request(hosted)).await.unwrap();
    let abandoned = engine.pre_authorize(request(hosted)).await.unwrap();
    let held = running.amount() + abandoned.amount();

    // The host stops: its actors go with it, and a new account must not be placed there
    // (its actor would never run, and the request would wait out the mailbox bound).
    stop_host(host).await;
    let account = Uuid::now_v7();
    let ticket = tokio::time::timeout(
        Duration::from_millis(1500),
        engine.pre_authorize(request(account)),
    )
    .await
    .expect("the new account's actor was placed on the stopped thread")
    .unwrap();
    ticket.settle(usage(), Outcome::Completed);
    assert!(engine.view(account).await.unwrap().balance < dec!(10));

    // The account's next actor starts from the flushed balance and carries over the holds of
    // the requests still running, so their money stays reserved.
    let view = engine.view(hosted).await.unwrap();
    assert_eq!(view.balance, dec!(10) - first);
    assert_eq!((view.held, view.active_requests), (held, 2));
    // One of them ends without usage: its release, refused by the old actor's closed
    // mailbox, reaches the new actor.
    drop(abandoned);
    wait_for_view(&engine, hosted, |view| view.active_requests == 1).await;

    // The running request settles after its actor is gone: the debit reaches a new actor for
    // the account, which started from the flushed balance, so nothing is lost or counted
    // twice, in memory or in the ledger.
    let second = running.settle(usage(), Outcome::Completed).cost;
    let view = wait_for_view(&engine, hosted, |view| view.balance < dec!(10) - first).await;
    assert_eq!(view.balance, dec!(10) - first - second);
    assert_eq!((view.held, view.active_requests), (Decimal::ZERO, 0));
    assert!(engine.flusher().flush_now().await);
    let stored: Vec<_> = ledger
        .rows
        .lock()
        .unwrap()
        .iter()
        .filter(|row| row.account_id == hosted)
        .map(|row| row.cost)
        .collect();
    assert_eq!(stored, vec![first, second]);
    assert_eq!(ledger.balance_of(hosted), dec!(10) - first - second);
    assert_eq!(
        engine.orphaned_accounts(),
        0,
        "the replacement took the orphan over"
    );
}

/// Polls the account's live view until `done` holds; panics after 5 s.
async fn wait_for_view(
    engine: &Engine,
    account: AccountId,
    done: impl Fn(&AccountView) -> bool,
) -> AccountView {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let view = engine.view(account).await.unwrap();
            if done(&view) {
                break view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the account's view never reached the expected state")
}

#[actix_rt::test]
async fn a_settle_still_queued_when_its_actors_thread_stops_reaches_the_next_actor() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let (engine, host) = engine_with_a_host(ledger.clone()).await;
    let account = Uuid::now_v7();
    let ticket = engine.pre_authorize(request(account)).await.unwrap();

    // A credit that takes a while to store keeps the actor waiting, so the settle queued
    // behind it is still in the mailbox when the thread stops: actix drops it unhandled.
    // (The credit never finishes: the thread stops under it.)
    ledger.credit_delay_ms.store(60_000, Ordering::SeqCst);
    let crediting = engine.clone();
    let credit = tokio::spawn(async move {
        crediting
            .change_balance(account, CreditKind::Credit, dec!(5), "test".into())
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cost = ticket.settle(usage(), Outcome::Completed).cost;
    stop_host(host).await;
    // The credit's caller learns that it was cut off.
    assert!(credit.await.unwrap().is_err());

    let view = wait_for_view(&engine, account, |view| view.balance < dec!(10)).await;
    assert_eq!(view.balance, dec!(10) - cost);
    assert_eq!((view.held, view.active_requests), (Decimal::ZERO, 0));
    assert!(engine.flusher().flush_now().await);
    assert_eq!(ledger.balance_of(account), dec!(10) - cost);
    assert_eq!(ledger.rows.lock().unwrap().len(), 1);
}

#[actix_rt::test]
async fn flush_now_answers_for_what_was_settled_before_it_while_settles_keep_arriving() {
    let ledger = MemoryLedger::opening_with(dec!(1000));
    ledger.write_delay_ms.store(20, Ordering::SeqCst);
    let engine = engine(ledger.clone(), 1_000_000);
    // Another account settles a request every millisecond, so the buffer is never empty
    // when a flush ends.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let (engine, stop) = (engine.clone(), stop.clone());
        let account = Uuid::now_v7();
        actix_rt::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let ticket = engine.pre_authorize(request(account)).await.unwrap();
                ticket.settle(usage(), Outcome::Completed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        let quiet = Uuid::now_v7();
        let ticket = engine.pre_authorize(request(quiet)).await.unwrap();
        let cost = ticket.settle(usage(), Outcome::Completed).cost;
        // A round trip through the same mailbox: the settle is with the flusher.
        engine.view(quiet).await.unwrap();
        assert!(
            engine.flusher().flush_now().await,
            "flush_now waited for records settled after it was called"
        );
        assert_eq!(ledger.balance_of(quiet), dec!(1000) - cost);
    }
    stop.store(true, Ordering::SeqCst);
    busy.await.unwrap();
}

/// A balance change of `account` sent with the idempotency key `key`.
async fn change_once(
    engine: &Engine,
    account: AccountId,
    kind: CreditKind,
    amount: Decimal,
    key: &str,
) -> Result<BalanceChanged, EngineError> {
    let claim = IdempotencyClaim {
        scope: kind.scope(),
        key: key.into(),
        fingerprint: vec![1],
    };
    engine
        .change_balance_once(account, kind, amount, "test".into(), Some(claim))
        .await
}

#[actix_rt::test]
async fn a_credit_whose_commit_was_not_confirmed_is_applied_once_when_retried_with_its_key() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let engine = engine(ledger.clone(), 1_000_000);
    let account = Uuid::now_v7();
    let credit = || change_once(&engine, account, CreditKind::Credit, dec!(5), "retry-me");
    // The store commits, but the answer is lost: the actor cannot tell, and applies nothing.
    ledger.lose_next_answer.store(true, Ordering::SeqCst);
    assert!(credit().await.is_err());
    assert_eq!(ledger.balance_of(account), dec!(15));
    assert_eq!(engine.view(account).await.unwrap().balance, dec!(10));
    // The retry learns the first write went through: it is applied in memory, not stored
    // again.
    let retried = credit().await.unwrap();
    assert!(matches!(
        retried.applied,
        ChangeApplied::AlreadyApplied { .. }
    ));
    assert_eq!(retried.balance, dec!(15));
    // And a third send changes nothing anywhere.
    assert_eq!(credit().await.unwrap().balance, dec!(15));
    assert_eq!(ledger.balance_of(account), dec!(15));
    assert_eq!(engine.view(account).await.unwrap().balance, dec!(15));
}

#[actix_rt::test]
async fn a_credit_whose_write_failed_before_the_commit_is_applied_by_its_retry() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let engine = engine(ledger.clone(), 1_000_000);
    let account = Uuid::now_v7();
    let adjust = || change_once(&engine, account, CreditKind::Adjustment, dec!(-2), "k");
    ledger.refuse_next_change.store(true, Ordering::SeqCst);
    assert!(adjust().await.is_err());
    let retried = adjust().await.unwrap();
    assert_eq!(retried.applied, ChangeApplied::Applied);
    assert_eq!(retried.balance, dec!(8));
    assert_eq!(ledger.balance_of(account), dec!(8));
}

#[actix_rt::test]
async fn a_lost_commit_is_applied_by_a_later_retry_after_a_second_failure() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    let engine = engine(ledger.clone(), 1_000_000);
    let account = Uuid::now_v7();
    let credit = || change_once(&engine, account, CreditKind::Credit, dec!(5), "twice");
    // The first write commits but its answer is lost; the second fails outright.
    ledger.lose_next_answer.store(true, Ordering::SeqCst);
    assert!(credit().await.is_err());
    ledger.refuse_next_change.store(true, Ordering::SeqCst);
    assert!(credit().await.is_err());
    // The third learns that the first went through, and the live balance follows.
    let retried = credit().await.unwrap();
    assert!(matches!(
        retried.applied,
        ChangeApplied::AlreadyApplied { .. }
    ));
    assert_eq!(ledger.balance_of(account), dec!(15));
    assert_eq!(engine.view(account).await.unwrap().balance, dec!(15));
}

#[actix_rt::test]
async fn a_hold_that_grows_past_the_balance_is_recorded_and_reported_uncovered() {
    let ledger = MemoryLedger::opening_with(dec!(1));
    let engine = engine(ledger, 1000);
    let account = Uuid::now_v7();
    let mut ticket = engine.pre_authorize(request(account)).await.unwrap();
    // haiku-5-5 long tier: 2,000,000 input tokens at 0.50 is 1 USD, plus 10 output at 2.50.
    let resized = ticket
        .resize_to_prompt(&tollgate_actors::Usage {
            input_tokens: 2_000_000,
            ..Default::default()
        })
        .await;
    assert_eq!(resized, tollgate_actors::Resize::Uncovered);
    assert_eq!(ticket.amount(), dec!(1.000025));
    // Recorded all the same: nothing else is admitted against it.
    assert_eq!(engine.view(account).await.unwrap().held, dec!(1.000025));
    assert!(engine.pre_authorize(request(account)).await.is_err());
    // A grown hold the balance covers is covered.
    let ledger = MemoryLedger::opening_with(dec!(2));
    let engine2 = self::engine(ledger, 1000);
    let mut ticket2 = engine2.pre_authorize(request(account)).await.unwrap();
    let resized = ticket2
        .resize_to_prompt(&tollgate_actors::Usage {
            input_tokens: 2_000_000,
            ..Default::default()
        })
        .await;
    assert_eq!(resized, tollgate_actors::Resize::Covered);
    drop(ticket);
}

/// An upstream that sends a message_start and `deltas` content deltas, then stays open.
fn endless_upstream(
    deltas: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Unpin {
    use futures_util::StreamExt;
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n";
    let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word\"}}\n\n";
    let chunks = std::iter::once(start)
        .chain(std::iter::repeat_n(delta, deltas))
        .map(|chunk| Ok(bytes::Bytes::from_static(chunk.as_bytes())));
    futures_util::stream::iter(chunks)
        .chain(futures_util::stream::pending())
        .boxed()
}

#[actix_rt::test]
async fn a_client_that_stops_reading_does_not_hold_the_relay_past_the_interrupt() {
    let ledger = MemoryLedger::opening_with(dec!(1));
    let engine = engine(ledger, 1000);
    let ticket = engine.pre_authorize(request(Uuid::now_v7())).await.unwrap();
    let interrupt = tokio_util::sync::CancellationToken::new();
    let drain = tollgate_actors::relay::Drain {
        max_stream: Duration::from_secs(600),
        at_least: Duration::from_secs(30),
    };
    // More deltas than the client's buffer holds, and a client that never reads one.
    let deltas = tollgate_actors::relay::CLIENT_BUFFER_CHUNKS * 2;
    let (relay, _unread) = tollgate_actors::relay::RelayTask::new(
        endless_upstream(deltas),
        ticket,
        drain,
        interrupt.clone(),
        std::sync::Arc::new(|_: &[u8], _| bytes::Bytes::new()),
    );
    let relay = tokio::spawn(relay.run());
    tokio::time::sleep(Duration::from_millis(200)).await;
    interrupt.cancel();
    let settled = tokio::time::timeout(Duration::from_secs(2), relay)
        .await
        .expect("the interrupt ends a relay stuck on a stalled client")
        .unwrap()
        .expect("the relayed output is billed");
    assert_eq!(settled.outcome, Outcome::Interrupted);
    assert!(settled.estimated);
    assert!(settled.usage.output_tokens > 1, "{settled:?}");
}

#[actix_rt::test]
async fn a_backlog_past_the_bound_is_refused_even_while_every_flush_succeeds() {
    let ledger = MemoryLedger::opening_with(dec!(10));
    // The ledger is up but slower than usage settles.
    ledger.write_delay_ms.store(2_000, Ordering::SeqCst);
    let engine = engine(ledger.clone(), 3);
    let account = Uuid::now_v7();
    for _ in 0..3 {
        let ticket = engine.pre_authorize(request(account)).await.unwrap();
        ticket.settle(usage(), Outcome::Completed);
    }
    engine.view(account).await.unwrap();
    let stats = engine.flusher_stats();
    assert!(!stats.failing && stats.backlog == 3, "{stats:?}");
    let refused = engine.pre_authorize(request(account)).await;
    assert!(
        matches!(
            refused,
            Err(AdmitError::Engine(EngineError::LedgerUnavailable))
        ),
        "admitted with {} debits waiting for a slow ledger",
        engine.flusher_stats().backlog
    );
    ledger.write_delay_ms.store(0, Ordering::SeqCst);
    assert!(engine.flusher().flush_now().await);
    assert!(engine.pre_authorize(request(account)).await.is_ok());
}

#[actix_rt::test]
async fn a_backlog_drains_in_batches_written_at_once_and_only_the_last_is_paced() {
    let ledger = MemoryLedger::opening_with(dec!(1000));
    let engine = engine(ledger.clone(), 1_000_000);
    let account = Uuid::now_v7();
    backlog(&engine, &ledger, account, 11_000).await;
    ledger.down.store(false, Ordering::SeqCst);
    assert!(engine.flusher().flush_now().await);
    assert_eq!(
        *ledger.writes.lock().unwrap(),
        [(5_000, true), (5_000, true), (1_000, false)]
    );
}

#[actix_rt::test]
async fn a_backlog_drains_oldest_first_through_a_failed_batch_and_flush_now_waits_for_it() {
    let ledger = MemoryLedger::opening_with(dec!(1000));
    let engine = engine(ledger.clone(), 1_000_000);
    let account = Uuid::now_v7();
    let ids = backlog(&engine, &ledger, account, 12_000).await;
    // The database comes back; its first batch is stored, the second fails.
    ledger.fail_write.store(2, Ordering::SeqCst);
    ledger.write_delay_ms.store(30, Ordering::SeqCst);
    ledger.down.store(false, Ordering::SeqCst);
    assert!(
        !engine.flusher().flush_now().await,
        "flush_now reported a backlog stored while one of its batches failed"
    );
    let stored = ledger.stored_ids();
    assert!(
        stored.len() >= 5_000 && ids.starts_with(&stored),
        "{} stored, not the oldest first",
        stored.len()
    );
    // The failed batch is retried, then the rest; flush_now answers once all is stored.
    assert!(engine.flusher().flush_now().await);
    assert!(
        ledger.stored_ids() == ids,
        "every record once, in the order settled"
    );
    let sizes: Vec<usize> = ledger.writes.lock().unwrap().iter().map(|w| w.0).collect();
    assert_eq!(sizes, [5_000, 5_000, 5_000, 2_000]);
    let view = engine.view(account).await.unwrap();
    assert_eq!(ledger.balance_of(account), view.balance);
    assert_eq!(engine.flusher_stats().backlog, 0);
}

#[actix_rt::test]
async fn requests_running_at_once_cannot_together_pass_the_token_limit() {
    let ledger = MemoryLedger::opening_with(dec!(1000));
    let engine = engine(ledger, 1000);
    let account = Uuid::now_v7();
    engine.view(account).await.unwrap();
    engine
        .set_limits(
            account,
            AccountLimits {
                requests_per_minute: 0,
                tokens_per_minute: 100_000,
                max_concurrent: 0,
            },
        )
        .await
        .unwrap();
    let large = |account| HoldRequest {
        shape: HoldPolicy::default().shape(28, 20_000, MediaCount::default(), &[]),
        ..request(account)
    };
    // 32 requests of 20,000 tokens each at once, against a full bucket of 100,000: only as
    // many as fit beside each other are admitted.
    let mut running = Vec::new();
    let mut refused = 0;
    for _ in 0..32 {
        match engine.pre_authorize(large(account)).await {
            Ok(ticket) => running.push(ticket),
            Err(AdmitError::Refused(_)) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(
        running.len(),
        4,
        "admitted {} x 20,000+ tokens against 100,000 a minute",
        running.len()
    );
    assert_eq!(refused, 28);
    // A released request gives its estimate back: one more fits.
    running.pop().unwrap().release();
    let again = engine.pre_authorize(large(account)).await;
    assert!(again.is_ok(), "{:?}", again.err());
}
