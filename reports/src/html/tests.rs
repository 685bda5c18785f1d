//! Checks of the rendered report: content, escaping, the JSON export, and odd data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{
    write_report, AgentSummary, FailedRun, LatencyMs, ReportInput, ResultRecord, TemperatureC,
};

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("edgefleet-reports-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plausible record whose latencies grow from `p0_ms` with a tail: percentile i is
/// `p0_ms · (1 + i/200 + (i/100)^8)`, so p100 is 2.5 × p0.
fn edgefleet_reports_ci(p0_ms: f64) -> crate::LatencyCi {
    crate::LatencyCi {
        p50: [p0_ms * 1.4, p0_ms * 1.6],
        p90: [p0_ms * 1.8, p0_ms * 2.2],
    }
}

pub(crate) fn record(agent: &str, model: &str, p0_ms: f64, threads: u32) -> ResultRecord {
    let percentiles: Vec<f64> = (0..=100)
        .map(|i| {
            let q = f64::from(i) / 100.0;
            p0_ms * (1.0 + q / 2.0 + q.powi(8))
        })
        .collect();
    let at = |p: usize| percentiles[p];
    ResultRecord {
        agent: agent.to_string(),
        agent_id: format!("{agent}-id"),
        target: "x86_64/Intel Xeon/4c/8GiB".to_string(),
        labels: BTreeMap::from([("site".to_string(), "lab".to_string())]),
        model: model.to_string(),
        model_version: "1".to_string(),
        quantization: "int8".to_string(),
        model_sha256: "ab".repeat(32),
        model_bytes: 13_000_000,
        engine: "onnxruntime".to_string(),
        engine_version: "1.22.0".to_string(),
        execution_provider: "cpu".to_string(),
        threads,
        scenario: "single-stream".to_string(),
        samples: 1024,
        duration_s: 30.5,
        valid: true,
        load_ms: 120.0 + p0_ms,
        first_inference_ms: 3.0 * p0_ms,
        latency_ms: LatencyMs {
            p50: at(50),
            p90: at(90),
            p95: at(95),
            p99: at(99),
            p999: at(100),
            max: at(100),
            mean: at(50) * 1.02,
            stddev: p0_ms * 0.1,
        },
        throughput_per_s: 1000.0 / at(50),
        peak_rss_bytes: 80_000_000 + (p0_ms * 1e6) as u64,
        cpu_percent: None,
        energy_j_per_inference: None,
        energy_method: None,
        temperature_c: Some(TemperatureC {
            start: 41.0,
            max: 55.5,
        }),
        throttled: Some(false),
        ttft_ms: None,
        tpot_ms: None,
        prefill_tokens_per_s: None,
        decode_tokens_per_s: None,
        quality: None,
        started_at: "2025-06-01T12:00:00Z".to_string(),
        run_id: format!("run-{agent}-{model}-{threads}"),
        suite: "vision".to_string(),
        suite_sha256: "cd".repeat(32),
        agent_version: "0.1.0".to_string(),
        latency_percentiles_ms: percentiles,
        latency_ci95_ms: edgefleet_reports_ci(p0_ms),
        repetition_medians_ms: vec![p0_ms * 1.5; 3],
        repetition_cv: Some(0.0),
        latency_histogram_hdr: String::new(),
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
        kernel: "6.1.0".into(),
        cpu_governor: "performance".into(),
        cpu_model: "Cortex-A76".into(),
        generate: None,
    }
}

fn agent(name: &str, target: &str) -> AgentSummary {
    AgentSummary {
        name: name.to_string(),
        target: target.to_string(),
        labels: BTreeMap::from([
            ("rack".to_string(), "r1".to_string()),
            ("site".to_string(), "lab".to_string()),
        ]),
        hardware: "Intel Xeon E-2236, 6 cores, 16 GiB, Linux 6.8, ORT 1.22".to_string(),
    }
}

fn sample_input() -> ReportInput {
    ReportInput {
        title: "Nightly edge benchmark".to_string(),
        generated_at: "2025-06-01T13:00:00Z".to_string(),
        agents: vec![
            agent("pi5-kitchen", "aarch64/Cortex-A76/4c/8GiB"),
            agent("nuc-lab", "x86_64/i5-1240P/12c/16GiB"),
        ],
        records: vec![
            record("pi5-kitchen", "resnet50", 38.0, 4),
            record("pi5-kitchen", "mobilenetv3", 6.5, 4),
            record("nuc-lab", "resnet50", 9.2, 4),
            record("nuc-lab", "mobilenetv3", 1.4, 4),
        ],
        failures: vec![FailedRun {
            agent: "nuc-lab".to_string(),
            model: "yolov8n".to_string(),
            model_version: "2".to_string(),
            scenario: "offline".to_string(),
            threads: 4,
            error: "shape mismatch: expected <1x3x640x640> & got \"1x3x320x320\"".to_string(),
            run_id: "run-failed".to_string(),
        }],
        ..ReportInput::default()
    }
}

#[test]
fn rollouts_show_the_gate_ratios_that_decided_them() {
    let mut input = sample_input();
    input.rollouts = vec![crate::RolloutSummary {
        id: "ro-1".into(),
        model: "resnet50@2".into(),
        state: "aborted".into(),
        reason: "performance gate breached on nuc-lab: p90 2.310x".into(),
        gate: "p90<=1.10x".into(),
        agents: 2,
        gates: vec![crate::GateDecision {
            wave: 1,
            agent: "nuc-lab".into(),
            metric: "p90".into(),
            value: Some(2.31),
            comparison: "<=".into(),
            limit: 1.1,
            outcome: "breached".into(),
            detail: "9.2 ms vs 4.0 ms".into(),
        }],
        ..crate::RolloutSummary::default()
    }];
    let html = super::render(&input).unwrap();
    assert!(html.contains("<h2>Rollouts</h2>"));
    assert!(
        html.contains(
            "nuc-lab p90 2.310× (limit &lt;=1.10×)</span> <span class=\"badge breached\">breached</span>"
        ),
        "{html}"
    );
    assert!(html.contains("data-chart=\"rollout\""), "the gate's chart");
    assert!(!super::render(&sample_input()).unwrap().contains("Rollouts"));
}

#[test]
fn sample_report_has_tables_charts_failures_and_json() {
    let dir = TempDir::new();
    let input = sample_input();
    let files = write_report(&dir.0, &input).expect("report is written");
    let html = std::fs::read_to_string(&files.html).expect("report.html exists");

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>Nightly edge benchmark</title>"));
    assert!(html.contains("<h1>Nightly edge benchmark</h1>"));
    for name in ["pi5-kitchen", "nuc-lab"] {
        assert!(html.contains(name), "{name} missing");
        assert!(html.contains(&format!("{name}: latency distribution")));
    }
    for label in ["resnet50@1 (int8)", "mobilenetv3@1 (int8)"] {
        assert!(html.contains(label), "{label} missing");
    }
    assert!(html.contains("rack=r1, site=lab"));
    // One device class: its Pareto chart, the heatmap, the overview, one distribution per
    // agent, peak memory, and the p90 trend (four runs); no energy was measured.
    assert_eq!(html.matches("<svg").count(), 1 + 1 + 1 + 2 + 1 + 1);
    assert_eq!(files.charts.len(), 7);
    assert!(
        files.charts.iter().all(|p| p.is_file()),
        "{:?}",
        files.charts
    );
    let csv = std::fs::read_to_string(&files.csv).expect("results.csv exists");
    assert_eq!(csv.lines().count(), input.records.len() + 1);
    let md = std::fs::read_to_string(&files.markdown).expect("summary.md exists");
    assert!(
        md.contains("| model ") && md.contains("| resnet50@1 "),
        "{md}"
    );
    assert!(!html.contains("<?xml"));
    for external in ["<script", "<link", "<img", "src=", "@import", "url("] {
        assert!(!html.contains(external), "external reference {external}");
    }

    assert!(html.contains("Failed runs"));
    assert!(html.contains(
        "shape mismatch: expected &lt;1x3x640x640&gt; &amp; got &quot;1x3x320x320&quot;"
    ));
    assert!(!html.contains("<1x3x640x640>"));

    let json = std::fs::read_to_string(&files.json).expect("results.json exists");
    let back: Vec<ResultRecord> = serde_json::from_str(&json).expect("results.json parses");
    assert_eq!(back, input.records);
    assert!(json.contains("\"cpu_percent\": null"));
}

#[test]
fn empty_input_says_there_are_no_results() {
    let dir = TempDir::new();
    let input = ReportInput {
        title: "Empty <fleet>".to_string(),
        ..ReportInput::default()
    };
    let files = write_report(&dir.0, &input).expect("an empty report is written");
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert!(html.contains("<title>Empty &lt;fleet&gt;</title>"));
    assert!(html.contains("No results"));
    assert!(!html.contains("<svg"));
    assert!(!html.contains("Failed runs"));
    assert_eq!(std::fs::read_to_string(&files.json).unwrap().trim(), "[]");
}

#[test]
fn equal_percentiles_and_odd_values_render() {
    let dir = TempDir::new();
    let mut flat = record("solo", "tiny", 1.0, 1);
    flat.latency_percentiles_ms = vec![1.0; 101];
    flat.latency_ms.p50 = 1.0;
    flat.latency_ms.p90 = 1.0;
    let input = ReportInput {
        title: "Flat".to_string(),
        records: vec![flat.clone()],
        ..ReportInput::default()
    };
    let html = super::render(&input).expect("equal values render");
    // Pareto, heatmap, overview, distribution, memory.
    assert_eq!(html.matches("<svg").count(), 5);
    write_report(&dir.0, &input).expect("report is written");

    // Zeros, NaN, infinity, an empty distribution, a long name and several thread counts.
    let mut zero = record("solo", "tiny", 0.0, 4);
    zero.peak_rss_bytes = 0;
    let mut nan = record(&"very-long-agent-name-".repeat(8), "tiny", 2.0, 2);
    nan.latency_ms.p50 = f64::NAN;
    nan.latency_ms.p90 = f64::INFINITY;
    nan.latency_percentiles_ms[7] = f64::NAN;
    let mut empty = record("solo", "other", 3.0, 1);
    empty.latency_percentiles_ms.clear();
    let input = ReportInput {
        records: vec![flat, zero, nan, empty],
        ..ReportInput::default()
    };
    let html = super::render(&input).expect("odd values render");
    assert!(html.contains("tiny@1 (int8) · 4 threads"));
    assert!(html.contains("<td class=\"num\">–</td>"));
}

#[test]
fn generation_server_and_energy_sections_appear_when_there_is_data() {
    let mut bare = sample_input();
    for r in &mut bare.records {
        r.temperature_c = None;
    }
    let plain = super::render(&bare).unwrap();
    for heading in ["Generation", "Server scenario", "Energy and temperature"] {
        assert!(
            !plain.contains(&format!("<h2>{heading}</h2>")),
            "{heading} without data"
        );
    }
    let mut input = sample_input();
    let r = &mut input.records[0];
    r.scenario = "generate".into();
    r.ttft_ms = Some(83.0);
    r.tpot_ms = Some(11.5);
    r.prefill_tokens_per_s = Some(386.0);
    r.decode_tokens_per_s = Some(85.7);
    r.generate = Some(crate::GenerateDetail {
        prompt_tokens: 32,
        generated_tokens: 64,
        ttft_p90_ms: 90.0,
        tpot_p90_ms: 12.4,
        tokenize_ms: 0.2,
        kv_cache_in_place: true,
    });
    let s = &mut input.records[1];
    s.server = Some(crate::ServerOutcome {
        target_qps: 40.0,
        achieved_qps: 39.1,
        p99_bound_ms: 20.0,
        bound_met: false,
        peak_qps: Some(31.0),
    });
    s.energy_method = Some("rapl".into());
    s.energy_j_per_inference = Some(0.012);
    s.energy_note = Some("idle <power> & co".into());
    let html = super::render(&input).unwrap();
    assert!(
        html.contains("<h2>Generation</h2>") && html.contains("85.7"),
        "generation table"
    );
    assert!(
        html.contains("<h2>Server scenario</h2>") && html.contains("39.1"),
        "server table"
    );
    assert!(html.contains("<h2>Energy and temperature</h2>") && html.contains("rapl"));
    assert!(
        html.contains("idle &lt;power&gt; &amp; co"),
        "notes are escaped"
    );
}

#[test]
fn thirty_models_partial_energy_and_one_record_draw_without_panicking() {
    let dir = TempDir::new();
    let mut records: Vec<ResultRecord> = (0..30)
        .map(|i| {
            let mut r = record("edge-a", &format!("model-{i:02}"), 1.0 + f64::from(i), 1);
            r.model_bytes = 1_000_000 * (u64::from(i as u32) + 1);
            r.quantization = ["fp32", "int8", "q4"][i as usize % 3].into();
            if i % 4 == 0 {
                r.energy_j_per_inference = Some(0.01 * f64::from(i + 1));
                r.energy_method = Some("rapl".into());
            }
            r
        })
        .collect();
    records[3].latency_ms.p90 = f64::NAN;
    records[4].model_bytes = 0;
    records[5].throughput_per_s = 0.0;
    let input = ReportInput {
        records: records.clone(),
        ..ReportInput::default()
    };
    let files = write_report(&dir.0, &input).expect("thirty models render");
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(html.contains("data-chart=\"energy\""));
    assert!(html.contains("not measured"), "the gap is marked");
    for one in [&records[..1], &records[3..4]] {
        let mut r = one.to_vec();
        r[0].energy_j_per_inference = None;
        let input = ReportInput {
            records: r,
            ..ReportInput::default()
        };
        let html = super::render(&input).expect("one record renders");
        assert!(
            !html.contains("data-chart=\"energy\""),
            "no energy chart without energy"
        );
    }
}

#[test]
fn summary_regressions_and_baselines_are_shown() {
    let mut input = sample_input();
    let class = input.records[0].device_class();
    input.records[0].quantization = "fp32".into();
    input.records[2].quantization = "int8".into();
    input.records[2].agent = "pi5-kitchen".into();
    input.records[2].model_bytes = 4_000_000;
    input.records[2].model_version = "1-int8".into();
    input.records[2].quality = Some(BTreeMap::from([("top1_agreement".into(), 0.97)]));
    input.records[2].quality_reference = Some("resnet50@1".into());
    input.regressions = vec![crate::RegressionMark {
        id: 1,
        run_id: input.records[0].run_id.clone(),
        suite: "vision".into(),
        model: "resnet50@1".into(),
        scenario: "single-stream".into(),
        device_class: class.clone(),
        metric: "p90".into(),
        ratio: 1.31,
        ci95: Some([1.2, 1.4]),
        robust_z: Some(4.2),
        kind: "baseline".into(),
        acknowledged: false,
        detected_at: "2025-06-01T12:30:00Z".into(),
    }];
    input.baselines = vec![crate::BaselineMark {
        suite: "vision".into(),
        device_class: class,
        run_id: input.records[1].run_id.clone(),
        set_at: "2025-05-30T00:00:00Z".into(),
    }];
    let html = super::render(&input).unwrap();
    assert!(html.contains("<h2>Summary</h2>") && html.contains("<dt>Fastest</dt>"));
    assert!(html.contains("<dt>Quantization</dt>"), "{html}");
    assert!(
        html.contains("quality 0.970 (-3.0%, top-1 agreement)"),
        "{html}"
    );
    assert!(html.contains("<h3>Regressions (newest first)</h3>") && html.contains("1.31×"));
    assert!(html.contains("<h3>Baselines</h3>"));
}

#[test]
fn every_stored_workload_and_quality_metric_reaches_the_report() {
    let mut input = sample_input();
    // One suite generating from a 32- and a 128-token prompt: two settings, not one.
    let generate = |r: &mut ResultRecord, prompt: u32, decode: f64, started: &str| {
        r.suite = "slm-generate".into();
        r.scenario = "generate".into();
        r.ttft_ms = Some(f64::from(prompt) * 1.5);
        r.tpot_ms = Some(10.0);
        r.decode_tokens_per_s = Some(decode);
        r.started_at = started.into();
        r.generate = Some(crate::GenerateDetail {
            prompt_tokens: prompt,
            generated_tokens: 64,
            ttft_p90_ms: f64::from(prompt) * 2.0,
            tpot_p90_ms: 12.0,
            tokenize_ms: 0.2,
            kv_cache_in_place: true,
        });
    };
    let mut short = record("pi5-kitchen", "smollm2", 20.0, 1);
    generate(&mut short, 32, 101.5, "2025-06-01T12:00:00Z");
    let mut long = record("pi5-kitchen", "smollm2", 20.0, 1);
    generate(&mut long, 128, 97.25, "2025-06-01T12:01:00Z");
    // A VAD int8 run measured against fp32 (share of decisions alike), and OCR (text lines).
    let mut vad = record("nuc-lab", "silero-vad", 0.2, 1);
    vad.suite = "audio-vad".into();
    vad.quality_reference = Some("silero-vad@fp32".into());
    vad.quality = Some(BTreeMap::from([
        ("exact_match".to_string(), 0.9458),
        ("positive_rate".to_string(), 0.4),
    ]));
    let mut ocr = record("nuc-lab", "ppocr-rec", 3.0, 1);
    ocr.suite = "vision-ocr".into();
    ocr.quality_reference = Some("ppocr-rec@fp32".into());
    ocr.quality = Some(BTreeMap::from([
        ("text_exact_match".to_string(), 1.0),
        ("char_error_rate".to_string(), 0.0),
    ]));
    input.records.extend([short, long, vad, ocr]);
    let html = super::render(&input).unwrap();
    assert!(
        html.contains("101.5") && html.contains("97.25"),
        "both prompts' decode speeds"
    );
    assert!(html.contains("0.946 decisions alike"), "VAD quality named");
    assert!(
        html.contains("1.000 text lines read alike"),
        "OCR quality named"
    );
    assert!(
        html.contains("char_error_rate 0.0000"),
        "every metric in the full table"
    );
    assert!(html.contains("<td>audio-vad</td>"), "a suite column");
    assert!(html.contains("slm-generate · 32-token prompt"));
    assert!(html.contains("slm-generate · 128-token prompt"));
    let refs = crate::analysis::references(&input.records);
    let latest = crate::analysis::latest(&input.records);
    let md = crate::markdown::summary("t", &latest, &refs);
    assert!(
        md.contains("0.946 decisions alike") && md.contains("32-token prompt"),
        "{md}"
    );
}
