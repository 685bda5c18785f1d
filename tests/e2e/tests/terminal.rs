//! Every table the CLI prints fits a 100-column terminal (`COLUMNS=100`, as the harness runs
//! the CLI): a fleet with a 61-input decoder registered, results of an encoder pair and of a
//! generative run, a comparison, a rollout, baselines, schedules and tokens.

use std::time::Duration;

use edgefleet_e2e::{assert_fits_terminal, cached, start_agent, Controller};

const SUITE: &str = r#"name = "terminal-widths"
models = ["minilm-l6@fp32", "minilm-l6@int8"]
[input]
text = ["The firmware update failed because the device ran out of disk space."]
[conditions]
idle_power_s = 0
[[scenario]]
kind = "single-stream"
threads = [1]
min_queries = 20
min_duration_s = 0.3
[quality]
reference = "minilm-l6@fp32"
metric = "cosine"
golden = ["Please reset the thermostat in meeting room four to twenty-one degrees."]
"#;

const GENERATE: &str = r#"name = "terminal-generate"
models = ["smollm2-135m@q4"]
[input]
text = ["Edge devices run small language models close to the data they serve."]
[conditions]
idle_power_s = 0
[[scenario]]
kind = "generate"
prompt_tokens = 8
generate_tokens = 4
warmup = 0
min_queries = 2
min_duration_s = 0.1
"#;

#[test]
fn every_table_fits_a_100_column_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _a = start_agent(
        dir.path(),
        &ctl,
        "edge-gateway-store-42",
        &["site=store-42", "hw=x86"],
    );
    ctl.wait_online(&["edge-gateway-store-42"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm-l6", "fp32");
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm-l6", "int8");
    let smollm2 = cached("models/smollm2-135m/model.q4.onnx");
    let tokenizer = cached("models/smollm2-135m/tokenizer.json");
    ctl.cli_ok(&[
        "models",
        "add",
        smollm2.to_str().unwrap(),
        "--name",
        "smollm2-135m",
        "--version",
        "q4",
        "--with",
        tokenizer.to_str().unwrap(),
    ]);
    let suite = dir.path().join("widths.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let generate = dir.path().join("generate.toml");
    std::fs::write(&generate, GENERATE).unwrap();

    let mut shown = Vec::new();
    let mut show = |args: &[&str]| {
        let out = ctl.cli_ok(args);
        assert_fits_terminal(&args.join(" "), &out);
        shown.push(args.join(" "));
        out
    };
    let models = show(&["models", "ls"]);
    // SmolLM2's 62 inputs (input_ids, attention_mask, 60 past_key_values) shown as one and a count.
    assert!(models.contains("+61 more"), "{models}");
    show(&["agents"]);
    let results = show(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    assert!(results.contains("0.99"), "int8's quality: {results}");
    show(&["bench", "run", generate.to_str().unwrap(), "--wait"]);
    let compared = show(&["compare", "minilm-l6@fp32", "minilm-l6@int8"]);
    assert!(compared.contains("D1  "), "the class legend: {compared}");
    let memory = show(&[
        "compare",
        "minilm-l6@fp32",
        "minilm-l6@int8",
        "--metric",
        "memory",
    ]);
    assert!(
        memory.contains("(MB)") && !memory.contains("bytes"),
        "{memory}"
    );
    show(&["baseline", "set", "terminal-widths"]);
    show(&["baseline", "ls"]);
    show(&["regressions"]);
    let rollout = show(&["rollout", "start", "minilm-l6@int8", "--watch"]);
    let id = rollout
        .split_whitespace()
        .find(|w| w.starts_with("ro-"))
        .unwrap_or_else(|| panic!("no rollout id in {rollout}"))
        .to_string();
    show(&["rollout", "status"]);
    show(&["rollout", "status", &id]);
    show(&[
        "schedule",
        "add",
        "nightly-widths",
        "--cron",
        "0 0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--suite",
        suite.to_str().unwrap(),
        "--select",
        "site=store-42,hw=x86",
    ]);
    let schedules = show(&["schedule", "ls"]);
    // Three in the morning on the Berlin clock (CET in winter, CEST in summer).
    assert!(
        schedules.contains("Europe/Berlin") && schedules.contains(" 03:00 CE"),
        "{schedules}"
    );
    let out = ctl.cli(&[
        "schedule",
        "add",
        "x",
        "--cron",
        "0 0 3 * * *",
        "--tz",
        "Berlin",
        "--suite",
        suite.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("unknown time zone `Berlin`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    show(&[
        "admin", "tokens", "create", "--name", "ci", "--role", "viewer",
    ]);
    show(&["admin", "tokens", "ls"]);
    assert_eq!(shown.len(), 16, "{shown:#?}");
}
