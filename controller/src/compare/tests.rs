//! Comparisons over records whose latency histograms hold known latencies.

use std::collections::BTreeMap;

use base64::Engine;
use edgefleet_reports::{LatencyCi, LatencyMs, ResultRecord};
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

use super::*;

/// A base64 HdrHistogram of `n` latencies spread ±10% around `center_ms`.
pub(crate) fn histogram_around(center_ms: f64, n: usize) -> String {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    for i in 0..n {
        let ms = center_ms * (0.9 + 0.2 * ((i * 37) % 101) as f64 / 100.0);
        hist.record((ms * 1e6) as u64).unwrap();
    }
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&hist, &mut bytes)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn record(agent: &str, target: &str, model: &str, run: &str, ms: f64) -> ResultRecord {
    let (name, version) = model.split_once('@').unwrap();
    ResultRecord {
        agent: agent.into(),
        agent_id: format!("{agent}-id"),
        target: target.into(),
        labels: BTreeMap::new(),
        model: name.into(),
        model_version: version.into(),
        quantization: version.into(),
        model_sha256: "ab".repeat(32),
        model_bytes: 1000,
        engine: "onnxruntime".into(),
        engine_version: "1.31.1".into(),
        execution_provider: "CPU".into(),
        threads: 1,
        scenario: "single-stream".into(),
        samples: 2000,
        duration_s: 10.0,
        valid: true,
        load_ms: 1.0,
        first_inference_ms: 1.0,
        latency_ms: LatencyMs {
            p50: ms,
            p90: ms,
            p95: ms,
            p99: ms,
            p999: ms,
            max: ms,
            mean: ms,
            stddev: 0.0,
        },
        throughput_per_s: 1000.0 / ms,
        peak_rss_bytes: 100_000_000,
        cpu_percent: None,
        energy_j_per_inference: None,
        energy_method: None,
        temperature_c: None,
        throttled: None,
        ttft_ms: None,
        tpot_ms: None,
        prefill_tokens_per_s: None,
        decode_tokens_per_s: None,
        quality: None,
        // A run with a longer id started later (the tests name runs so).
        started_at: format!("2026-11-01T00:00:{:02}.000Z", run.len()),
        run_id: run.into(),
        suite: "quick".into(),
        suite_sha256: "cd".repeat(32),
        agent_version: "0.1.0".into(),
        latency_percentiles_ms: Vec::new(),
        latency_ci95_ms: LatencyCi {
            p50: [ms, ms],
            p90: [ms, ms],
        },
        repetition_medians_ms: Vec::new(),
        repetition_cv: None,
        latency_histogram_hdr: histogram_around(ms, 2000),
        samples_per_query: 1,
        server: None,
        early_stopping: None,
        energy_sample_hz: None,
        idle_power_w: None,
        active_power_w: None,
        energy_note: None,
        cool_down_wait_s: 0.0,
        quality_reference: None,
        quality_error: None,
        kernel: String::new(),
        cpu_governor: String::new(),
        cpu_model: String::new(),
        generate: None,
    }
}

const PI: &str = "aarch64/Cortex-A76/4c/8GiB";
const GW: &str = "x86_64/Intel Xeon/2c/24GiB";
const JETSON: &str = "aarch64/Cortex-A78AE/6c/8GiB";

fn options(metric: Metric) -> Options {
    Options {
        metric,
        threshold: DEFAULT_THRESHOLD,
        by_model: false,
    }
}

#[test]
fn each_device_class_gets_its_own_verdict() {
    let a = vec![
        record("pi", PI, "minilm@fp32", "r1", 20.0),
        record("gw", GW, "minilm@fp32", "r1", 5.0),
        record("jet", JETSON, "minilm@fp32", "r1", 8.0),
    ];
    let b = vec![
        // int8 halves the Pi's latency, is the same on the gateway, never ran on the Jetson.
        record("pi", PI, "minilm@int8", "r1", 10.0),
        record("gw", GW, "minilm@int8", "r1", 5.0),
    ];
    let c = compare("minilm@fp32", &a, "minilm@int8", &b, options(Metric::P50)).unwrap();
    let by_class = |t: &str| {
        c.rows
            .iter()
            .find(|r| r.device_class.starts_with(t))
            .unwrap()
    };
    let pi = by_class(PI);
    assert_eq!(pi.verdict, Verdict::Better, "{pi:?}");
    assert_eq!(pi.verdict_text, "faster");
    let [lo, hi] = pi.ci95.unwrap();
    assert!(lo < 0.5 && 0.5 < hi && hi < 0.6, "{pi:?}");
    let gw = by_class(GW);
    assert_eq!(gw.verdict, Verdict::NoDifference, "{gw:?}");
    assert_eq!(gw.verdict_text, "no difference beyond noise");
    let jet = by_class(JETSON);
    assert_eq!(jet.verdict, Verdict::NotMeasuredOnB);
    assert!(jet.ratio.is_none() && jet.b.is_none());
    // Slower the other way round.
    let back = compare("int8", &b, "fp32", &a, options(Metric::P90)).unwrap();
    assert_eq!(back.rows[0].device_class, by_class(PI).device_class);
    assert_eq!(back.rows[0].verdict, Verdict::Worse);
}

#[test]
fn a_small_real_change_is_under_the_threshold() {
    let a = vec![record("gw", GW, "m@1", "r1", 10.0)];
    let mut b = vec![record("gw", GW, "m@2", "r2", 10.3)];
    b[0].latency_histogram_hdr = histogram_around(10.3, 200_000);
    let mut a_big = a.clone();
    a_big[0].latency_histogram_hdr = histogram_around(10.0, 200_000);
    let c = compare("m@1", &a_big, "m@2", &b, options(Metric::P50)).unwrap();
    let row = &c.rows[0];
    assert!(!row.ci95.map(|[l, h]| l <= 1.0 && 1.0 <= h).unwrap());
    assert_eq!(row.verdict, Verdict::NoDifference);
    assert_eq!(row.verdict_text, "no difference beyond the 5% threshold");
    let strict = Options {
        threshold: 0.01,
        ..options(Metric::P50)
    };
    let c = compare("m@1", &a_big, "m@2", &b, strict).unwrap();
    assert_eq!(c.rows[0].verdict, Verdict::Worse);
}

#[test]
fn throughput_memory_energy_and_quality() {
    let mut a = vec![record("pi", PI, "m@fp32", "r1", 20.0)];
    let mut b = vec![record("pi", PI, "m@int8", "r1", 10.0)];
    b[0].peak_rss_bytes = 40_000_000;
    b[0].quality = Some(BTreeMap::from([("cosine_mean".to_string(), 0.994)]));
    a[0].quality = Some(BTreeMap::from([("cosine_mean".to_string(), 1.0)]));
    let t = compare("a", &a, "b", &b, options(Metric::Throughput)).unwrap();
    let row = &t.rows[0];
    assert_eq!(row.verdict, Verdict::Better, "{row:?}");
    assert!((row.ratio.unwrap() - 2.0).abs() < 0.01);
    assert_eq!(row.memory_delta_bytes, Some(-60_000_000));
    assert!((row.quality_delta.unwrap() + 0.006).abs() < 1e-9);
    assert_eq!(row.energy_delta_j, None);
    let m = compare("a", &a, "b", &b, options(Metric::Memory)).unwrap();
    assert_eq!(m.rows[0].verdict, Verdict::Better);
    assert_eq!(
        m.rows[0].verdict_text,
        "less memory (one value a side, no interval)"
    );
    // No sensor on either side: energy is "not measured", never a zero or "no change".
    let e = compare("a", &a, "b", &b, options(Metric::Energy)).unwrap();
    assert_eq!(e.rows[0].verdict, Verdict::MetricNotMeasured);
    assert_eq!(e.rows[0].ratio, None);
}

#[test]
fn runs_compare_model_by_model_and_the_newest_run_counts() {
    let old = vec![
        record("gw", GW, "m@1", "run-1", 10.0),
        record("gw", GW, "n@1", "run-1", 30.0),
    ];
    let mut new = vec![
        record("gw", GW, "m@1", "run-22", 15.0),
        record("gw", GW, "n@1", "run-22", 30.0),
    ];
    let by_model = Options {
        by_model: true,
        ..options(Metric::P50)
    };
    let c = compare("run-1", &old, "run-22", &new, by_model).unwrap();
    assert_eq!(c.rows.len(), 2);
    let m = c.rows.iter().find(|r| r.a.as_ref().unwrap().model == "m@1");
    assert_eq!(m.unwrap().verdict, Verdict::Worse);
    // Within one side, the newest run of a class is the one compared.
    new.push(record("gw", GW, "m@1", "run-333", 10.0));
    let side = compare("m", &old[..1], "m", &new[..1], options(Metric::P50)).unwrap();
    assert_eq!(side.rows[0].verdict, Verdict::Worse);
    let newest_b: Vec<_> = new.iter().filter(|r| r.model == "m").cloned().collect();
    let c = compare("m", &old[..1], "m", &newest_b, options(Metric::P50)).unwrap();
    assert_eq!(c.rows[0].b.as_ref().unwrap().run_id, "run-333");
    assert_eq!(c.rows[0].verdict, Verdict::NoDifference);
}

#[test]
fn nothing_in_common_is_one_error() {
    let a = vec![record("pi", PI, "m@1", "r1", 10.0)];
    let b = vec![record("gw", GW, "m@2", "r1", 10.0)];
    let err = compare("m@1", &a, "m@2", &b, options(Metric::P50)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("m@1 and m@2 were never measured on a common device class"),
        "{text}"
    );
    assert!(text.contains("Cortex-A76") && text.contains("Intel Xeon"));
    assert!(!text.contains('\n'));
    assert!(matches!(
        Metric::parse("p42"),
        Err(CompareError::UnknownMetric(_))
    ));
    let bad = Options {
        threshold: 5.0,
        ..options(Metric::P50)
    };
    assert!(matches!(
        compare("a", &a, "b", &a, bad),
        Err(CompareError::BadThreshold(_))
    ));
}

#[test]
fn two_models_on_one_class_in_different_scenarios_are_told_apart_from_different_classes() {
    let a = vec![record("gw", GW, "m@1", "r1", 10.0)];
    let mut b = vec![record("gw", GW, "m@2", "r2", 10.0)];
    b[0].scenario = "offline".into();
    let text = compare("m@1", &a, "m@2", &b, options(Metric::P50))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("same device class but never in the same scenario")
            && text.contains("m@1: single-stream")
            && text.contains("m@2: offline"),
        "{text}"
    );
    assert!(!text.contains("common device class"), "{text}");
}

#[test]
fn a_corrupt_histogram_names_the_run() {
    let a = vec![record("gw", GW, "m@1", "r1", 10.0)];
    let mut b = vec![record("gw", GW, "m@2", "r9", 10.0)];
    b[0].latency_histogram_hdr = "AAAA".into();
    let err = compare("a", &a, "b", &b, options(Metric::P50)).unwrap_err();
    assert!(err.to_string().starts_with("run r9 of m@2: "), "{err}");
}
