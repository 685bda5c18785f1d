//! End-to-end: an aarch64 agent, cross-built and run under qemu-user, joins a fleet beside a
//! native agent; both benchmark the same model and the report shows each under its own hardware
//! target. ONNX Runtime's own library crashes under qemu-user's emulation on this machine, so the
//! emulated agent runs the tract engine (and the suite asks for tract alone); on a real ARM
//! device the arm64 package's ONNX Runtime does the work.
//!
//! `scripts/test.sh` builds the aarch64 agent once (`cargo build --target
//! aarch64-unknown-linux-gnu -p edgefleet-agent --features tract`) and registers qemu with
//! binfmt_misc (`scripts/setup_packaging.sh --cross`), so that the emulated agent can start its
//! emulated worker.

use std::process::{Command, Stdio};
use std::time::Duration;

use edgefleet_e2e::{repo_root, start_agent, Controller, Process};

/// The add-one model on the tract engine: small enough for an emulated debug build.
const SUITE: &str = r#"
name = "arm-fleet"
models = ["add-one@1"]
engines = ["tract"]

[input]
text = ["The gateway rebooted after the update.", "Is the store open on Sunday?"]

[[scenario]]
kind = "single-stream"
threads = [1]
warmup = 2
min_queries = 20
min_duration_s = 0.2
max_duration_s = 10
"#;

/// The cross-built agent, or a failure that says how to build it.
fn aarch64_agent() -> std::path::PathBuf {
    let agent = repo_root().join("target/aarch64-unknown-linux-gnu/debug/edgefleet-agent");
    assert!(
        agent.is_file() && agent.with_file_name("edgefleet-agent-worker").is_file(),
        "{} is missing: cargo build --target aarch64-unknown-linux-gnu -p edgefleet-agent --features tract (scripts/test.sh does)",
        agent.display()
    );
    assert!(
        std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "aarch64 programs are not handed to qemu: run scripts/setup_packaging.sh --cross as root"
    );
    agent
}

/// Starts the aarch64 agent under qemu-user (through binfmt_misc; QEMU_LD_PREFIX finds Debian's
/// aarch64 C library for it and for the worker it starts).
fn start_emulated_agent(dir: &std::path::Path, ctl: &Controller, name: &str) -> Process {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let empty = dir.join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    let child = Command::new(aarch64_agent())
        .arg("run")
        .args(ctl.agent_flags(&dir.join("agents").join(name), name))
        .args(["--name", name, "--label", "hw=arm-emulated", "--data-dir"])
        .arg(dir.join("agents").join(name))
        // No ONNX Runtime for this agent: it says so and runs tract.
        .arg("--onnxruntime-library")
        .arg(dir.join("no-onnxruntime/libonnxruntime.so.1.31.1"))
        .env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
        .env("EDGEFLEET_SENSORS_ROOT", &empty)
        .env("EDGEFLEET_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("start the aarch64 agent under qemu");
    Process { child, log }
}

#[test]
fn an_emulated_aarch64_agent_benchmarks_beside_a_native_one_under_its_own_target() {
    let dir = tempfile::tempdir().unwrap();
    // Heartbeats every 5 s: an emulated agent on a busy machine can miss three 1 s ones.
    let ctl = Controller::start_with_heartbeat(dir.path(), "127.0.0.1:0", 5, &[]);
    let _native = start_agent(dir.path(), &ctl, "edge-x86", &["hw=x86"]);
    let arm = start_emulated_agent(dir.path(), &ctl, "edge-arm");
    ctl.wait_online(&["edge-x86", "edge-arm"], Duration::from_secs(120));
    assert!(
        arm.log_text().contains("ONNX Runtime is not usable"),
        "the emulated agent says its runtime is missing and stays up: {}",
        arm.log_text()
    );
    let arch_of = |name: &str| {
        ctl.agents()
            .into_iter()
            .find(|a| a["name"] == name)
            .map(|a| {
                a["hardware"]["arch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap()
    };
    assert_eq!(arch_of("edge-arm"), "aarch64");
    assert_eq!(arch_of("edge-x86"), std::env::consts::ARCH);

    ctl.add_cached_model("models/tiny/add.onnx", "add-one", "1");
    let suite = dir.path().join("arm.toml");
    std::fs::write(&suite, SUITE).unwrap();
    // The run plans jobs for the agents online when it starts.
    ctl.wait_online(&["edge-x86", "edge-arm"], Duration::from_secs(120));
    let out = ctl.cli(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--wait",
        "--json",
        "--timeout-s",
        "300",
    ]);
    assert!(
        out.status.success(),
        "the run failed: {}\nthe emulated agent's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        arm.log_text()
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 2, "one record per agent: {records:#?}");
    let of = |agent: &str| records.iter().find(|r| r["agent"] == agent).unwrap();
    let (arm_record, native_record) = (of("edge-arm"), of("edge-x86"));
    for r in [arm_record, native_record] {
        assert_eq!(r["engine"], "tract", "{r:#}");
        assert!(r["samples"].as_u64().unwrap() >= 20, "{r:#}");
        assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r:#}");
    }
    let arm_target = arm_record["target"].as_str().unwrap();
    assert!(arm_target.starts_with("aarch64"), "{arm_target}");
    assert_ne!(arm_target, native_record["target"].as_str().unwrap());

    let out = dir.path().join("report");
    ctl.cli_ok(&["report", "--out", out.to_str().unwrap()]);
    let exported: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let targets: std::collections::BTreeSet<&str> = exported
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 2, "two hardware targets: {targets:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains(arm_target),
        "the report names the aarch64 target"
    );
}
