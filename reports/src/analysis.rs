//! Pure readings of the records the report is drawn from: the quality score against the
//! reference, the latest record of each setting, and each device class's summary (fastest,
//! smallest, best within the quality floor, what each quantization gives up).

use std::collections::{BTreeMap, BTreeSet};

use crate::ResultRecord;

/// Quality keys that read as "fraction of the reference's answers kept", most telling first,
/// with the words each is shown under: every metric a suite's `[quality]` can ask for
/// (logits: top-1 agreement; embeddings: mean cosine; decisions: share alike; OCR: share of text
/// lines read alike).
pub const SCORE_METRICS: [(&str, &str); 6] = [
    ("top1_agreement", "top-1 agreement"),
    ("accuracy", "accuracy"),
    ("top1_accuracy", "top-1 accuracy"),
    ("cosine_mean", "mean cosine"),
    ("exact_match", "decisions alike"),
    ("text_exact_match", "text lines read alike"),
];

/// The words a quality key is shown under (`exact_match` → "decisions alike"); the key itself
/// for one without words.
pub fn quality_label(key: &str) -> &str {
    SCORE_METRICS
        .iter()
        .chain(&[
            ("char_error_rate", "character error rate"),
            ("kl_mean", "mean KL divergence"),
            ("positive_rate", "positive rate"),
        ])
        .find(|(k, _)| *k == key)
        .map_or(key, |(_, words)| words)
}

/// The score's metric and value from a record's quality numbers: the first of
/// [`SCORE_METRICS`], then any other key ending in `accuracy`, `agreement` or `match`.
pub fn score_metric<'a, I>(quality: I) -> Option<(&'a str, f64)>
where
    I: IntoIterator<Item = (&'a String, &'a f64)> + Clone,
{
    let named = SCORE_METRICS.iter().find_map(|(key, _)| {
        quality
            .clone()
            .into_iter()
            .find(|(k, v)| k == key && v.is_finite())
            .map(|(k, v)| (k.as_str(), *v))
    });
    named.or_else(|| {
        quality
            .into_iter()
            .filter(|(k, _)| {
                k.ends_with("accuracy") || k.ends_with("agreement") || k.ends_with("match")
            })
            .find(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.as_str(), *v))
    })
}

/// A record's quality score against its reference, 1.0 meaning "as good as the reference".
///
/// The rule: a record whose model is itself a reference (its `name@version` is some record's
/// `quality_reference`, or its own) scores 1.0. Otherwise the score is the first finite value
/// among [`SCORE_METRICS`] (`top1_agreement`, `accuracy`, `top1_accuracy`, `cosine_mean`,
/// `exact_match`, `text_exact_match`), then any other key ending in `accuracy`, `agreement` or
/// `match`. Minimums (`*_min`), divergences (`kl_*`) and error rates are never scores. No quality
/// (or a failed check) is `None`: "not measured", never 0.
///
/// `references` is the set of every record's `quality_reference` ([`references`]).
pub fn quality_score(record: &ResultRecord, references: &BTreeSet<String>) -> Option<f64> {
    let own = record.model_ref();
    if references.contains(&own) || record.quality_reference.as_deref() == Some(own.as_str()) {
        return Some(1.0);
    }
    score_metric(record.quality.as_ref()?).map(|(_, v)| v)
}

/// A record's quality score with what it measures, for a table cell: `0.946 decisions alike`,
/// `1 (reference)`, or `–` when not measured.
pub fn quality_cell(record: &ResultRecord, references: &BTreeSet<String>) -> String {
    match (
        quality_score(record, references),
        quality_score_label(record, references),
    ) {
        (Some(q), Some(words)) => format!("{q:.3} {words}"),
        (Some(_), None) => "1 (reference)".to_string(),
        (None, _) => "–".to_string(),
    }
}

/// What a record's quality score measures, in words ("decisions alike"); `None` for a reference
/// (its score is 1.0 by definition) or a record without quality.
pub fn quality_score_label(
    record: &ResultRecord,
    references: &BTreeSet<String>,
) -> Option<&'static str> {
    let own = record.model_ref();
    if references.contains(&own) || record.quality_reference.as_deref() == Some(own.as_str()) {
        return None;
    }
    let (key, _) = score_metric(record.quality.as_ref()?)?;
    SCORE_METRICS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, words)| *words)
}

/// Every model some record is compared against (`quality_reference`).
pub fn references(records: &[ResultRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.quality_reference.clone())
        .collect()
}

/// The newest record (by `started_at`) of each setting: agent, model, quantization, workload
/// (suite and prompt length), scenario, threads, engine and execution provider; in the order each
/// setting first appears.
pub(crate) fn latest(records: &[ResultRecord]) -> Vec<&ResultRecord> {
    type Key<'a> = (
        &'a str,
        String,
        &'a str,
        String,
        &'a str,
        u32,
        &'a str,
        &'a str,
    );
    let mut order: Vec<Key> = Vec::new();
    let mut newest: BTreeMap<Key, &ResultRecord> = BTreeMap::new();
    for r in records {
        let k: Key = (
            &r.agent,
            r.model_ref(),
            &r.quantization,
            r.workload(),
            &r.scenario,
            r.threads,
            &r.engine,
            &r.execution_provider,
        );
        match newest.get(&k) {
            Some(old) if instant(&old.started_at) >= instant(&r.started_at) => {}
            Some(_) => {
                newest.insert(k, r);
            }
            None => {
                order.push(k.clone());
                newest.insert(k, r);
            }
        }
    }
    order.iter().map(|k| newest[k]).collect()
}

/// Seconds since the epoch of an RFC 3339 time; `None` when it does not parse.
pub(crate) fn instant(rfc3339: &str) -> Option<f64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// What a device class's summary says.
#[derive(Debug)]
pub(crate) struct ClassSummary<'a> {
    pub class: String,
    /// The scenario the comparisons are made in (the class's most common one).
    pub scenario: String,
    pub fastest: Option<&'a ResultRecord>,
    pub smallest: Option<&'a ResultRecord>,
    /// The fastest model whose quality score is at least the floor, with its score.
    pub best_within_floor: Option<(&'a ResultRecord, f64)>,
    pub tradeoffs: Vec<Tradeoff<'a>>,
}

/// A quantized model against its full-precision sibling, same class and scenario.
#[derive(Debug)]
pub(crate) struct Tradeoff<'a> {
    pub reference: &'a ResultRecord,
    pub variant: &'a ResultRecord,
    /// reference size / variant size (> 1: smaller).
    pub smaller: f64,
    /// reference p90 / variant p90 (> 1: faster).
    pub faster: f64,
    pub quality: Option<f64>,
}

/// One summary per device class, in the order classes first appear in `latest`.
pub(crate) fn class_summaries<'a>(
    latest: &[&'a ResultRecord],
    references: &BTreeSet<String>,
    floor: f64,
) -> Vec<ClassSummary<'a>> {
    let mut classes: Vec<String> = Vec::new();
    for r in latest {
        let c = r.device_class();
        if !classes.contains(&c) {
            classes.push(c);
        }
    }
    classes
        .into_iter()
        .map(|class| {
            let members: Vec<&ResultRecord> = latest
                .iter()
                .copied()
                .filter(|r| r.device_class() == class)
                .collect();
            summarize(class, &members, references, floor)
        })
        .collect()
}

/// The scenario most records of `members` ran, preferring single-stream on a tie.
pub(crate) fn main_scenario(members: &[&ResultRecord]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in members {
        *counts.entry(r.scenario.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(s, n)| (n, s == "single-stream", std::cmp::Reverse(s)))
        .map(|(s, _)| s.to_string())
        .unwrap_or_default()
}

fn summarize<'a>(
    class: String,
    members: &[&'a ResultRecord],
    references: &BTreeSet<String>,
    floor: f64,
) -> ClassSummary<'a> {
    let scenario = main_scenario(members);
    let timed: Vec<&ResultRecord> = members
        .iter()
        .copied()
        .filter(|r| r.scenario == scenario && r.latency_ms.p90.is_finite())
        .collect();
    let by_p90 =
        |a: &&&ResultRecord, b: &&&ResultRecord| a.latency_ms.p90.total_cmp(&b.latency_ms.p90);
    let fastest = timed.iter().min_by(by_p90).copied();
    let smallest = (members.iter().copied())
        .filter(|r| r.model_bytes > 0)
        .min_by_key(|r| (r.model_bytes, r.model_ref()));
    let best_within_floor = (timed.iter().copied())
        .filter_map(|r| quality_score(r, references).map(|q| (r, q)))
        .filter(|&(_, q)| q >= floor)
        .min_by(|a, b| a.0.latency_ms.p90.total_cmp(&b.0.latency_ms.p90));
    ClassSummary {
        class,
        scenario,
        fastest,
        smallest,
        best_within_floor,
        tradeoffs: tradeoffs(&timed, references),
    }
}

/// Within one class and scenario: per model name, each quantization against the reference one
/// (the model some record names as its quality reference, else fp32, else the largest file).
fn tradeoffs<'a>(timed: &[&'a ResultRecord], references: &BTreeSet<String>) -> Vec<Tradeoff<'a>> {
    let mut by_name: BTreeMap<&str, Vec<&ResultRecord>> = BTreeMap::new();
    for r in timed {
        by_name.entry(r.model.as_str()).or_default().push(r);
    }
    let mut out = Vec::new();
    for group in by_name.values() {
        let quants: BTreeSet<&str> = group.iter().map(|r| r.quantization.as_str()).collect();
        if quants.len() < 2 {
            continue;
        }
        let reference = group
            .iter()
            .copied()
            .max_by_key(|r| {
                (
                    references.contains(&r.model_ref()),
                    r.quantization.eq_ignore_ascii_case("fp32"),
                    r.model_bytes,
                )
            })
            .expect("a group has records");
        for quant in quants.into_iter().filter(|q| *q != reference.quantization) {
            let Some(variant) = group
                .iter()
                .copied()
                .filter(|r| r.quantization == quant)
                .min_by(|a, b| a.latency_ms.p90.total_cmp(&b.latency_ms.p90))
            else {
                continue;
            };
            out.push(Tradeoff {
                reference,
                variant,
                smaller: ratio(reference.model_bytes as f64, variant.model_bytes as f64),
                faster: ratio(reference.latency_ms.p90, variant.latency_ms.p90),
                quality: quality_score(variant, references),
            });
        }
    }
    out
}

/// `a / b`, NaN when it means nothing (zero or non-finite).
fn ratio(a: f64, b: f64) -> f64 {
    if a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}
