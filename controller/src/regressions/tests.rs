//! Baseline and drift judgements over records with known latencies.

use super::*;
use crate::compare::tests::{histogram_around, record};

const GW: &str = "x86_64/Intel Xeon/2c/24GiB";

fn at(run: &str, day: u32, ms: f64) -> ResultRecord {
    let mut r = record("gw", GW, "m@1", run, ms);
    r.started_at = format!("2026-11-{day:02}T03:00:00.000Z");
    r.latency_ms.p50 = ms;
    r.latency_histogram_hdr = histogram_around(ms, 2000);
    r
}

#[test]
fn slower_than_the_baseline_beyond_noise_is_a_regression() {
    let base = vec![at("base", 1, 10.0)];
    let found = against_baseline(&[at("new", 2, 15.0)], &base, "base", 0.05).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let p50 = found.iter().find(|f| f.metric == "p50").unwrap();
    assert_eq!(p50.kind, RegressionKind::Baseline);
    assert_eq!((p50.run_id.as_str(), p50.against.as_str()), ("new", "base"));
    assert!((p50.ratio - 1.5).abs() < 0.02, "{p50:?}");
    assert!(p50.ci95.unwrap()[0] > 1.0);
    assert_eq!(p50.model, "m@1");
    // The same speed, or faster, is not.
    assert!(against_baseline(&[at("new", 2, 10.0)], &base, "base", 0.05)
        .unwrap()
        .is_empty());
    assert!(against_baseline(&[at("new", 2, 5.0)], &base, "base", 0.05)
        .unwrap()
        .is_empty());
    // A baseline from another device class judges nothing.
    let mut elsewhere = at("base", 1, 1.0);
    elsewhere.target = "aarch64/Cortex-A76/4c/8GiB".into();
    assert!(
        against_baseline(&[at("new", 2, 15.0)], &[elsewhere], "base", 0.05)
            .unwrap()
            .is_empty()
    );
}

/// Eight earlier nightly runs wobbling around 10 ms.
fn history() -> Vec<ResultRecord> {
    [10.0, 10.1, 9.9, 10.05, 9.95, 10.1, 10.0, 9.9]
        .iter()
        .enumerate()
        .map(|(i, ms)| at(&format!("r{i}"), i as u32 + 1, *ms))
        .collect()
}

#[test]
fn drift_out_of_recent_history_is_flagged() {
    let slow = at("tonight", 20, 10.8);
    let found = drift(std::slice::from_ref(&slow), &history(), 0.05);
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f.kind, RegressionKind::Drift);
    assert_eq!(f.against, "8 runs");
    assert!(f.robust_z.unwrap() > Z_LIMIT && (f.ratio - 1.08).abs() < 0.01);
}

#[test]
fn noise_small_changes_and_short_histories_are_not_drift() {
    // Within the history's spread.
    assert!(drift(&[at("tonight", 20, 10.1)], &history(), 0.05).is_empty());
    // Far outside a steady history's spread but under the threshold.
    assert!(drift(&[at("tonight", 20, 10.4)], &history(), 0.05).is_empty());
    // Faster is never a regression.
    assert!(drift(&[at("tonight", 20, 8.0)], &history(), 0.05).is_empty());
    // Four earlier runs are too few to judge.
    assert!(drift(&[at("tonight", 20, 20.0)], &history()[..4], 0.05).is_empty());
    // Later runs and the run itself are not its history.
    let mut later = history();
    for r in &mut later {
        r.started_at = "2026-12-30T00:00:00.000Z".into();
    }
    assert!(drift(&[at("tonight", 20, 20.0)], &later, 0.05).is_empty());
}

#[test]
fn one_outlier_in_the_history_is_trimmed() {
    let mut h = history();
    h.push(at("spike", 9, 50.0));
    h.push(at("dip", 10, 1.0));
    let found = drift(&[at("tonight", 20, 10.8)], &h, 0.05);
    assert_eq!(found.len(), 1, "{found:?}");
}
