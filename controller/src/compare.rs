//! `edgefleet compare A B`: two model versions (or two runs) side by side on every device class
//! that measured them, the ratio B/A with a 95% bootstrap interval from the stored latency
//! histograms, and a verdict that says "no difference beyond noise" when that is the truth.
//!
//! Within a device class ([`ResultRecord::device_class`]) and scenario, each side is its newest
//! run there, with the histograms of every agent of that class in that run merged. A class only
//! one side was measured on is its own answer ("never measured on A here"), never "no change".

pub mod interval;
pub mod query;

use std::collections::{BTreeMap, BTreeSet};

use edgefleet_reports::analysis::{quality_score, references};
use edgefleet_reports::ResultRecord;
use serde::{Deserialize, Serialize};

use interval::{HistogramError, Latencies, RatioInterval};

/// The default threshold: changes smaller than 5% are reported as no difference (conbench's
/// pairwise default).
pub const DEFAULT_THRESHOLD: f64 = 0.05;

/// What a comparison measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    P50,
    P90,
    P99,
    Throughput,
    Energy,
    Memory,
    Ttft,
    Tpot,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::Throughput,
        Metric::Energy,
        Metric::Memory,
        Metric::Ttft,
        Metric::Tpot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P90 => "p90",
            Metric::P99 => "p99",
            Metric::Throughput => "throughput",
            Metric::Energy => "energy",
            Metric::Memory => "memory",
            Metric::Ttft => "ttft",
            Metric::Tpot => "tpot",
        }
    }

    pub fn parse(text: &str) -> Result<Metric, CompareError> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| CompareError::UnknownMetric(text.to_string()))
    }

    /// The unit of the metric's values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::P50 | Metric::P90 | Metric::P99 | Metric::Ttft | Metric::Tpot => "ms",
            Metric::Throughput => "samples/s",
            Metric::Energy => "J/inference",
            Metric::Memory => "bytes",
        }
    }

    fn higher_is_better(self) -> bool {
        self == Metric::Throughput
    }

    /// What "better" and "worse" read as for this metric.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Metric::Throughput | Metric::P50 | Metric::P90 | Metric::P99 => ("faster", "slower"),
            Metric::Ttft | Metric::Tpot => ("faster", "slower"),
            Metric::Energy => ("less energy", "more energy"),
            Metric::Memory => ("less memory", "more memory"),
        }
    }

    fn percentile(self) -> Option<f64> {
        match self {
            Metric::P50 => Some(50.0),
            Metric::P90 => Some(90.0),
            Metric::P99 => Some(99.0),
            _ => None,
        }
    }
}

/// The answer for one device class and scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// B is better than A beyond noise and threshold.
    Better,
    /// B is worse than A beyond noise and threshold.
    Worse,
    /// The interval contains 1 or the change is under the threshold.
    NoDifference,
    /// Only B was measured on this device class.
    NotMeasuredOnA,
    /// Only A was measured on this device class.
    NotMeasuredOnB,
    /// Both ran here but the metric was not measured (energy without a sensor, TTFT of an
    /// encoder).
    MetricNotMeasured,
}

/// One side of a row: what its newest run on this device class measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub run_id: String,
    pub model: String,
    pub agents: Vec<String>,
    /// Latencies behind the value (all agents of the class in that run).
    pub samples: u64,
    /// The metric's value, `None` when it was not measured.
    pub value: Option<f64>,
    pub peak_rss_bytes: u64,
    pub energy_j_per_inference: Option<f64>,
    /// The quality score against the run's reference, when a check ran.
    pub quality: Option<f64>,
}

/// A device class × scenario (× model, when runs are compared) line of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub device_class: String,
    pub scenario: String,
    pub a: Option<Side>,
    pub b: Option<Side>,
    /// B / A.
    pub ratio: Option<f64>,
    /// 95% bootstrap interval of the ratio; `None` for metrics with one value a side (memory,
    /// energy, TTFT, TPOT).
    pub ci95: Option<[f64; 2]>,
    pub verdict: Verdict,
    /// The verdict in words: "faster", "no difference beyond noise", ….
    pub verdict_text: String,
    pub memory_delta_bytes: Option<i64>,
    pub energy_delta_j: Option<f64>,
    pub quality_delta: Option<f64>,
}

/// A whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub metric: Metric,
    pub unit: String,
    pub threshold: f64,
    pub rows: Vec<Row>,
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("unknown metric `{0}` (one of p50, p90, p99, throughput, energy, memory, ttft, tpot)")]
    UnknownMetric(String),
    #[error("the threshold must be a fraction between 0 and 1 (0.05 = 5%), not {0}")]
    BadThreshold(f64),
    #[error("{0}")]
    NothingMatches(String),
    #[error(
        "{a} and {b} were never measured on a common device class ({a} on {a_classes}; {b} on {b_classes})"
    )]
    NoCommonDeviceClass {
        a: String,
        b: String,
        a_classes: String,
        b_classes: String,
    },
    #[error(
        "{a} and {b} were measured on the same device class but never in the same scenario ({a}: {a_scenarios}; {b}: {b_scenarios}): run both in one suite to compare them"
    )]
    DifferentScenarios {
        a: String,
        b: String,
        a_scenarios: String,
        b_scenarios: String,
    },
    #[error("compare two model versions (name@version) or two runs, not one of each")]
    MixedSides,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{what}: {source}")]
    Histogram {
        what: String,
        source: HistogramError,
    },
}

/// How to compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub metric: Metric,
    pub threshold: f64,
    /// Rows also split by model (two runs are compared model by model).
    pub by_model: bool,
}

/// Compares two sets of records (each already narrowed to one side: a model version or a run).
pub fn compare(
    a_label: &str,
    a_records: &[ResultRecord],
    b_label: &str,
    b_records: &[ResultRecord],
    options: Options,
) -> Result<Comparison, CompareError> {
    if !(0.0..1.0).contains(&options.threshold) {
        return Err(CompareError::BadThreshold(options.threshold));
    }
    let a_groups = groups(a_records, options.by_model);
    let b_groups = groups(b_records, options.by_model);
    if !a_groups.keys().any(|k| b_groups.contains_key(k)) {
        let classes = |g: &BTreeMap<GroupKey, Vec<&ResultRecord>>| {
            let set: BTreeSet<&str> = g.keys().map(|k| k.device_class.as_str()).collect();
            set.into_iter().collect::<Vec<_>>().join("; ")
        };
        let shared_class = a_groups
            .keys()
            .any(|k| b_groups.keys().any(|o| o.device_class == k.device_class));
        let scenarios = |g: &BTreeMap<GroupKey, Vec<&ResultRecord>>| {
            let set: BTreeSet<&str> = g.keys().map(|k| k.scenario.as_str()).collect();
            set.into_iter().collect::<Vec<_>>().join(", ")
        };
        // (Two runs compared model by model can share class and scenario and differ in models.)
        if shared_class && scenarios(&a_groups) != scenarios(&b_groups) {
            return Err(CompareError::DifferentScenarios {
                a: a_label.to_string(),
                b: b_label.to_string(),
                a_scenarios: scenarios(&a_groups),
                b_scenarios: scenarios(&b_groups),
            });
        }
        return Err(CompareError::NoCommonDeviceClass {
            a: a_label.to_string(),
            b: b_label.to_string(),
            a_classes: classes(&a_groups),
            b_classes: classes(&b_groups),
        });
    }
    // A model some record was compared against scores 1.0 (the report's rule).
    let mut refs = references(a_records);
    refs.extend(references(b_records));
    let keys: BTreeSet<&GroupKey> = a_groups.keys().chain(b_groups.keys()).collect();
    let mut rows = Vec::new();
    for key in keys {
        let a = a_groups.get(key).map(|r| newest_run(r));
        let b = b_groups.get(key).map(|r| newest_run(r));
        rows.push(row(key, a.as_deref(), b.as_deref(), options, &refs)?);
    }
    Ok(Comparison {
        a: a_label.to_string(),
        b: b_label.to_string(),
        metric: options.metric,
        unit: options.metric.unit().to_string(),
        threshold: options.threshold,
        rows,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    device_class: String,
    scenario: String,
    model: Option<String>,
}

fn groups(records: &[ResultRecord], by_model: bool) -> BTreeMap<GroupKey, Vec<&ResultRecord>> {
    let mut out: BTreeMap<GroupKey, Vec<&ResultRecord>> = BTreeMap::new();
    for r in records {
        let scenario = if r.samples_per_query > 1 {
            format!("{} ×{}", r.scenario, r.samples_per_query)
        } else {
            r.scenario.clone()
        };
        out.entry(GroupKey {
            device_class: r.device_class(),
            scenario,
            model: by_model.then(|| r.model_ref()),
        })
        .or_default()
        .push(r);
    }
    out
}

/// The records of the newest run among `records` (by start time).
fn newest_run<'a>(records: &[&'a ResultRecord]) -> Vec<&'a ResultRecord> {
    let newest = records
        .iter()
        .max_by(|x, y| x.started_at.cmp(&y.started_at))
        .map(|r| r.run_id.clone())
        .unwrap_or_default();
    records
        .iter()
        .copied()
        .filter(|r| r.run_id == newest)
        .collect()
}

fn row(
    key: &GroupKey,
    a: Option<&[&ResultRecord]>,
    b: Option<&[&ResultRecord]>,
    options: Options,
    refs: &BTreeSet<String>,
) -> Result<Row, CompareError> {
    let metric = options.metric;
    let a_side = a.map(|r| side(r, metric, refs)).transpose()?;
    let b_side = b.map(|r| side(r, metric, refs)).transpose()?;
    let mut row = Row {
        device_class: key.device_class.clone(),
        scenario: key.scenario.clone(),
        a: a_side.as_ref().map(|s| s.summary.clone()),
        b: b_side.as_ref().map(|s| s.summary.clone()),
        ratio: None,
        ci95: None,
        verdict: Verdict::MetricNotMeasured,
        verdict_text: String::new(),
        memory_delta_bytes: None,
        energy_delta_j: None,
        quality_delta: None,
    };
    let (a_side, b_side) = match (a_side, b_side) {
        (Some(a), Some(b)) => (a, b),
        (None, _) => {
            row.verdict = Verdict::NotMeasuredOnA;
            row.verdict_text = "never measured on A here".into();
            return Ok(row);
        }
        (_, None) => {
            row.verdict = Verdict::NotMeasuredOnB;
            row.verdict_text = "never measured on B here".into();
            return Ok(row);
        }
    };
    let (sa, sb) = (&a_side.summary, &b_side.summary);
    row.memory_delta_bytes = Some(sb.peak_rss_bytes as i64 - sa.peak_rss_bytes as i64);
    row.energy_delta_j = sa
        .energy_j_per_inference
        .zip(sb.energy_j_per_inference)
        .map(|(x, y)| y - x);
    row.quality_delta = sa.quality.zip(sb.quality).map(|(x, y)| y - x);
    let interval: Option<RatioInterval> = match (metric.percentile(), metric) {
        (Some(p), _) => Some(interval::percentile_ratio(
            &a_side.latencies,
            &b_side.latencies,
            p,
        )),
        (None, Metric::Throughput) => {
            // Throughput goes as one over the mean latency: the mean's interval, inverted.
            let m = interval::mean_ratio(&a_side.latencies, &b_side.latencies);
            sa.value.zip(sb.value).map(|(x, y)| {
                let t = y / x;
                RatioInterval {
                    ratio: t,
                    low: t * m.ratio / m.high,
                    high: t * m.ratio / m.low,
                }
            })
        }
        _ => None,
    };
    let ratio = match interval {
        Some(i) => Some(i.ratio),
        None => sa.value.zip(sb.value).map(|(x, y)| y / x),
    };
    let Some(ratio) = ratio.filter(|r| r.is_finite()) else {
        row.verdict = Verdict::MetricNotMeasured;
        row.verdict_text = format!("{} not measured on both", metric.name());
        return Ok(row);
    };
    row.ratio = Some(ratio);
    row.ci95 = interval.map(|i| [i.low, i.high]);
    let within_noise = interval.is_some_and(|i| i.contains_one());
    let under_threshold = (ratio - 1.0).abs() < options.threshold;
    let (better_word, worse_word) = metric.words();
    if within_noise || under_threshold {
        row.verdict = Verdict::NoDifference;
        row.verdict_text = if within_noise {
            "no difference beyond noise".into()
        } else {
            format!(
                "no difference beyond the {:.0}% threshold",
                options.threshold * 100.0
            )
        };
    } else {
        let better = (ratio > 1.0) == metric.higher_is_better();
        row.verdict = if better {
            Verdict::Better
        } else {
            Verdict::Worse
        };
        row.verdict_text = if better { better_word } else { worse_word }.to_string();
        if interval.is_none() {
            row.verdict_text
                .push_str(" (one value a side, no interval)");
        }
    }
    Ok(row)
}

struct SideData {
    summary: Side,
    latencies: Latencies,
}

fn side(
    records: &[&ResultRecord],
    metric: Metric,
    references: &BTreeSet<String>,
) -> Result<SideData, CompareError> {
    let first = records[0];
    let latencies =
        Latencies::from_hdr_base64(records.iter().map(|r| r.latency_histogram_hdr.as_str()))
            .map_err(|source| CompareError::Histogram {
                what: format!("run {} of {}", first.run_id, first.model_ref()),
                source,
            })?;
    let mean = |values: Vec<f64>| -> Option<f64> {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let energy = mean(
        records
            .iter()
            .filter_map(|r| r.energy_j_per_inference)
            .collect(),
    );
    let value = match metric {
        Metric::P50 | Metric::P90 | Metric::P99 => {
            Some(latencies.percentile_ms(metric.percentile().unwrap_or(50.0)))
        }
        Metric::Throughput => Some(records.iter().map(|r| r.throughput_per_s).sum::<f64>()),
        Metric::Energy => energy,
        Metric::Memory => mean(records.iter().map(|r| r.peak_rss_bytes as f64).collect()),
        Metric::Ttft => mean(records.iter().filter_map(|r| r.ttft_ms).collect()),
        Metric::Tpot => mean(records.iter().filter_map(|r| r.tpot_ms).collect()),
    };
    // Several agents of one class measured side by side: throughput per agent is what a device
    // gives, so the sum is divided back.
    let value = match metric {
        Metric::Throughput => value.map(|v| v / records.len() as f64),
        _ => value,
    };
    let mut agents: Vec<String> = records.iter().map(|r| r.agent.clone()).collect();
    agents.sort();
    agents.dedup();
    Ok(SideData {
        summary: Side {
            run_id: first.run_id.clone(),
            model: first.model_ref(),
            agents,
            samples: latencies.count(),
            value,
            peak_rss_bytes: records.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
            energy_j_per_inference: energy,
            quality: mean(
                records
                    .iter()
                    .filter_map(|r| quality_score(r, references))
                    .collect(),
            ),
        },
        latencies,
    })
}

#[cfg(test)]
pub(crate) mod tests;
