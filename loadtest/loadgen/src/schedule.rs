//! Open-loop arrival schedules, computed up front so that a slow answer cannot delay the
//! requests after it (no coordinated omission): every request has an intended send time, and
//! its latency is measured from that time, not from when it actually left.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::scenario::Distribution;

/// Who sends a scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A well-behaved request; the key is picked round robin by the sequence number.
    WellBehaved,
    /// An abusive request from abusive key number `.0`.
    Abuser(usize),
}

/// One request of the schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// Intended send time, from the start of the run.
    pub at: Duration,
    pub source: Source,
}

/// Intended send times in `[0, span)` of a stream of `rate` requests per second.
///
/// Constant arrivals are exactly `1/rate` apart, starting at 0. Poisson arrivals have
/// exponential gaps of mean `1/rate`, drawn from `seed`: the same seed gives the same times.
pub fn arrivals(rate: f64, distribution: Distribution, span: Duration, seed: u64) -> Vec<Duration> {
    if !(rate.is_finite() && rate > 0.0) {
        return Vec::new();
    }
    let span = span.as_secs_f64();
    let mut times = Vec::with_capacity((rate * span * 1.1) as usize + 1);
    match distribution {
        Distribution::Constant => {
            let gap = 1.0 / rate;
            let mut i = 0u64;
            loop {
                let t = i as f64 * gap;
                if t >= span {
                    break;
                }
                times.push(Duration::from_secs_f64(t));
                i += 1;
            }
        }
        Distribution::Poisson => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = 0.0f64;
            loop {
                // 1 - u is in (0, 1], so its logarithm is finite.
                let u: f64 = rng.gen();
                t += -(1.0 - u).ln() / rate;
                if t >= span {
                    break;
                }
                times.push(Duration::from_secs_f64(t));
            }
        }
    }
    times
}

/// Warps arrival times so that the rate climbs linearly from zero to its full value over the
/// first `ramp` of the run, then stays there.
///
/// The times come from a steady process at the full rate `r`. A linear climb over `ramp`
/// delivers as many requests as `ramp / 2` at the full rate, so a time `t < ramp / 2` moves to
/// `s` with `r·s² / (2·ramp) = r·t`, that is `s = sqrt(2·ramp·t)`, and later times move by
/// `ramp / 2`. Generate the times over `span - ramp / 2` to fill `span`.
pub fn ramped(times: &mut [Duration], ramp: Duration) {
    let ramp = ramp.as_secs_f64();
    if ramp <= 0.0 {
        return;
    }
    for at in times.iter_mut() {
        let t = at.as_secs_f64();
        let s = if t < ramp / 2.0 {
            (2.0 * ramp * t).sqrt()
        } else {
            t + ramp / 2.0
        };
        *at = Duration::from_secs_f64(s);
    }
}

/// Mixes a seed with a stream number, so that each stream of a run gets its own sequence.
pub fn sub_seed(seed: u64, stream: u64) -> u64 {
    // splitmix64's finalizer: distinct streams give unrelated seeds.
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The whole open-loop schedule: well-behaved arrivals at `rate` (if any) and each abusive
/// key's arrivals at `abuser_rate`, merged in time order. With a `ramp`, every stream climbs
/// linearly to its rate over that first part of `span` ([`ramped`]).
pub fn schedule(
    rate: f64,
    abusive_keys: usize,
    abuser_rate: f64,
    distribution: Distribution,
    span: Duration,
    ramp: Duration,
    seed: u64,
) -> Vec<Slot> {
    let ramp = ramp.min(span);
    let steady_span = span.saturating_sub(ramp / 2);
    let stream = |rate: f64, stream: u64| {
        let mut times = arrivals(rate, distribution, steady_span, sub_seed(seed, stream));
        ramped(&mut times, ramp);
        times
    };
    let mut slots: Vec<Slot> = stream(rate, 0)
        .into_iter()
        .map(|at| Slot {
            at,
            source: Source::WellBehaved,
        })
        .collect();
    for key in 0..abusive_keys {
        let times = stream(abuser_rate, 1 + key as u64);
        slots.extend(times.into_iter().map(|at| Slot {
            at,
            source: Source::Abuser(key),
        }));
    }
    // Stable: equal times keep well-behaved first, then abusers by key.
    slots.sort_by(|a, b| a.at.cmp(&b.at).then(a.source.cmp(&b.source)));
    slots
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let times = arrivals(4.0, Distribution::Constant, Duration::from_secs(2), 0);
        assert_eq!(times.len(), 8);
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(250 * i as u64));
        }
        assert!(arrivals(0.0, Distribution::Constant, Duration::from_secs(1), 0).is_empty());
    }

    #[test]
    fn poisson_arrivals_have_the_right_mean_and_are_seeded() {
        let span = Duration::from_secs(200);
        let a = arrivals(50.0, Distribution::Poisson, span, 11);
        let b = arrivals(50.0, Distribution::Poisson, span, 11);
        let c = arrivals(50.0, Distribution::Poisson, span, 12);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // 10,000 expected; the standard deviation of the count is 100.
        assert!((a.len() as f64 - 10_000.0).abs() < 500.0, "{}", a.len());
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!((mean - 0.02).abs() < 0.001, "mean gap {mean}");
        // Exponential gaps: the standard deviation equals the mean.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 0.002, "sd {}", var.sqrt());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert!(a.iter().all(|t| *t < span));
    }

    #[test]
    fn schedule_merges_sources_in_time_order() {
        let slots = schedule(
            10.0,
            2,
            5.0,
            Distribution::Constant,
            Duration::from_secs(2),
            Duration::ZERO,
            1,
        );
        assert_eq!(slots.len(), 20 + 2 * 10);
        assert!(slots.windows(2).all(|w| w[0].at <= w[1].at));
        let abusive = |k| {
            slots
                .iter()
                .filter(|s| s.source == Source::Abuser(k))
                .count()
        };
        assert_eq!(abusive(0), 10);
        assert_eq!(abusive(1), 10);
        let again = schedule(
            10.0,
            2,
            5.0,
            Distribution::Poisson,
            Duration::from_secs(2),
            Duration::ZERO,
            1,
        );
        let twice = schedule(
            10.0,
            2,
            5.0,
            Distribution::Poisson,
            Duration::from_secs(2),
            Duration::ZERO,
            1,
        );
        assert_eq!(again, twice);
        // Each abusive key has its own sequence.
        let key0: Vec<_> = again
            .iter()
            .filter(|s| s.source == Source::Abuser(0))
            .map(|s| s.at)
            .collect();
        let key1: Vec<_> = again
            .iter()
            .filter(|s| s.source == Source::Abuser(1))
            .map(|s| s.at)
            .collect();
        assert_ne!(key0, key1);
    }

    #[test]
    fn a_ramp_climbs_linearly_and_then_holds_the_full_rate() {
        let span = Duration::from_secs(40);
        let ramp = Duration::from_secs(20);
        let slots = schedule(100.0, 0, 0.0, Distribution::Constant, span, ramp, 3);
        let in_window = |from: u64, to: u64| {
            slots
                .iter()
                .filter(|s| s.at >= Duration::from_secs(from) && s.at < Duration::from_secs(to))
                .count()
        };
        // The climb delivers half of what the full rate would: 1,000 in 20 s, a quarter of
        // them in the first half of the climb; then 100 a second.
        assert!(in_window(0, 20).abs_diff(1000) <= 1, "{}", in_window(0, 20));
        assert!(in_window(0, 10).abs_diff(250) <= 1, "{}", in_window(0, 10));
        assert!(
            in_window(20, 40).abs_diff(2000) <= 1,
            "{}",
            in_window(20, 40)
        );
        assert!(
            in_window(30, 40).abs_diff(1000) <= 1,
            "{}",
            in_window(30, 40)
        );
        assert!(slots.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(slots.iter().all(|s| s.at < span));
        // No ramp: the steady process as it is.
        let flat = schedule(
            100.0,
            0,
            0.0,
            Distribution::Constant,
            span,
            Duration::ZERO,
            3,
        );
        assert_eq!(flat.len(), 4000);
    }
}
