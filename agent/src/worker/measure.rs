//! The measured phase of a benchmark: issue queries by the scenario's rule (closed loop, or
//! Poisson arrivals for the server scenario), time each one, and stop by the run-length rules.
//! A query is whatever `query(i)` runs, so every scenario works with every kind of input.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

/// Runs query number `i` of a phase (0, 1, 2, …); its error ends the phase.
pub type Query<'a, E> = dyn FnMut(usize) -> Result<(), E> + 'a;

/// When a repetition's measured phase stops: after both minimums are met, or at the maximum.
#[derive(Debug, Clone, Copy)]
pub struct RunLength {
    pub min_duration: Duration,
    pub max_duration: Duration,
    pub min_queries: usize,
}

impl RunLength {
    pub fn met(&self, queries: usize, elapsed: Duration) -> bool {
        queries >= self.min_queries && elapsed >= self.min_duration
    }

    pub fn done(&self, queries: usize, elapsed: Duration) -> bool {
        elapsed >= self.max_duration || self.met(queries, elapsed)
    }
}

/// How queries are issued.
#[derive(Debug, Clone, Copy)]
pub enum Arrivals {
    /// The next query starts when the last one ends.
    Closed,
    /// Exponential gaps at `qps` from a generator seeded with `seed`.
    Poisson { qps: f64, seed: u64 },
}

/// What one measured phase saw.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Per query, in ms: from its start (closed) or its scheduled time (Poisson).
    pub latencies_ms: Vec<f64>,
    pub wall: Duration,
}

/// Runs queries 0, 1, 2, … until `rules` say stop.
pub fn run_phase<E>(
    query: &mut Query<'_, E>,
    rules: RunLength,
    arrivals: Arrivals,
) -> Result<Phase, E> {
    let mut latencies = Vec::with_capacity(rules.min_queries.max(1024));
    let start = Instant::now();
    let mut schedule = match arrivals {
        Arrivals::Closed => None,
        Arrivals::Poisson { qps, seed } => {
            Some((rand::rngs::StdRng::seed_from_u64(seed), qps, start))
        }
    };
    loop {
        let origin = match &mut schedule {
            None => Instant::now(),
            Some((rng, qps, next)) => {
                // Inverse-CDF sample of an exponential gap; 1 - u is in (0, 1].
                let gap = -(1.0 - rng.random::<f64>()).ln() / *qps;
                *next += Duration::from_secs_f64(gap);
                wait_until(*next);
                *next
            }
        };
        query(latencies.len())?;
        latencies.push(origin.elapsed().as_secs_f64() * 1000.0);
        if rules.done(latencies.len(), start.elapsed()) {
            break;
        }
    }
    Ok(Phase {
        latencies_ms: latencies,
        wall: start.elapsed(),
    })
}

/// Sleeps until shortly before `t`, then spins, so a scheduled query starts on time.
fn wait_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep(left - Duration::from_micros(200));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The p99 of a phase, nearest rank.
pub fn p99(latencies_ms: &[f64]) -> f64 {
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    crate::stats::nearest_rank(&sorted, 99.0)
}

/// Binary search for the highest Poisson rate whose p99 stays within `bound_ms`, between 0 and
/// a little above what one query at a time can sustain (`1 / service_ms`). Six trials, each run
/// by `rules`; returns 0 when even the lowest trial fails.
pub fn peak_search<E>(
    query: &mut Query<'_, E>,
    rules: RunLength,
    service_ms: f64,
    bound_ms: f64,
    seed: u64,
) -> Result<f64, E> {
    let (mut passing, mut failing) = (0.0, 1.2 * 1000.0 / service_ms.max(1e-6));
    for trial in 0..6 {
        let qps = (passing + failing) / 2.0;
        let phase = run_phase(
            query,
            rules,
            Arrivals::Poisson {
                qps,
                seed: seed.wrapping_add(1000 + trial),
            },
        )?;
        if p99(&phase.latencies_ms) <= bound_ms {
            passing = qps;
        } else {
            failing = qps;
        }
    }
    Ok(passing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_length_rules() {
        let rules = RunLength {
            min_duration: Duration::from_secs(1),
            max_duration: Duration::from_secs(5),
            min_queries: 100,
        };
        assert!(!rules.done(99, Duration::from_secs(2)), "too few queries");
        assert!(!rules.done(500, Duration::from_millis(500)), "too short");
        assert!(rules.done(100, Duration::from_secs(1)));
        assert!(
            rules.done(3, Duration::from_secs(5)),
            "the maximum cuts it off"
        );
        assert!(
            !rules.met(3, Duration::from_secs(5)),
            "and then it is not valid"
        );
    }

    #[test]
    fn scheduled_waits_end_on_time() {
        // Never early; and on time at least once in ten (a busy machine may preempt any one).
        let mut best = Duration::MAX;
        for _ in 0..10 {
            let t = Instant::now() + Duration::from_millis(3);
            wait_until(t);
            let now = Instant::now();
            assert!(now >= t, "woke early");
            best = best.min(now - t);
        }
        assert!(best < Duration::from_millis(2), "{best:?} late at best");
    }
}
