//! End-to-end: a real controller and two real agent processes on loopback benchmark the real
//! MiniLM-L6 models with real ONNX Runtime; results land in SQLite and in a report.

use std::time::Duration;

use edgefleet_e2e::{start_agent, Controller};

/// A short suite on both MiniLM variants.
const SUITE: &str = r#"
name = "e2e"
models = ["minilm-l6@fp32", "minilm-l6@int8"]

[input]
text = ["The firmware update failed because the device ran out of disk space.", "Is the store open on Sunday?"]

[[scenario]]
kind = "single-stream"
threads = [1]
warmup = 3
min_queries = 30
min_duration_s = 0.5
max_duration_s = 5
repetitions = 2

[quality]
reference = "minilm-l6@fp32"
metric = "cosine"
golden = ["A sudden frost damaged most of the apple blossoms.", "Our camera reports a blurry image after sunset.", "How many passengers took the early train?"]
"#;

fn register_models(ctl: &Controller) {
    for quant in ["fp32", "int8"] {
        ctl.add_cached_model(
            &format!("models/minilm-l6/model.{quant}.onnx"),
            "minilm-l6",
            quant,
        );
    }
}

#[test]
fn two_agents_benchmark_real_models_and_a_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _a = start_agent(dir.path(), &ctl, "edge-a", &["site=lab-a", "hw=x86"]);
    let _b = start_agent(dir.path(), &ctl, "edge-b", &["site=lab-b", "hw=x86"]);
    ctl.wait_online(&["edge-a", "edge-b"], Duration::from_secs(60));

    // The hello carried a hardware profile with the real runtime.
    for agent in ctl.agents() {
        assert_eq!(
            agent["hardware"]["onnxruntime_version"], "1.31.1",
            "{agent:#}"
        );
        assert!(agent["hardware"]["execution_providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "CPUExecutionProvider"));
        assert!(agent["hardware"]["cpu_cores"].as_u64().unwrap() >= 1);
        assert!(!agent["hardware"]["arch"].as_str().unwrap().is_empty());
        assert_eq!(agent["labels"]["hw"], "x86");
    }

    register_models(&ctl);
    let models: Vec<serde_json::Value> =
        serde_json::from_str(&ctl.cli_ok(&["models", "ls", "--json"])).unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["inputs"][0]["name"], "input_ids");
    assert_eq!(models[0]["opset"], 17);

    let suite = dir.path().join("e2e.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_str(&ctl.cli_ok(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--wait",
        "--json",
    ]))
    .unwrap();
    assert_eq!(records.len(), 4, "2 agents x 2 models: {records:#?}");
    for r in &records {
        let l = &r["latency_ms"];
        let (p50, p90, p99) = (
            l["p50"].as_f64().unwrap(),
            l["p90"].as_f64().unwrap(),
            l["p99"].as_f64().unwrap(),
        );
        assert!(
            0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= l["max"].as_f64().unwrap(),
            "{r:#}"
        );
        assert!(r["samples"].as_u64().unwrap() >= 30, "{r:#}");
        assert_eq!(r["valid"], true);
        assert!(
            r["peak_rss_bytes"].as_u64().unwrap() > r["model_bytes"].as_u64().unwrap(),
            "{r:#}"
        );
        assert!(r["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["load_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(r["engine"], "onnxruntime");
        assert_eq!(r["engine_version"], "1.31.1");
        assert_eq!(r["scenario"], "single-stream");
        assert_eq!(r["threads"], 1);
        assert_eq!(r["model_sha256"].as_str().unwrap().len(), 64);
        let ci = &r["latency_ci95_ms"];
        let bracket = |key: &str, value: f64| {
            let (lo, hi) = (ci[key][0].as_f64().unwrap(), ci[key][1].as_f64().unwrap());
            assert!(
                lo <= value && value <= hi,
                "{key} {value} outside [{lo}, {hi}]"
            );
        };
        bracket("p50", p50);
        bracket("p90", p90);
        assert_eq!(
            r["repetition_medians_ms"].as_array().unwrap().len(),
            2,
            "{r:#}"
        );
        assert!(r["repetition_cv"].as_f64().unwrap() >= 0.0);
        assert!(
            r["samples"].as_u64().unwrap() >= 60,
            "30 queries in each of 2 repetitions"
        );
        let early = &r["early_stopping"];
        assert_eq!(early["percentile"], 90.0);
        assert!(
            early["estimate_ms"].as_f64().unwrap() >= p90,
            "an upper estimate: {early:#}"
        );
        let hdr = r["latency_histogram_hdr"].as_str().unwrap();
        assert!(
            hdr.starts_with("HISTF"),
            "an HdrHistogram V2 deflate record: {hdr}"
        );
        // The agents read an empty sensor tree: unsupported is null with method none, never zero.
        assert!(r["energy_j_per_inference"].is_null(), "{r:#}");
        assert_eq!(r["energy_method"], "none");
        assert!(r["temperature_c"].is_null() && r["throttled"].is_null());
    }
    let fp32 = records
        .iter()
        .find(|r| r["model_version"] == "fp32")
        .unwrap();
    let int8 = records
        .iter()
        .find(|r| r["model_version"] == "int8")
        .unwrap();
    assert!(fp32["model_bytes"].as_u64().unwrap() > 3 * int8["model_bytes"].as_u64().unwrap());
    // The recipe measured a mean embedding cosine of 0.994 for this int8 model against fp32.
    assert!(
        fp32["quality"].is_null(),
        "the reference is not compared with itself"
    );
    assert_eq!(int8["quality_reference"], "minilm-l6@fp32");
    let cosine = int8["quality"]["cosine_mean"].as_f64().unwrap();
    assert!(
        (0.98..1.0).contains(&cosine),
        "int8 vs fp32 cosine {cosine}: {int8:#}"
    );
    assert!(int8["quality"]["cosine_min"].as_f64().unwrap() <= cosine);

    let report_dir = dir.path().join("report");
    ctl.cli_ok(&["report", "--out", report_dir.to_str().unwrap()]);
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("edge-a") && html.contains("edge-b") && html.contains("minilm-l6@int8"));
    assert!(html.matches("<svg").count() >= 3, "charts are inline SVG");
    let exported: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(exported.len(), 4);
    for key in [
        "agent",
        "target",
        "labels",
        "model",
        "model_version",
        "quantization",
        "model_sha256",
        "model_bytes",
        "engine",
        "execution_provider",
        "threads",
        "scenario",
        "samples",
        "duration_s",
        "valid",
        "load_ms",
        "first_inference_ms",
        "latency_ms",
        "throughput_per_s",
        "peak_rss_bytes",
        "cpu_percent",
        "energy_j_per_inference",
        "energy_method",
        "temperature_c",
        "throttled",
        "ttft_ms",
        "tpot_ms",
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "quality",
        "started_at",
        "run_id",
        "agent_version",
        "engine_version",
        "suite_sha256",
        "kernel",
        "cpu_governor",
    ] {
        assert!(exported[0].get(key).is_some(), "results.json lacks `{key}`");
    }

    // Results are in SQLite and survive a controller restart on the same data directory.
    drop(ctl);
}

#[test]
fn selection_picks_agents_by_label_and_an_empty_selection_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _a = start_agent(dir.path(), &ctl, "pi-1", &["hw=rpi5", "site=store-42"]);
    let _b = start_agent(dir.path(), &ctl, "pi-lab", &["hw=rpi5", "site=lab"]);
    ctl.wait_online(&["pi-1", "pi-lab"], Duration::from_secs(60));
    register_models(&ctl);
    let suite = dir.path().join("one.toml");
    std::fs::write(&suite, SUITE.replace("\"minilm-l6@fp32\", ", "")).unwrap();

    let out = ctl.cli(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--select",
        "hw=jetson",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no online agent matches hw=jetson"), "{err}");

    // A selector the parser does not understand is an error, never "everything".
    let out = ctl.cli(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--select",
        "hw=rpi5 site=lab",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("join conditions with commas"), "{err}");

    let records: Vec<serde_json::Value> = serde_json::from_str(&ctl.cli_ok(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--select",
        "hw=rpi5,site!=lab",
        "--wait",
        "--json",
    ]))
    .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["agent"], "pi-1");
    assert_eq!(records[0]["labels"]["hw"], "rpi5");
}

#[test]
fn agents_reconnect_after_a_controller_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let mut agent = start_agent(dir.path(), &ctl, "edge-r", &[]);
    ctl.wait_online(&["edge-r"], Duration::from_secs(60));
    let listen = ctl.listen.clone();
    drop(ctl);

    agent.wait_for_log("reconnecting", Duration::from_secs(20));
    assert!(
        agent.is_running(),
        "the agent must stay up while the controller is away"
    );
    let ctl = Controller::start(dir.path(), &listen);
    ctl.wait_online(&["edge-r"], Duration::from_secs(60));
    let agents = ctl.agents();
    assert_eq!(
        agents.len(),
        1,
        "the agent kept its id across the reconnect: {agents:#?}"
    );

    // A clean stop on SIGTERM.
    let status = agent
        .terminate(Duration::from_secs(15))
        .expect("agent stops on SIGTERM");
    assert!(status.success(), "{status}");
    edgefleet_e2e::wait_until("edge-r shown offline", Duration::from_secs(60), || {
        ctl.agents()[0]["online"] == false
    });
}

#[test]
fn an_agent_killed_mid_run_finishes_its_jobs_after_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent = start_agent(dir.path(), &ctl, "edge-k", &[]);
    ctl.wait_online(&["edge-k"], Duration::from_secs(60));
    register_models(&ctl);
    let suite = dir.path().join("e2e.toml");
    std::fs::write(&suite, SUITE).unwrap();

    let waiter = std::process::Command::new(edgefleet_e2e::binary("edgefleet"))
        .args(["bench", "run", suite.to_str().unwrap(), "--wait", "--json"])
        .env("EDGEFLEET_CONTROLLER", &ctl.address)
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    agent.wait_for_log("job started", Duration::from_secs(60));
    drop(agent); // SIGKILL: the first job is cut off, the second never started

    let _agent = start_agent(dir.path(), &ctl, "edge-k", &[]);
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        records.len(),
        2,
        "both jobs finished after the restart: {records:#?}"
    );
    ctl.process
        .wait_for_log("resending unfinished jobs", Duration::from_secs(1));
    assert_eq!(ctl.agents().len(), 1, "the restarted agent kept its id");
}

#[test]
fn multi_stream_offline_and_server_scenarios_and_a_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-s", &[]);
    ctl.wait_online(&["edge-s"], Duration::from_secs(60));
    register_models(&ctl);
    ctl.add_cached_model("models/tiny/add.onnx", "add-one", "1");
    let suite = dir.path().join("scenarios.toml");
    std::fs::write(
        &suite,
        r#"
name = "scenarios"
models = ["minilm-l6@int8", "add-one@1"]
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?", "Reset the thermostat."]
[[scenario]]
kind = "multi-stream"
samples_per_query = 4
min_queries = 20
min_duration_s = 0.3
[[scenario]]
kind = "offline"
batch_size = 8
min_queries = 10
min_duration_s = 0.3
[[scenario]]
kind = "server"
target_qps = 40
p99_bound_ms = 40
peak_search = true
min_queries = 20
min_duration_s = 0.5
"#,
    )
    .unwrap();
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap(), "--wait", "--json"]);
    // add-one has a fixed batch of 1: its batched scenarios fail, naming input and shapes.
    assert!(!out.status.success(), "two jobs must fail");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |model: &str, scenario: &str| {
        records
            .iter()
            .find(|r| r["model"] == model && r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {model} {scenario} record in {records:#?}"))
    };

    let multi = by("minilm-l6", "multi-stream");
    assert_eq!(multi["samples_per_query"], 4);
    let per_call = multi["samples"].as_f64().unwrap() / multi["duration_s"].as_f64().unwrap();
    let throughput = multi["throughput_per_s"].as_f64().unwrap();
    assert!(
        (throughput / per_call - 4.0).abs() < 0.01,
        "throughput counts samples: {multi:#}"
    );
    assert!(multi["server"].is_null());
    assert_eq!(by("minilm-l6", "offline")["samples_per_query"], 8);

    for model in ["minilm-l6", "add-one"] {
        let server = &by(model, "server")["server"];
        assert_eq!(server["target_qps"], 40.0);
        let achieved = server["achieved_qps"].as_f64().unwrap();
        assert!(
            (10.0..=60.0).contains(&achieved),
            "Poisson arrivals near 40/s (a busy machine stretches the run): {server:#}"
        );
        assert!(server["bound_met"].is_boolean());
        assert!(server["peak_qps"].as_f64().unwrap() > 0.0, "{server:#}");
    }
    let status = ctl.cli(&["report", "--out", dir.path().join("r").to_str().unwrap()]);
    assert!(status.status.success());
    let exported: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r/results.json")).unwrap())
            .unwrap();
    assert_eq!(exported.len(), 4, "4 measured, 2 failed");
    let html = std::fs::read_to_string(dir.path().join("r/report.html")).unwrap();
    assert!(
        html.contains("model input `input_ids` expects shape [1, ?] but the workload gives [4, "),
        "the failure names the input and both shapes"
    );
}

#[test]
fn a_result_finished_while_the_controller_was_away_survives_a_killed_agent() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent = start_agent(dir.path(), &ctl, "edge-o", &[]);
    ctl.wait_online(&["edge-o"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm-l6", "int8");
    let suite = dir.path().join("one.toml");
    std::fs::write(
        &suite,
        "name = \"one\"\nmodels = [\"minilm-l6@int8\"]\n[input]\ntext = [\"The firmware update failed.\"]\n[conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nmin_queries = 20\nmin_duration_s = 3\n",
    )
    .unwrap();
    // A first run leaves the model on the agent, so the second needs no controller once started.
    ctl.cli_ok(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    let run_id = ctl
        .cli_ok(&["bench", "run", suite.to_str().unwrap()])
        .trim()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while agent.log_text().matches("job started").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The controller goes away while the job runs; the job finishes with nobody to tell; then
    // the agent is killed (as a package upgrade, a crash or a power cut would).
    let listen = ctl.listen.clone();
    drop(ctl);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while agent.log_text().matches("job finished").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let unsent = || edgefleet_e2e::unsent_results(&dir.path().join("agents/edge-o"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while unsent() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(unsent(), 1, "the result is on disk before it is sent");
    drop(agent); // SIGKILL

    let ctl = Controller::start(dir.path(), &listen);
    let agent = start_agent(dir.path(), &ctl, "edge-o", &[]);
    let report = dir.path().join("report");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        ctl.cli_ok(&[
            "report",
            "--out",
            report.to_str().unwrap(),
            "--run",
            &run_id,
        ]);
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
                .unwrap();
        if !records.is_empty() || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        records.len(),
        1,
        "the kept result arrived once: {records:#?}"
    );
    assert!(records[0]["samples"].as_u64().unwrap() >= 20);
    let log = agent.log_text();
    let restarted = &log[log
        .rfind("results kept on disk")
        .expect("the restart sent it")..];
    assert!(
        !restarted.contains("job started"),
        "the job did not run again: {restarted}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while unsent() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(unsent(), 0, "marked sent once it went out");
}
