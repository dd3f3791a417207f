//! Sending a workload: an open loop's schedule at its intended times, at most so many in
//! flight, and a closed loop's clients, each sending its next request when one ends.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::request::{execute, note, Ctx};
use super::{KeySlot, RunTarget};
use crate::mix::{Mix, RequestSpec};
use crate::record::{Group, Outcome};
use crate::schedule::{self, Source};

/// A send that leaves later than this after its intended time counts as late.
pub const LATE_AFTER: Duration = Duration::from_millis(10);

/// Open-loop statistics of the dispatcher.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SendStats {
    /// Requests sent from a schedule.
    pub scheduled: u64,
    /// Of those, sent more than [`LATE_AFTER`] after their intended time.
    pub late: u64,
    pub max_lag_ms: f64,
}

/// The request specs and sequence numbers of a schedule, drawn per source: each source
/// (well-behaved traffic, each abusive key) has its own seeded generator and its own counter,
/// so the well-behaved requests are the same whether abusers run beside them or not.
pub(super) struct Draws {
    seed: u64,
    well_behaved: (StdRng, u64),
    /// Per abusive key, created when the key sends its first request.
    abusers: HashMap<usize, (StdRng, u64)>,
}

impl Draws {
    pub(super) fn new(seed: u64) -> Draws {
        Draws {
            seed,
            well_behaved: (
                StdRng::seed_from_u64(schedule::sub_seed(seed, 0xD15_7A7C)),
                0,
            ),
            abusers: HashMap::new(),
        }
    }

    /// The next spec of `source` and its sequence number. Well-behaved requests are numbered
    /// from 0; abusive key `k`'s from `2^62 + (k + 1) × 2^40`, apart from every other range
    /// (closed-loop clients use `client × 2^40`, client ≥ 1, well below 2^62).
    pub(super) fn next(&mut self, mix: &Mix, source: Source) -> (RequestSpec, u64) {
        let (rng, n, base) = match source {
            Source::WellBehaved => {
                let (rng, n) = &mut self.well_behaved;
                (rng, n, 0)
            }
            Source::Abuser(k) => {
                let seed = self.seed;
                let (rng, n) = self.abusers.entry(k).or_insert_with(|| {
                    let stream = 0xAB05_0000_0000 + k as u64;
                    (StdRng::seed_from_u64(schedule::sub_seed(seed, stream)), 0)
                });
                let base = (1u64 << 62) + ((k as u64 + 1) << 40);
                (rng, n, base)
            }
        };
        let spec = mix.draw(rng);
        let seq = base.wrapping_add(*n);
        *n += 1;
        (spec, seq)
    }
}

/// Sends `slots` at their intended times, at most `max_in_flight` at once.
pub(super) async fn dispatch(
    ctx: Arc<Ctx>,
    target: Arc<RunTarget>,
    slots: Vec<schedule::Slot>,
    max_in_flight: usize,
    seed: u64,
) -> SendStats {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut draws = Draws::new(seed);
    let mut stats = SendStats::default();
    let mut well_behaved_seq = 0usize;
    for slot in &slots {
        let (spec, seq) = draws.next(&ctx.mix, slot.source);
        let intended = ctx.start + slot.at;
        tokio::time::sleep_until(intended).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let lag = Instant::now().saturating_duration_since(intended);
        stats.scheduled += 1;
        stats.max_lag_ms = stats.max_lag_ms.max(lag.as_secs_f64() * 1000.0);
        if lag > LATE_AFTER {
            stats.late += 1;
            ctx.progress.late.fetch_add(1, Ordering::Relaxed);
        }
        let (group, key) = match slot.source {
            Source::WellBehaved => {
                let n = target.well_behaved.len().max(1);
                let key = well_behaved_seq % n;
                well_behaved_seq += 1;
                (Group::WellBehaved, target.well_behaved.get(key))
            }
            Source::Abuser(k) => (Group::Abuser, target.abusers.get(k)),
        };
        let Some(key) = key.cloned() else { continue };
        ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
        let ctx = Arc::clone(&ctx);
        let at = slot.at;
        tokio::spawn(async move {
            let done = execute(&ctx, group, &key, spec, seq, at).await;
            drop(permit);
            note(&ctx, done);
        });
    }
    // Every request has returned its permit once all of them can be taken back.
    let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    stats
}

/// One closed-loop client: sends back to back until `end`; latency counts from the send.
pub(super) async fn client_loop(ctx: Arc<Ctx>, key: KeySlot, end: Instant, seed: u64, client: u64) {
    let mut rng = StdRng::seed_from_u64(schedule::sub_seed(seed, 0xC11E_0000 + client));
    let mut n = 0u64;
    while Instant::now() < end {
        let spec = ctx.mix.draw(&mut rng);
        let intended = ctx.start.elapsed();
        ctx.progress.sent.fetch_add(1, Ordering::Relaxed);
        // Sequence numbers of clients never meet: each has its own range.
        let seq = (client << 40) + n;
        n += 1;
        let done = execute(&ctx, Group::WellBehaved, &key, spec, seq, intended).await;
        let failed = matches!(done.sample.outcome, Outcome::Network);
        note(&ctx, done);
        if failed {
            // A refused connection fails at once; do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
