//! The HTML report as a person sees it: a realistic fleet's report (three device classes, one
//! aarch64; fp32, int8 and q4 models; a generative model; energy on some targets only; four
//! runs over a week with a regression and a baseline; a rollout with gate decisions) and an
//! empty one, written by `edgefleet_reports::write_report` and opened in headless Chromium
//! at 1400 px (`edgefleet_e2e::browser`). Needs Debian's `chromium` (scripts/setup_packaging.sh).

use std::collections::BTreeMap;
use std::path::Path;

use edgefleet_e2e::browser::check_report;
use edgefleet_reports::{
    write_report, AgentSummary, BaselineMark, FailedRun, GateDecision, GenerateDetail, LatencyCi,
    LatencyMs, RegressionMark, ReportFiles, ReportInput, ResultRecord, RolloutSummary,
    TemperatureC,
};

const DAY: i64 = 86_400_000;
/// 2025-06-02T06:00:00Z.
const START_MS: i64 = 1_748_844_000_000;

struct Agent {
    name: &'static str,
    target: &'static str,
    /// Latency multiplier against the x86 desktop.
    slowness: f64,
    energy: Option<&'static str>,
}

const AGENTS: [Agent; 3] = [
    Agent {
        name: "edge-a",
        target: "x86_64/Intel Xeon E-2236/6c/16GiB",
        slowness: 1.0,
        energy: Some("rapl"),
    },
    Agent {
        name: "pi5-kitchen",
        target: "aarch64/Cortex-A76/4c/8GiB",
        slowness: 3.4,
        energy: None,
    },
    Agent {
        name: "nuc-lab",
        target: "x86_64/Intel Core i5-1240P/12c/16GiB",
        slowness: 1.3,
        energy: Some("rapl"),
    },
];

/// (name, version, quantization, MB, p50 ms on edge-a, top-1 agreement vs fp32).
type Model = (
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
    Option<f64>,
);

const MODELS: [Model; 6] = [
    ("resnet50", "1.0-fp32", "fp32", 102.2, 21.0, None),
    ("resnet50", "1.0-int8", "int8", 25.9, 9.5, Some(0.994)),
    ("resnet50", "1.0-q4", "q4", 14.1, 12.0, Some(0.962)),
    ("mobilenetv3-large", "2.1-fp32", "fp32", 21.9, 3.1, None),
    (
        "mobilenetv3-large",
        "2.1-int8",
        "int8",
        5.6,
        1.6,
        Some(0.991),
    ),
    ("minilm-l6-v2", "1-int8", "int8", 22.7, 2.4, Some(0.987)),
];

fn record(agent: &Agent, model: usize, threads: u32, run: usize) -> ResultRecord {
    let (name, version, quant, mb, p50_base, agreement) = MODELS[model];
    // Run 4 on the Pi is slower for resnet50 int8: the regression the report marks.
    let drift = if run == 3 && agent.name == "pi5-kitchen" && model == 1 {
        1.31
    } else {
        1.0 + 0.02 * ((run * 7 + model) % 3) as f64
    };
    let p50 = p50_base * agent.slowness * drift * if threads == 1 { 2.7 } else { 1.0 };
    let percentiles: Vec<f64> = (0..=100)
        .map(|i| {
            let q = f64::from(i) / 100.0;
            p50 * (0.8 + 0.4 * q + 0.9 * q.powi(12))
        })
        .collect();
    let at = |p: usize| percentiles[p];
    let reference = format!(
        "{name}@{}",
        version.replace("int8", "fp32").replace("q4", "fp32")
    );
    let energy = agent.energy.map(|_| p50 * 0.011);
    ResultRecord {
        agent: agent.name.into(),
        agent_id: format!("{}-0001", agent.name),
        target: agent.target.into(),
        labels: BTreeMap::from([("site".into(), "lab".into())]),
        model: name.into(),
        model_version: version.into(),
        quantization: quant.into(),
        model_sha256: "ab".repeat(32),
        model_bytes: (mb * 1e6) as u64,
        engine: "onnxruntime".into(),
        engine_version: "1.31.1".into(),
        execution_provider: "CPU".into(),
        threads,
        scenario: "single-stream".into(),
        samples: 2048,
        duration_s: 30.2,
        valid: true,
        load_ms: 80.0 + mb,
        first_inference_ms: p50 * 3.0,
        latency_ms: LatencyMs {
            p50: at(50),
            p90: at(90),
            p95: at(95),
            p99: at(99),
            p999: at(100),
            max: at(100),
            mean: at(50) * 1.03,
            stddev: p50 * 0.08,
        },
        throughput_per_s: 1000.0 / at(50),
        peak_rss_bytes: (mb * 1.6e6) as u64 + 40_000_000,
        cpu_percent: Some(97.0),
        energy_j_per_inference: energy,
        energy_method: Some(agent.energy.unwrap_or("none").into()),
        temperature_c: Some(TemperatureC {
            start: 44.0,
            max: 58.5,
        }),
        throttled: Some(false),
        ttft_ms: None,
        tpot_ms: None,
        prefill_tokens_per_s: None,
        decode_tokens_per_s: None,
        quality: agreement.map(|a| {
            BTreeMap::from([
                ("top1_agreement".into(), a),
                ("cosine_mean".into(), 0.998),
                ("cosine_min".into(), 0.97),
                ("kl_mean".into(), 0.004),
            ])
        }),
        started_at: edgefleet_reports::rfc3339(START_MS + run as i64 * 2 * DAY),
        run_id: format!("run-2025-06-{:02}", 2 + run * 2),
        suite: "vision-nightly".into(),
        suite_sha256: "cd".repeat(32),
        agent_version: "0.1.0".into(),
        latency_percentiles_ms: percentiles.clone(),
        latency_ci95_ms: LatencyCi {
            p50: [at(50) * 0.98, at(50) * 1.02],
            p90: [at(90) * 0.97, at(90) * 1.03],
        },
        repetition_medians_ms: vec![at(50); 3],
        repetition_cv: Some(0.012),
        latency_histogram_hdr: String::new(),
        samples_per_query: 1,
        server: None,
        early_stopping: None,
        energy_sample_hz: agent.energy.map(|_| 10.0),
        idle_power_w: agent.energy.map(|_| 8.5),
        active_power_w: agent.energy.map(|_| 31.0),
        energy_note: None,
        cool_down_wait_s: 0.0,
        quality_reference: agreement.map(|_| reference),
        quality_error: None,
        kernel: "6.1.0-28".into(),
        cpu_governor: "performance".into(),
        cpu_model: agent.target.split('/').nth(1).unwrap_or("").into(),
        generate: None,
    }
}

/// A generative model's run: TTFT, TPOT and decode speed.
fn generative(agent: &Agent, run: usize) -> ResultRecord {
    let mut r = record(agent, 5, 4, run);
    r.model = "smollm2-135m-instruct".into();
    r.model_version = "1-q4".into();
    r.quantization = "q4".into();
    r.model_bytes = 118_000_000;
    r.scenario = "generate".into();
    r.quality = None;
    r.quality_reference = None;
    let slow = agent.slowness;
    r.ttft_ms = Some(62.0 * slow);
    r.tpot_ms = Some(14.0 * slow);
    r.prefill_tokens_per_s = Some(520.0 / slow);
    r.decode_tokens_per_s = Some(1000.0 / (14.0 * slow));
    r.generate = Some(GenerateDetail {
        prompt_tokens: 32,
        generated_tokens: 64,
        ttft_p90_ms: 71.0 * slow,
        tpot_p90_ms: 15.5 * slow,
        tokenize_ms: 0.3,
        kv_cache_in_place: true,
    });
    r.energy_j_per_inference = r.energy_j_per_inference.map(|_| 0.9 * slow);
    r
}

fn realistic() -> ReportInput {
    let mut records = Vec::new();
    for run in 0..4 {
        for agent in &AGENTS {
            for model in 0..MODELS.len() {
                records.push(record(agent, model, 4, run));
                if agent.name == "edge-a" && run == 3 {
                    records.push(record(agent, model, 1, run));
                }
            }
            records.push(generative(agent, run));
        }
    }
    let pi = records
        .iter()
        .find(|r| {
            r.agent == "pi5-kitchen" && r.run_id == "run-2025-06-08" && r.quantization == "int8"
        })
        .expect("the Pi's int8 record of run 4")
        .clone();
    let class = pi.device_class();
    ReportInput {
        title: "edgefleet benchmark report: vision-nightly since 2025-06-01".into(),
        generated_at: "2025-06-09T07:00:00.000Z".into(),
        agents: AGENTS
            .iter()
            .map(|a| AgentSummary {
                name: a.name.into(),
                target: a.target.into(),
                labels: BTreeMap::from([("site".into(), "lab".into())]),
                hardware: format!("{}, Debian 12, Linux 6.1, ONNX Runtime 1.31.1", a.target),
            })
            .collect(),
        records,
        failures: vec![FailedRun {
            agent: "pi5-kitchen".into(),
            model: "yolov8n".into(),
            model_version: "8.1-fp32".into(),
            scenario: "offline".into(),
            threads: 4,
            error: "worker ran out of memory after 312 MB (limit 300 MB)".into(),
            run_id: "run-2025-06-08".into(),
        }],
        rollouts: vec![RolloutSummary {
            id: "ro-7".into(),
            model: "resnet50@1.0-int8".into(),
            state: "aborted".into(),
            reason: "performance gate breached on pi5-kitchen in wave 2: p90 1.310×".into(),
            gate: "p90 <= 1.10×, quality >= 0.99".into(),
            started_at: "2025-06-08T09:00:00.000Z".into(),
            agents: 3,
            agents_done: 1,
            gates: vec![
                gate(1, "edge-a", "p90", 1.02, "<=", 1.1, "passed"),
                gate(1, "edge-a", "quality", 0.994, ">=", 0.99, "passed"),
                gate(2, "pi5-kitchen", "p90", 1.31, "<=", 1.1, "breached"),
                gate(2, "pi5-kitchen", "quality", 0.993, ">=", 0.99, "passed"),
            ],
        }],
        regressions: vec![RegressionMark {
            id: 3,
            run_id: pi.run_id.clone(),
            suite: pi.suite.clone(),
            model: pi.model_ref(),
            scenario: pi.scenario.clone(),
            device_class: class.clone(),
            metric: "p90".into(),
            ratio: 1.31,
            ci95: Some([1.24, 1.38]),
            robust_z: Some(5.8),
            kind: "baseline".into(),
            acknowledged: false,
            detected_at: "2025-06-08T06:40:00.000Z".into(),
        }],
        baselines: vec![BaselineMark {
            suite: pi.suite.clone(),
            device_class: class,
            run_id: "run-2025-06-02".into(),
            set_at: "2025-06-02T08:00:00.000Z".into(),
        }],
        quality_floor: None,
    }
}

fn gate(
    wave: u32,
    agent: &str,
    metric: &str,
    value: f64,
    cmp: &str,
    limit: f64,
    outcome: &str,
) -> GateDecision {
    GateDecision {
        wave,
        agent: agent.into(),
        metric: metric.into(),
        value: Some(value),
        comparison: cmp.into(),
        limit,
        outcome: outcome.into(),
        detail: String::new(),
    }
}

/// The exported files exist and parse: PNGs, summary.md, results.csv (a row per record).
fn check_exports(files: &ReportFiles, records: usize) {
    for png in &files.charts {
        let bytes = std::fs::read(png).expect("chart PNG");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
    }
    let md = std::fs::read_to_string(&files.markdown).expect("summary.md");
    assert!(md.starts_with("# "), "{md}");
    let csv = std::fs::read_to_string(&files.csv).expect("results.csv");
    assert_eq!(
        rows(&csv),
        records + 1,
        "results.csv: a header and a row per record"
    );
    let json = std::fs::read_to_string(&files.json).expect("results.json");
    let back: Vec<ResultRecord> = serde_json::from_str(&json).expect("results.json parses");
    assert_eq!(back.len(), records);
}

/// CSV records in RFC 4180 text (line breaks inside quotes belong to a cell).
fn rows(csv: &str) -> usize {
    let (mut quoted, mut rows) = (false, 0);
    let mut header_cells = None;
    let mut cells = 1;
    for c in csv.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => cells += 1,
            '\n' if !quoted => {
                let expected = *header_cells.get_or_insert(cells);
                assert_eq!(
                    cells, expected,
                    "row {rows} has {cells} cells, the header {expected}"
                );
                rows += 1;
                cells = 1;
            }
            _ => {}
        }
    }
    assert!(!quoted, "an unterminated quote");
    rows
}

fn shots_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("edgefleet-report-{name}-"))
        .tempdir()
        .expect("temp dir")
}

#[test]
fn realistic_report_reads_well_in_chromium() {
    let input = realistic();
    let dir = shots_dir("realistic");
    let files = write_report(dir.path(), &input).expect("the report is written");
    check_exports(&files, input.records.len());
    let seen = check_report(&files.html, &dir.path().join("shots"));
    println!(
        "screenshots: {} and {}",
        seen.screenshot.display(),
        seen.full_screenshot.display()
    );
    keep_if_asked(dir.path());
    seen.assert_ok();
    let want = [
        "cdf",
        "decode",
        "energy",
        "energy-token",
        "heatmap",
        "latency",
        "memory",
        "pareto",
        "rollout",
        "threads",
        "tpot",
        "trend",
        "ttft",
    ];
    assert_eq!(seen.kinds(), want, "the charts the report should have");
    assert_eq!(seen.charts.len(), files.charts.len(), "a PNG per chart");
    assert_eq!(
        seen.charts.iter().filter(|c| c.kind == "pareto").count(),
        4,
        "a Pareto chart per device class"
    );
    assert!(seen.text.contains("Summary"), "{}", seen.text);
}

#[test]
fn empty_report_says_there_are_no_results() {
    let input = ReportInput {
        title: "edgefleet benchmark report".into(),
        generated_at: "2025-06-09T07:00:00.000Z".into(),
        ..ReportInput::default()
    };
    let dir = shots_dir("empty");
    let files = write_report(dir.path(), &input).expect("an empty report is written");
    check_exports(&files, 0);
    assert!(files.charts.is_empty());
    let seen = check_report(&files.html, &dir.path().join("shots"));
    println!("screenshot: {}", seen.screenshot.display());
    keep_if_asked(dir.path());
    seen.assert_ok();
    assert!(seen.text.contains("No results"), "{}", seen.text);
    assert!(seen.charts.is_empty());
}

#[test]
fn the_checker_sees_what_a_reader_would() {
    // Today's complaint in small: nineteen columns squeezed until words break a letter a line,
    // a page wider than the window, a blank chart and a console error.
    let dir = shots_dir("bad");
    let page = dir.path().join("bad.html");
    let cells: String = (0..19)
        .map(|i| format!("<td>edge-a-column-{i}</td>"))
        .collect();
    std::fs::write(
        &page,
        format!(
            "<!DOCTYPE html><html><head><style>td{{overflow-wrap:anywhere}}</style></head><body>\
             <table style=\"width:600px\"><tr>{cells}</tr></table>\
             <div style=\"width:2400px\">wide</div>\
             <figure class=\"chart\" id=\"blank\" data-chart=\"pareto\">\
             <svg width=\"10\" height=\"10\"></svg></figure>\
             <script>console.error('boom')</script></body></html>"
        ),
    )
    .expect("write the bad page");
    let seen = check_report(&page, &dir.path().join("shots"));
    let all = seen.problems.join("\n");
    for expected in [
        "words break across lines",
        "wider than the window",
        "scrolls sideways",
        "blank or tiny",
        "boom",
    ] {
        assert!(
            all.contains(expected),
            "the checker missed {expected:?}:\n{all}"
        );
    }
}

/// With `EDGEFLEET_KEEP_REPORT=DIR`, copies the report and its screenshots there to look at.
fn keep_if_asked(from: &Path) {
    let Some(to) = std::env::var_os("EDGEFLEET_KEEP_REPORT") else {
        return;
    };
    let to = Path::new(&to).join(from.file_name().expect("named"));
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(&to)
        .status()
        .expect("cp");
    assert!(status.success());
    println!("kept in {}", to.display());
}
