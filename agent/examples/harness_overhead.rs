//! Benchmark program: edgefleet's single-stream harness against a plain Python loop around
//! `onnxruntime.InferenceSession.run` (timed with `perf_counter`), same model, input, threads and
//! query count, measured in the same run. Prints the ratio of medians (goal ≤ 1.00) and, on a
//! one-Add model, the harness's cost per query beyond ONNX Runtime's own (goal < 5 µs).
//!
//!     bash scripts/setup.sh
//!     cargo run --release -p edgefleet-agent --example harness_overhead [-- ROUNDS]
//!
//! Rounds alternate the two harnesses so drift on a shared machine hits both alike.

use std::path::Path;
use std::process::Command;

use edgefleet_agent::worker::protocol::WorkerJob;

mod common;
use edgefleet_agent::worker::run_job;

const SENTENCES: [&str; 4] = [
    "The firmware update failed because the device ran out of disk space.",
    "Is the store on Main Street open on Sunday mornings?",
    "Quantized models trade a little accuracy for a large cut in memory and latency.",
    "Please reset the thermostat in meeting room four.",
];

fn main() {
    if let Ok(job) = std::env::var("EDGEFLEET_HARNESS_CHILD") {
        return run_child(&job);
    }
    let rounds = common::rounds();
    let (root, cache) = common::root_and_cache();
    let need = |p: &str| common::need(&cache, p);
    let library = need("lib/libonnxruntime.so.1.31.1");
    let tokenizer = need("models/minilm-l6/tokenizer.json");
    let cases = [
        (
            "MiniLM-L6 int8",
            need("models/minilm-l6/model.int8.onnx"),
            2000u32,
        ),
        (
            "MiniLM-L6 fp32",
            need("models/minilm-l6/model.fp32.onnx"),
            1000,
        ),
        ("one Add", need("models/tiny/add.onnx"), 50_000),
    ];
    println!("harness overhead: edgefleet worker loop vs Python onnxruntime loop, 1 thread, {rounds} alternating rounds");
    println!(
        "{:<16} {:>9} {:>14} {:>14} {:>8}",
        "model", "queries", "edgefleet p50", "python p50", "ratio"
    );
    for (name, model, queries) in cases {
        let job = WorkerJob {
            warmup_queries: 50,
            min_queries: queries,
            ..common::job(
                &library,
                &model,
                &tokenizer,
                SENTENCES.iter().map(|s| s.to_string()).collect(),
                "single-stream",
            )
        };
        let job_file =
            std::env::temp_dir().join(format!("edgefleet-harness-{}.json", std::process::id()));
        std::fs::write(&job_file, serde_json::to_vec(&job).unwrap()).unwrap();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ours.push(our_p50(&job));
            theirs.push(python_p50(&root, &cache, &job_file));
        }
        let _ = std::fs::remove_file(&job_file);
        let (o, t) = (median(&mut ours), median(&mut theirs));
        println!(
            "{name:<16} {queries:>9} {:>11.1} µs {:>11.1} µs {:>8.3}",
            o * 1000.0,
            t * 1000.0,
            o / t
        );
        if name == "one Add" {
            println!("per-query cost of the edgefleet loop on a one-Add model: {:.2} µs (ONNX Runtime's run included; goal < 5 µs of harness on top)", o * 1000.0);
        }
    }
}

/// Runs our harness in a child process (each run needs a fresh ONNX Runtime environment).
fn our_p50(job: &WorkerJob) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .env(
            "EDGEFLEET_HARNESS_CHILD",
            serde_json::to_string(job).unwrap(),
        )
        .output()
        .expect("run the harness child");
    assert!(
        out.status.success(),
        "harness child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a p50 in ms")
}

fn python_p50(root: &Path, cache: &Path, job_file: &Path) -> f64 {
    let out = Command::new("python3")
        .arg(root.join("scripts/peer_ort_loop.py"))
        .arg(job_file)
        .env("PYTHONPATH", cache.join("python"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    v["p50_ms"].as_f64().unwrap()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len().div_ceil(2) - 1]
}

/// The child side: one run of the worker's measurement loop, printing its p50 in ms.
fn run_child(job: &str) {
    let job: WorkerJob = serde_json::from_str(job).unwrap();
    let report = run_job(&job).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", report.latency_ms.p50);
}
