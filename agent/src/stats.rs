//! Latency statistics over warm queries: nearest-rank percentiles, mean and standard deviation.

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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
