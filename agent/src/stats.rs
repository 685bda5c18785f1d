//! Latency statistics over warm queries: nearest-rank percentiles, mean and standard deviation,
//! bootstrap confidence intervals for percentiles, and the spread of repetitions.
//!
//! Written here rather than taken from a statistics crate on purpose: the crates at hand
//! interpolate percentiles (a p99 that no query took) or estimate them from buckets, and
//! bootstrap by Monte Carlo (an interval that changes from run to run). Results must hold a
//! latency that was measured and the same interval for the same samples; both functions are a
//! few lines and tested against hand-worked tables below.

use serde::{Deserialize, Serialize};

/// Summary of a set of latencies, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
    /// Percentiles 0, 1, …, 100.
    pub percentiles: Vec<f64>,
    /// Exact bootstrap 95% intervals of p50 and p90.
    pub p50_ci95: (f64, f64),
    pub p90_ci95: (f64, f64),
}

/// The nearest-rank percentile `p` (0–100) of sorted values: the smallest value such that at
/// least p% of the values are at or below it. `p = 0` gives the minimum.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "percentile of no values");
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Summarises latencies (any order); `None` when there are none.
pub fn summarize(latencies_ms: &[f64]) -> Option<LatencySummary> {
    if latencies_ms.is_empty() {
        return None;
    }
    let mut sorted = latencies_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let variance = if sorted.len() > 1 {
        sorted.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some(LatencySummary {
        min: sorted[0],
        p50: nearest_rank(&sorted, 50.0),
        p90: nearest_rank(&sorted, 90.0),
        p95: nearest_rank(&sorted, 95.0),
        p99: nearest_rank(&sorted, 99.0),
        p999: nearest_rank(&sorted, 99.9),
        max: sorted[sorted.len() - 1],
        mean,
        stddev: variance.sqrt(),
        percentiles: (0..=100).map(|p| nearest_rank(&sorted, p as f64)).collect(),
        p50_ci95: bootstrap_ci95(&sorted, 50.0),
        p90_ci95: bootstrap_ci95(&sorted, 90.0),
    })
}

/// The 95% bootstrap percentile interval of the nearest-rank `p` percentile of sorted values.
///
/// Exact rather than Monte Carlo: a resample's k-th smallest value is at most `sorted[j-1]`
/// exactly when at least k of its n draws land among the j smallest values, which happens with
/// probability P(Binomial(n, j/n) ≥ k). The interval's ends are the values where that
/// distribution crosses 2.5% and 97.5%. Same answer as infinitely many resamples, and
/// reproducible.
pub fn bootstrap_ci95(sorted: &[f64], p: f64) -> (f64, f64) {
    assert!(!sorted.is_empty(), "interval of no values");
    let n = sorted.len();
    let k = (((p / 100.0) * n as f64).ceil() as usize).clamp(1, n);
    let ln_fact = ln_factorials(n);
    let cdf = |j: usize| binomial_at_least(n, k, j as f64 / n as f64, &ln_fact);
    let first_index_reaching = |level: f64| {
        // cdf is non-decreasing in j and cdf(n) = 1: binary search for the first j ≥ level.
        let (mut lo, mut hi) = (1usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if cdf(mid) >= level {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    };
    (
        sorted[first_index_reaching(0.025) - 1],
        sorted[first_index_reaching(0.975) - 1],
    )
}

/// LoadGen-style early-stopping estimate: the smallest latency that, with 99% confidence, is at
/// least the true `p` percentile, given these samples. It is the sample percentile pushed up by
/// how few samples there are; `None` when there are too few to say anything at that confidence
/// (fewer than 44 for p90, 459 for p99).
///
/// With n samples, the j-th smallest is at least the true p-quantile unless j or more samples
/// fell below it, which happens with probability P(Binomial(n, p) ≥ j).
pub fn early_stopping_estimate(sorted: &[f64], p: f64) -> Option<f64> {
    const CONFIDENCE: f64 = 0.99;
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let ln_fact = ln_factorials(n);
    let q = p / 100.0;
    let risk = |j: usize| binomial_at_least(n, j, q, &ln_fact);
    if risk(n) > 1.0 - CONFIDENCE {
        return None;
    }
    // risk(j) falls as j grows: binary search for the first j with risk ≤ 1%.
    let (mut lo, mut hi) = (1usize, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if risk(mid) <= 1.0 - CONFIDENCE {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(sorted[lo - 1])
}

/// ln(i!) for i in 0..=n.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    let mut acc = 0.0;
    out.push(0.0);
    for i in 1..=n {
        acc += (i as f64).ln();
        out.push(acc);
    }
    out
}

/// P(Binomial(n, q) ≥ k), summed exactly in log space.
fn binomial_at_least(n: usize, k: usize, q: f64, ln_fact: &[f64]) -> f64 {
    if q >= 1.0 {
        return 1.0;
    }
    let (ln_q, ln_1q) = (q.ln(), (1.0 - q).ln());
    // Terms further than 40 standard deviations from the mean are below 1e-300: skip them, so a
    // run of millions of queries stays cheap.
    let mean = n as f64 * q;
    let reach = 40.0 * (mean * (1.0 - q)).sqrt() + 40.0;
    let first = k.max((mean - reach).max(0.0) as usize);
    let last = n.min((mean + reach).ceil() as usize);
    if first > last {
        return 0.0;
    }
    let total: f64 = (first..=last)
        .map(|i| {
            (ln_fact[n] - ln_fact[i] - ln_fact[n - i] + i as f64 * ln_q + (n - i) as f64 * ln_1q)
                .exp()
        })
        .sum();
    total.min(1.0)
}

/// Latencies in milliseconds as a serialized HdrHistogram (V2 + deflate, nanosecond values, 3
/// significant digits): the raw distribution, kept with the result so percentiles can be
/// recomputed and runs merged later.
pub fn hdr_histogram(latencies_ms: &[f64]) -> Vec<u8> {
    use hdrhistogram::serialization::Serializer;
    // 1 ns to 1 h; anything longer is recorded as 1 h.
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("valid bounds");
    for &ms in latencies_ms {
        hist.saturating_record((ms * 1e6).round().max(1.0) as u64);
    }
    let mut out = Vec::new();
    hdrhistogram::serialization::V2DeflateSerializer::new()
        .serialize(&hist, &mut out)
        .expect("serializing into memory cannot fail");
    out
}

/// Standard deviation over mean of the values; `None` for fewer than two or a zero mean.
pub fn coefficient_of_variation(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean == 0.0 {
        return None;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some(var.sqrt() / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_intervals_bracket_the_estimate_and_shrink_with_more_samples() {
        let values = |n: usize| -> Vec<f64> { (1..=n).map(|i| i as f64).collect() };
        for n in [1, 5, 100, 2000] {
            let v = values(n);
            for p in [50.0, 90.0] {
                let (lo, hi) = bootstrap_ci95(&v, p);
                let est = nearest_rank(&v, p);
                assert!(lo <= est && est <= hi, "n={n} p{p}: {lo} <= {est} <= {hi}");
            }
        }
        // For the median of 1..=100 the exact bootstrap interval is about ±10 ranks.
        let (lo, hi) = bootstrap_ci95(&values(100), 50.0);
        assert!(
            (38.0..=42.0).contains(&lo) && (58.0..=62.0).contains(&hi),
            "{lo}..{hi}"
        );
        let width = |n: usize| {
            let v: Vec<f64> = (1..=n).map(|i| i as f64 / n as f64).collect();
            let (lo, hi) = bootstrap_ci95(&v, 50.0);
            hi - lo
        };
        assert!(
            width(4000) < width(100) / 4.0,
            "width shrinks like 1/sqrt(n)"
        );
        assert_eq!(bootstrap_ci95(&[3.0; 50], 90.0), (3.0, 3.0));
    }

    #[test]
    fn the_histogram_round_trips_and_agrees_with_exact_percentiles() {
        use hdrhistogram::serialization::Deserializer;
        let latencies: Vec<f64> = (1..=1000).map(|i| i as f64 / 100.0).collect();
        let bytes = hdr_histogram(&latencies);
        let hist: hdrhistogram::Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(hist.len(), 1000);
        let p90_ms = hist.value_at_quantile(0.90) as f64 / 1e6;
        assert!((p90_ms - 9.0).abs() / 9.0 < 0.001, "{p90_ms}");
    }

    #[test]
    fn early_stopping_needs_enough_samples_and_errs_upward() {
        let values = |n: usize| -> Vec<f64> { (1..=n).map(|i| i as f64).collect() };
        assert_eq!(
            early_stopping_estimate(&values(43), 90.0),
            None,
            "0.9^43 > 1%"
        );
        assert_eq!(
            early_stopping_estimate(&values(44), 90.0),
            Some(44.0),
            "only the maximum will do"
        );
        assert_eq!(early_stopping_estimate(&values(458), 99.0), None);
        for n in [100, 1000, 10_000] {
            let v = values(n);
            let estimate = early_stopping_estimate(&v, 90.0).unwrap();
            let p90 = nearest_rank(&v, 90.0);
            assert!(
                estimate > p90,
                "n={n}: {estimate} must be above the sample p90 {p90}"
            );
        }
        // The margin shrinks with more samples (about 2.3 standard errors of the rank).
        let margin = |n: usize| early_stopping_estimate(&values(n), 90.0).unwrap() / n as f64 - 0.9;
        assert!(margin(10_000) < margin(1000) / 2.0);
    }

    #[test]
    fn coefficient_of_variation_of_repetitions() {
        assert_eq!(coefficient_of_variation(&[2.0]), None);
        assert_eq!(coefficient_of_variation(&[2.0, 2.0, 2.0]), Some(0.0));
        let cv = coefficient_of_variation(&[9.0, 10.0, 11.0]).unwrap();
        assert!((cv - 0.1).abs() < 1e-12, "{cv}");
    }

    #[test]
    fn nearest_rank_matches_the_definition() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        for (p, want) in [
            (0.0, 1.0),
            (10.0, 1.0),
            (11.0, 2.0),
            (50.0, 5.0),
            (90.0, 9.0),
            (91.0, 10.0),
            (99.0, 10.0),
            (100.0, 10.0),
        ] {
            assert_eq!(nearest_rank(&v, p), want, "p{p}");
        }
        assert_eq!(nearest_rank(&[4.2], 99.9), 4.2);
    }

    #[test]
    fn summary_is_ordered_and_ignores_input_order() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0];
        let s = summarize(&v).unwrap();
        assert_eq!((s.min, s.p50, s.max), (1.0, 3.0, 100.0));
        assert!(
            s.p50 <= s.p90
                && s.p90 <= s.p95
                && s.p95 <= s.p99
                && s.p99 <= s.p999
                && s.p999 <= s.max
        );
        assert!((s.mean - 115.0 / 6.0).abs() < 1e-9);
        assert_eq!(s.percentiles.len(), 101);
        assert!(s.percentiles.windows(2).all(|w| w[0] <= w[1]));
        assert!(summarize(&[]).is_none());
        assert_eq!(summarize(&[2.0]).unwrap().stddev, 0.0);
    }
}
