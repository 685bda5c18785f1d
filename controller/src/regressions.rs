//! Judging a finished run: a result regresses when its interval against the suite's baseline
//! run on that device class excludes 1 and the change is past the threshold (p50 and p90), or
//! when it drifts out of the recent history of its (suite, model, scenario, device class): a
//! robust z-score over a trimmed window of earlier runs, conbench's way, so a slow creep that no
//! single pairwise comparison flags still shows.

use std::collections::{BTreeMap, HashMap};

use edgefleet_reports::ResultRecord;

use crate::compare::{self, CompareError, Metric, Options, Verdict};
use crate::store::{RegressionKind, RegressionRow, ResultFilter, Store, StoreError};

/// Runs of history a drift check looks back over.
pub const HISTORY_WINDOW: usize = 20;
/// Fewer earlier runs than this and drift is not judged.
pub const MIN_HISTORY: usize = 5;
/// How far (in robust standard deviations) a value may sit above the history's median.
pub const Z_LIMIT: f64 = 3.0;
/// The share of the window trimmed from each end before the median and spread are taken.
const TRIM: f64 = 0.1;
/// The smallest spread a history is given, as a share of its median: a perfectly steady history
/// must not make a 0.1% wobble a regression.
const MIN_RELATIVE_SPREAD: f64 = 0.01;

/// Metrics judged against a baseline.
const BASELINE_METRICS: [Metric; 2] = [Metric::P50, Metric::P90];

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot compare with the baseline: {0}")]
    Compare(#[from] CompareError),
}

/// Regressions of `run` against its `baseline` run's records (both narrowed to one device
/// class, or to classes that share that baseline).
pub fn against_baseline(
    run: &[ResultRecord],
    baseline: &[ResultRecord],
    baseline_run: &str,
    threshold: f64,
) -> Result<Vec<RegressionRow>, CompareError> {
    let mut found = Vec::new();
    for metric in BASELINE_METRICS {
        let options = Options {
            metric,
            threshold,
            by_model: true,
        };
        let comparison = match compare::compare(baseline_run, baseline, "run", run, options) {
            Ok(c) => c,
            Err(
                CompareError::NoCommonDeviceClass { .. } | CompareError::DifferentScenarios { .. },
            ) => return Ok(found),
            Err(e) => return Err(e),
        };
        for row in comparison.rows {
            let (Some(b), Some(ratio)) = (&row.b, row.ratio) else {
                continue;
            };
            if row.verdict == Verdict::Worse {
                found.push(RegressionRow {
                    id: 0,
                    run_id: b.run_id.clone(),
                    suite: run.first().map(|r| r.suite.clone()).unwrap_or_default(),
                    model: b.model.clone(),
                    scenario: row.scenario.clone(),
                    device_class: row.device_class.clone(),
                    metric: metric.name().to_string(),
                    kind: RegressionKind::Baseline,
                    against: baseline_run.to_string(),
                    ratio,
                    ci95: row.ci95,
                    robust_z: None,
                    detected_ms: 0,
                    acknowledged_ms: None,
                });
            }
        }
    }
    Ok(found)
}

/// (device class, scenario, model) — what a history is kept for.
type SeriesKey = (String, String, String);

fn series_key(r: &ResultRecord) -> SeriesKey {
    (r.device_class(), r.scenario.clone(), r.model_ref())
}

/// The p50 of each run of a series: the median over that run's agents.
fn per_run_p50(records: &[&ResultRecord]) -> Vec<(String, String, f64)> {
    let mut runs: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in records {
        runs.entry((r.started_at.clone(), r.run_id.clone()))
            .or_default()
            .push(r.latency_ms.p50);
    }
    runs.into_iter()
        .map(|((at, id), values)| (at, id, median(values)))
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Drift of `run`'s p50 latencies against `history` (earlier records of the same suite; records
/// of `run` itself and of later runs are ignored).
pub fn drift(run: &[ResultRecord], history: &[ResultRecord], threshold: f64) -> Vec<RegressionRow> {
    let Some(first) = run.first() else {
        return Vec::new();
    };
    let mut past: HashMap<SeriesKey, Vec<&ResultRecord>> = HashMap::new();
    for r in history {
        if r.run_id != first.run_id && r.started_at < first.started_at {
            past.entry(series_key(r)).or_default().push(r);
        }
    }
    let mut now: BTreeMap<SeriesKey, Vec<&ResultRecord>> = BTreeMap::new();
    for r in run {
        now.entry(series_key(r)).or_default().push(r);
    }
    let mut found = Vec::new();
    for (key, records) in now {
        let Some(earlier) = past.get(&key) else {
            continue;
        };
        let runs = per_run_p50(earlier);
        let window: Vec<f64> = runs
            .iter()
            .rev()
            .take(HISTORY_WINDOW)
            .map(|(_, _, v)| *v)
            .collect();
        if window.len() < MIN_HISTORY {
            continue;
        }
        let value = median(records.iter().map(|r| r.latency_ms.p50).collect());
        let Some((z, center)) = robust_z(&window, value) else {
            continue;
        };
        let ratio = value / center;
        if z > Z_LIMIT && ratio - 1.0 > threshold {
            found.push(RegressionRow {
                id: 0,
                run_id: first.run_id.clone(),
                suite: first.suite.clone(),
                model: key.2.clone(),
                scenario: key.1.clone(),
                device_class: key.0.clone(),
                metric: "p50".to_string(),
                kind: RegressionKind::Drift,
                against: format!("{} runs", window.len()),
                ratio,
                ci95: None,
                robust_z: Some(z),
                detected_ms: 0,
                acknowledged_ms: None,
            });
        }
    }
    found
}

/// `value`'s robust z-score against a trimmed `window`, and the window's median.
fn robust_z(window: &[f64], value: f64) -> Option<(f64, f64)> {
    let mut sorted: Vec<f64> = window.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let cut = (sorted.len() as f64 * TRIM).floor() as usize;
    let trimmed = &sorted[cut..sorted.len() - cut];
    if trimmed.is_empty() {
        return None;
    }
    let center = median(trimmed.to_vec());
    let mad = median(trimmed.iter().map(|v| (v - center).abs()).collect());
    let spread = (1.4826 * mad).max(MIN_RELATIVE_SPREAD * center.abs());
    (spread > 0.0).then(|| ((value - center) / spread, center))
}

/// Judges one finished run once (against each device class's baseline of its suite and against
/// its history) and stores what it found. Rollout gate runs are judged by their gate, not here.
/// Returns the regressions stored now (empty when the run was judged before).
pub fn judge_run(
    store: &Store,
    run_id: &str,
    threshold: f64,
    now_ms: i64,
) -> Result<Vec<RegressionRow>, JudgeError> {
    let Some(run) = store.run(run_id)? else {
        return Ok(Vec::new());
    };
    if store.run_judged(run_id)? {
        return Ok(Vec::new());
    }
    if run.suite.starts_with("gate ") {
        return Ok(store.record_judgement(run_id, &[], now_ms)?);
    }
    let (records, _) = crate::records::collect(store, Some(run_id))?;
    let mut found = Vec::new();
    let baselines = store.baselines(Some(&run.suite))?;
    for baseline in baselines.iter().filter(|b| b.run_id != run_id) {
        let here: Vec<ResultRecord> = records
            .iter()
            .filter(|r| r.device_class() == baseline.device_class)
            .cloned()
            .collect();
        if here.is_empty() {
            continue;
        }
        let (base, _) = crate::records::collect(store, Some(&baseline.run_id))?;
        let base: Vec<ResultRecord> = base
            .into_iter()
            .filter(|r| r.device_class() == baseline.device_class)
            .collect();
        found.extend(against_baseline(&here, &base, &baseline.run_id, threshold)?);
    }
    let mut models: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.model.clone(), r.model_version.clone()))
        .collect();
    models.sort();
    models.dedup();
    for model in models {
        let (history, _) = crate::records::collect_where(
            store,
            &ResultFilter {
                model: Some(model.clone()),
                suite: Some(run.suite.clone()),
                ..ResultFilter::default()
            },
        )?;
        let mine: Vec<ResultRecord> = records
            .iter()
            .filter(|r| (&r.model, &r.model_version) == (&model.0, &model.1))
            .cloned()
            .collect();
        found.extend(drift(&mine, &history, threshold));
    }
    Ok(store.record_judgement(run_id, &found, now_ms)?)
}

#[cfg(test)]
mod tests;
