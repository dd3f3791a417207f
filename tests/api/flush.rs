//! The flush under a long backlog: while Postgres refuses usage writes, settled requests pile
//! up in the flusher; once it takes them again, they drain in bounded batches, each written
//! exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use rust_decimal::Decimal;
use tollgate_actors::flusher::MAX_FLUSH_BATCH;
use tollgate_actors::hold::RequestShape;
use tollgate_actors::pricing::RateCard;
use tollgate_actors::{HoldRequest, Outcome, Usage};
use uuid::Uuid;

use crate::helpers::*;

/// Makes every insert into `usage` fail with a real Postgres error, as a database that
/// refuses writes does, until [`ACCEPT_USAGE_WRITES`].
const REFUSE_USAGE_WRITES: &str = "
    CREATE FUNCTION refuse_usage_writes() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'usage writes refused by the test'; END $$;
    CREATE TRIGGER refuse_usage_writes BEFORE INSERT ON usage
        FOR EACH STATEMENT EXECUTE FUNCTION refuse_usage_writes();";
const ACCEPT_USAGE_WRITES: &str = "DROP TRIGGER refuse_usage_writes ON usage";

/// Rows of the largest flush transaction: the rows one transaction inserted share its id.
const LARGEST_TRANSACTION: &str = "
    SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM usage GROUP BY xmin::text) t";

#[actix_web::test]
async fn a_million_row_backlog_drains_in_bounded_batches_each_row_billed_once() {
    // `TOLLGATE_TEST_BACKLOG` makes it smaller while working on the flusher.
    let records: usize = std::env::var("TOLLGATE_TEST_BACKLOG")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let app = spawn_app_with(Default::default(), |s| {
        // Admission would refuse new requests past this backlog while the ledger fails.
        s.metering.max_unflushed = 2 * records as u64;
    })
    .await;
    let mut customers = Vec::new();
    for _ in 0..40 {
        customers.push(app.customer("1000000").await);
    }
    let db = app.db().await;
    db.batch_execute(REFUSE_USAGE_WRITES).await.unwrap();

    // Settle the requests through the engine, as the relay does after each answer.
    let started = Instant::now();
    let version = RateCard::builtin()
        .unwrap()
        .price_at("claude-haiku-5-5", Utc::now())
        .unwrap()
        .clone();
    let settled: Vec<(Uuid, usize, Decimal)> = stream::iter(0..records)
        .map(|i| {
            let engine = app.engine.clone();
            let customer = &customers[i % customers.len()];
            let request = HoldRequest {
                request_id: Uuid::now_v7(),
                account_id: customer.id.parse().unwrap(),
                key_id: customer.key_id.parse().unwrap(),
                model: "claude-haiku-5-5".into(),
                version: version.clone(),
                shape: RequestShape {
                    body_bytes: 28,
                    max_tokens: 20,
                    ..RequestShape::default()
                },
                started_at: Utc::now(),
                spend_caps: None,
                key_limits: None,
            };
            async move {
                let id = request.request_id;
                let ticket = engine.pre_authorize(request).await.unwrap();
                let usage = Usage {
                    input_tokens: 100 + (i % 7) as u64,
                    output_tokens: (i % 13) as u64,
                    ..Usage::default()
                };
                (id, i % 40, ticket.settle(usage, Outcome::Completed).cost)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    // A round trip through each account's mailbox: every settle is with the flusher.
    for customer in &customers {
        app.view(&customer.id).await;
    }
    let generated = started.elapsed();
    let stats = app.engine.flusher_stats();
    assert!(stats.failing, "the ledger refuses writes: {stats:?}");
    assert!(stats.failed_flushes > 0, "{stats:?}");
    assert!(app.metric("tollgate_failed_flushes_total").await > 0.0);
    assert_eq!(stats.backlog, records as u64, "{stats:?}");
    let stored: i64 = db
        .query_one("SELECT count(*) FROM usage", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);

    // The database takes writes again: the backlog drains, batch after batch.
    db.batch_execute(ACCEPT_USAGE_WRITES).await.unwrap();
    let draining = Instant::now();
    loop {
        let written = app.engine.flusher().flush_now().await;
        if written && app.engine.flusher_stats().backlog == 0 {
            break;
        }
        assert!(
            draining.elapsed() < Duration::from_secs(240),
            "the backlog is not draining: {:?}",
            app.engine.flusher_stats()
        );
    }
    let drained = draining.elapsed();
    let stats = app.engine.flusher_stats();
    assert!(!stats.failing, "{stats:?}");

    // Every settled request is in `usage`, once.
    let ids: Vec<Uuid> = settled.iter().map(|(id, _, _)| *id).collect();
    let found: i64 = db
        .query_one(
            "SELECT count(*) FROM usage WHERE request_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    let stored: i64 = db
        .query_one("SELECT count(*) FROM usage", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((found, stored), (records as i64, records as i64));
    // No flush wrote more than one bounded batch...
    let largest: i64 = db.query_one(LARGEST_TRANSACTION, &[]).await.unwrap().get(0);
    assert!(
        largest as usize <= MAX_FLUSH_BATCH,
        "a flush transaction wrote {largest} rows"
    );
    // ...and every balance is its credits less its usage rows, to the last digit: stored,
    // live, and as the requests were settled.
    let mut settled_cost: HashMap<usize, Decimal> = HashMap::new();
    for (_, customer, cost) in &settled {
        *settled_cost.entry(*customer).or_default() += *cost;
    }
    for (i, customer) in customers.iter().enumerate() {
        let books = app.books(&customer.id).await;
        books.assert_reconciled();
        assert_eq!(books.usage_cost, settled_cost[&i]);
        assert_eq!(books.stored_balance, dec("1000000") - settled_cost[&i]);
        assert_eq!(app.balance(&customer.id).await, books.stored_balance);
    }
    eprintln!(
        "{records} settled while the ledger refused writes in {generated:?} \
         ({} failed flushes), drained in {drained:?}; largest flush {largest} rows",
        stats.failed_flushes
    );
}

#[actix_web::test]
async fn failed_flushes_are_exported_as_a_counter() {
    let app = spawn_app().await;
    let text = app.metrics_text().await;
    assert!(
        text.contains("# TYPE tollgate_failed_flushes_total counter"),
        "{text}"
    );
    assert_eq!(app.metric("tollgate_failed_flushes_total").await, 0.0);
}
