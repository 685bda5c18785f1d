//! End-to-end: comparisons, baselines and regressions on real measurements. A real agent runs the
//! real MiniLM-L6 fp32 and int8 models; `compare` must find int8 faster with an interval that
//! excludes 1. The agent is then made slower for real — a busy process pinned to its CPU, the
//! noisy neighbour behind many real regressions — and the next run of the suite must be flagged
//! against the baseline, listed, logged and acknowledged.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use edgefleet_e2e::{start_agent, Controller, StateIn};
use serde_json::Value;

const SUITE: &str = r#"
name = "nightly"
models = ["minilm-l6@fp32", "minilm-l6@int8"]

[input]
text = ["The firmware update failed because the device ran out of disk space.", "Is the store open on Sunday?"]

[[scenario]]
kind = "single-stream"
threads = [1]
warmup = 5
min_queries = 100
min_duration_s = 1.5
max_duration_s = 10
repetitions = 2

[quality]
reference = "minilm-l6@fp32"
metric = "cosine"
golden = ["A sudden frost damaged most of the apple blossoms.", "How many passengers took the early train?"]
"#;

/// The last CPU of this machine, the one the agent and the noisy neighbour share.
fn last_cpu() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n - 1).to_string()
}

/// Pins every thread of `pid` (and what it starts later) to `cpu`.
fn pin(pid: u32, cpu: &str) {
    let status = Command::new("taskset")
        .args(["-a", "-c", "-p", cpu, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset failed for {pid}");
}

/// A busy loop pinned to `cpu`, killed when dropped.
struct NoisyNeighbour(Child);

impl NoisyNeighbour {
    fn start(cpu: &str) -> NoisyNeighbour {
        NoisyNeighbour(
            Command::new("taskset")
                .args(["-c", cpu, "sh", "-c", "while :; do :; done"])
                .spawn()
                .expect("start a busy loop"),
        )
    }
}

impl Drop for NoisyNeighbour {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(ctl: &Controller, args: &[&str]) -> Value {
    serde_json::from_str(&ctl.cli_ok(args)).unwrap()
}

/// Runs the suite and waits: its run id, and what `bench run --wait` said on stderr.
fn run_suite_saying(ctl: &Controller, suite: &std::path::Path) -> (String, String) {
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap(), "--wait", "--json"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    let records: Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    (records[0]["run_id"].as_str().unwrap().to_string(), said)
}

fn run_suite(ctl: &Controller, suite: &std::path::Path) -> String {
    run_suite_saying(ctl, suite).0
}

/// Fails with the command's output unless it failed with one line containing `want`.
fn refused(ctl: &Controller, args: &[&str], want: &str) {
    let out = ctl.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(want), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
}

#[test]
fn int8_is_faster_and_a_slowed_agent_regresses_against_the_baseline() {
    compare_and_regress(StateIn::Sqlite)
}

#[test]
fn int8_is_faster_and_a_slowed_agent_regresses_on_postgresql_and_s3() {
    compare_and_regress(StateIn::postgres_and_s3())
}

fn compare_and_regress(state: StateIn) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_in(dir.path(), "127.0.0.1:0", &state, &[]);
    let agent = start_agent(dir.path(), &ctl, "edge-a", &["site=lab"]);
    ctl.wait_online(&["edge-a"], Duration::from_secs(60));
    let cpu = last_cpu();
    pin(agent.child.id(), &cpu);
    for quant in ["fp32", "int8"] {
        ctl.add_cached_model(
            &format!("models/minilm-l6/model.{quant}.onnx"),
            "minilm-l6",
            quant,
        );
    }
    let suite = dir.path().join("nightly.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let first = run_suite(&ctl, &suite);

    // int8 against fp32 on this device class: faster beyond noise, a little quality given up.
    let c = json(
        &ctl,
        &["compare", "minilm-l6@fp32", "minilm-l6@int8", "--json"],
    );
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{c:#}");
    let row = &rows[0];
    assert_eq!(row["verdict"], "better", "{row:#}");
    assert_eq!(row["verdict_text"], "faster");
    let ratio = row["ratio"].as_f64().unwrap();
    let (lo, hi) = (
        row["ci95"][0].as_f64().unwrap(),
        row["ci95"][1].as_f64().unwrap(),
    );
    assert!(lo <= ratio && ratio <= hi && hi < 1.0, "{row:#}");
    assert!(row["device_class"]
        .as_str()
        .unwrap()
        .contains("onnxruntime 1.31.1"));
    let quality_delta = row["quality_delta"].as_f64().unwrap();
    assert!(
        (-0.02..0.0).contains(&quality_delta),
        "int8 keeps ~0.994 cosine: {row:#}"
    );
    assert!(row["memory_delta_bytes"].as_i64().is_some());
    let text = ctl.cli_ok(&["compare", "minilm-l6@fp32", "minilm-l6@int8"]);
    assert!(text.contains("faster") && text.contains("95% CI"), "{text}");
    // No energy sensor here: the answer is "not measured", never a ratio or "no difference".
    let energy = json(
        &ctl,
        &[
            "compare",
            "minilm-l6@fp32",
            "minilm-l6@int8",
            "--metric",
            "energy",
            "--json",
        ],
    );
    assert_eq!(energy["rows"][0]["verdict"], "metric_not_measured");
    assert!(energy["rows"][0]["ratio"].is_null());

    let baselines = ctl.cli_ok(&["baseline", "set", "nightly"]);
    assert!(baselines.contains(&first), "{baselines}");
    let listed = json(&ctl, &["baseline", "ls", "--json"]);
    assert_eq!(listed[0]["run_id"], first.as_str(), "{listed:#}");

    // The same suite on a device that now shares its CPU with a busy process.
    let (second, said) = {
        let _neighbour = NoisyNeighbour::start(&cpu);
        run_suite_saying(&ctl, &suite)
    };
    // bench run --wait says which jobs started and which regressions the run set off.
    assert!(said.contains("started"), "{said}");
    assert!(said.contains("REGRESSION minilm-l6@"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let found = json(&ctl, &["regressions", "--json"]);
        if found.as_array().is_some_and(|f| !f.is_empty()) {
            break found;
        }
        assert!(Instant::now() < deadline, "no regression was found");
        std::thread::sleep(Duration::from_millis(300));
    };
    let found = found.as_array().unwrap();
    assert!(
        found.iter().all(|r| r["run_id"] == second.as_str()
            && r["kind"] == "baseline"
            && r["against"] == first.as_str()
            && r["ratio"].as_f64().unwrap() > 1.05
            && r["ci_low"].as_f64().unwrap() > 1.0),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|r| r["metric"] == "p90"),
        "a CPU shared with a busy loop slows the tail: {found:#?}"
    );
    ctl.process
        .wait_for_log("regression", Duration::from_secs(10));
    let compared = json(&ctl, &["compare", &first, &second, "--json"]);
    for row in compared["rows"].as_array().unwrap() {
        assert!(
            row["a"]["model"] == row["b"]["model"],
            "runs compare model by model: {row:#}"
        );
    }
    let id = found[0]["id"].as_i64().unwrap().to_string();
    let acked = json(&ctl, &["regressions", "--ack", &id, "--json"]);
    assert!(acked["acknowledged_at"].is_string(), "{acked:#}");
    let after = json(&ctl, &["regressions", "--json"]);
    assert!(after[0]["acknowledged_at"].is_string() || after[1]["acknowledged_at"].is_string());
    let since_later = json(
        &ctl,
        &["regressions", "--since", "2099-01-01T00:00:00Z", "--json"],
    );
    assert_eq!(since_later, serde_json::json!([]));

    // A report of the suite over the last day holds both runs.
    let out = dir.path().join("report");
    let printed = ctl.cli_ok(&[
        "report",
        "--out",
        out.to_str().unwrap(),
        "--suite",
        "nightly",
        "--since",
        "1d",
        "--select",
        "site=lab",
    ]);
    assert!(printed.starts_with("4 results"), "{printed}");
    // The real report, with its regressions and baseline, read as a person would.
    let seen =
        edgefleet_e2e::browser::check_report(&out.join("report.html"), &dir.path().join("shots"));
    seen.assert_ok();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains(&second) && html.contains(&first),
        "both runs are in the report"
    );
    assert!(
        html.contains("<h3>Regressions (newest first)</h3>") && html.contains("baseline"),
        "the report marks the regression and the baseline"
    );
    if let Ok(keep) = std::env::var("EDGEFLEET_KEEP_REPORT") {
        let keep = std::path::Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for f in ["report.html", "summary.md"] {
            std::fs::copy(out.join(f), keep.join(f)).unwrap();
        }
        std::fs::copy(&seen.screenshot, keep.join("screen.png")).unwrap();
        std::fs::copy(&seen.full_screenshot, keep.join("full.png")).unwrap();
    }
    let empty = dir.path().join("empty");
    refused(
        &ctl,
        &[
            "report",
            "--out",
            empty.to_str().unwrap(),
            "--suite",
            "nightly",
            "--select",
            "site=elsewhere",
        ],
        "no results match --suite nightly --select site=elsewhere; nothing written",
    );
    assert!(!empty.exists(), "nothing written");
    refused(
        &ctl,
        &[
            "report",
            "--out",
            empty.to_str().unwrap(),
            "--run",
            "run-nosuch",
        ],
        "no run run-nosuch",
    );
    assert!(!empty.exists(), "nothing written");

    // Bad input: one line each, nothing changed.
    refused(
        &ctl,
        &["compare", "minilm-l6@fp32", "nosuch@1"],
        "no model version nosuch@1 is registered",
    );
    refused(
        &ctl,
        &["compare", "minilm-l6@fp32", &first],
        "not one of each",
    );
    refused(
        &ctl,
        &[
            "compare",
            "minilm-l6@fp32",
            "minilm-l6@int8",
            "--suite",
            "other",
        ],
        "minilm-l6@fp32 has no results in suite other",
    );
    refused(
        &ctl,
        &["baseline", "set", "other"],
        "suite other has no run with results yet",
    );
    refused(
        &ctl,
        &["regressions", "--ack", "9999"],
        "no regression 9999",
    );
    refused(
        &ctl,
        &["regressions", "--since", "soon"],
        "neither an RFC 3339 time",
    );
}
