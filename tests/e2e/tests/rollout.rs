//! Rollouts end to end: real controller and agent processes on loopback, real models, signed
//! manifests, resumable transfers, atomic installs, health checks, performance gates and
//! rollback, including the ways they must fail safely.

use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_e2e::{start_agent, start_agent_with, Controller, Process, StateIn};

/// These tests run one at a time: a performance gate compares timings, and two tests'
/// benchmarks sharing the machine's cores would blur them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(ctl: &Controller) {
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    ctl.add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm", "fp32");
}

/// Starts a rollout with `--watch`; returns (exit ok, stdout + stderr, rollout id).
fn rollout(ctl: &Controller, args: &[&str]) -> (bool, String, String) {
    ctl.rollout_watch(args)
}

/// The active version of `name` on agent `agent`, from the controller's view.
fn active_on(ctl: &Controller, model: &str, agent: &str) -> Option<String> {
    let shown = ctl.model(model);
    shown["placements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["agent"] == agent)
        .map(|p| p["role"].as_str().unwrap().to_string())
}

/// An agent with extra flags (e.g. a download limit), reading no sensors.
fn agent_with_flags(dir: &Path, ctl: &Controller, name: &str, flags: &[&str]) -> Process {
    let sensors = dir.join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    start_agent_with(dir, ctl, name, &[], &sensors, flags)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn waves_install_and_a_performance_gate_stops_a_slower_model_and_passes_a_faster_one() {
    waves_and_gates(StateIn::Sqlite)
}

#[test]
fn waves_install_and_a_performance_gate_stops_a_slower_model_on_postgresql_and_s3() {
    waves_and_gates(StateIn::postgres_and_s3())
}

fn waves_and_gates(state: StateIn) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_in(dir.path(), "127.0.0.1:0", &state, &[]);
    let _a = start_agent(dir.path(), &ctl, "edge-a", &["hw=gw", "site=lab"]);
    let _b = start_agent(dir.path(), &ctl, "edge-b", &["hw=gw", "site=store"]);
    ctl.wait_online(&["edge-a", "edge-b"], Duration::from_secs(60));
    register(&ctl);

    // Bad input: one line each, and no rollout is created.
    for (args, why) in [
        (vec!["minilm@nope"], "unknown model minilm@nope"),
        (
            vec!["minilm@int8", "--select", "hw=rpi5"],
            "no agent matches `hw=rpi5`",
        ),
        (vec!["minilm@int8", "--select", "hw"], "selector `hw`"),
        (
            vec!["minilm@int8", "--waves", "10%,50%"],
            "must end at 100%",
        ),
        (
            vec!["minilm@int8", "--gate", "latency<=1.1x"],
            "unknown gate metric `latency`",
        ),
        (vec!["minilm@int8", "--success", "120%"], "at most 100%"),
        (
            vec!["minilm@int8", "--health", "full"],
            "unknown health check `full` (smoke, bench, none)",
        ),
    ] {
        let mut full = vec!["rollout", "start"];
        full.extend_from_slice(&args);
        let out = ctl.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(ctl
        .cli_ok(&["rollout", "status"])
        .contains("no rollouts yet"));

    // fp32 everywhere, in two waves, each install checked by a benchmark.
    let (ok, text, first) = rollout(
        &ctl,
        &["minilm@fp32", "--waves", "50%,100%", "--health", "bench"],
    );
    assert!(ok, "{text}");
    let status = ctl.rollout(&first);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let waves: Vec<u64> = status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["wave"].as_u64().unwrap())
        .collect();
    assert_eq!(waves, [1, 2], "{status:#}");
    for t in status["targets"].as_array().unwrap() {
        assert_eq!(t["state"], "done", "{t:#}");
        assert!(
            t["health"].as_str().unwrap().contains("benchmark ok: "),
            "{t:#}"
        );
        assert_eq!(t["previous_version"], "");
    }
    assert_eq!(
        active_on(&ctl, "minilm@fp32", "edge-a").as_deref(),
        Some("active")
    );

    // int8 replaces fp32 through the gate: faster, and close enough in quality.
    let gate = "p90<=1.10x,energy<=1.10x,quality>=0.99";
    // Two waves: one device benchmarks at a time (on a real fleet each has its own cores).
    let (ok, text, faster) = rollout(
        &ctl,
        &[
            "minilm@int8",
            "--gate",
            gate,
            "--select",
            "hw=gw",
            "--waves",
            "50%,100%",
        ],
    );
    assert!(ok, "{text}");
    let status = ctl.rollout(&faster);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let verdicts = status["gates"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2, "{status:#}");
    for v in verdicts {
        assert_eq!(v["passed"], true, "{v:#}");
        let m = v["measurements"].as_array().unwrap();
        let p90 = m[0]["value"].as_f64().unwrap();
        assert!(p90 < 1.0, "int8 is faster than fp32: {v:#}");
        assert_eq!(
            m[1]["outcome"], "unmeasured",
            "no energy sensor here: {v:#}"
        );
        let quality = m[2]["value"].as_f64().unwrap();
        assert!((0.99..1.0).contains(&quality), "{v:#}");
    }
    assert!(text.contains("p90"), "the watch shows the ratios: {text}");

    // fp32 back over int8: clearly slower, so the gate stops it and rolls the wave back.
    let (ok, text, slower) = rollout(
        &ctl,
        &["minilm@fp32", "--gate", "p90<=1.10x", "--waves", "50%,100%"],
    );
    assert!(!ok, "{text}");
    let status = ctl.rollout(&slower);
    assert_eq!(status["state"], "aborted", "{status:#}");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("performance gate breached") && reason.contains("p90"),
        "{reason}"
    );
    let ratio = status["gates"][0]["measurements"][0]["value"]
        .as_f64()
        .unwrap();
    assert!(ratio > 1.5, "fp32 is much slower than int8: {status:#}");
    // The first wave's agent is rolled back; the second wave never started.
    let targets = ctl.rollout(&slower)["targets"].clone();
    assert_eq!(targets[0]["state"], "rolled_back", "{targets:#}");
    assert_eq!(targets[1]["state"], "waiting", "{targets:#}");
    for agent in ["edge-a", "edge-b"] {
        assert_eq!(
            active_on(&ctl, "minilm@int8", agent).as_deref(),
            Some("active")
        );
    }
    let first_wave = targets[0]["agent"].as_str().unwrap();
    assert_eq!(
        active_on(&ctl, "minilm@fp32", first_wave).as_deref(),
        Some("kept")
    );
    // The report carries the gates' benchmark runs next to every other result.
    let report = dir.path().join("report");
    ctl.cli_ok(&["report", "--out", report.to_str().unwrap()]);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(
        html.contains("<h2>Rollouts</h2>") && html.contains(&slower),
        "rollouts are in the report"
    );
    assert!(html.contains("breached"), "with the gate's verdicts");
    let results = std::fs::read_to_string(report.join("results.json")).unwrap();
    assert!(
        results.contains(&format!("gate {slower} wave 1")),
        "the gate's runs are results too"
    );

    // The registry refuses to remove what agents run or keep for rollback.
    let out = ctl.cli(&["models", "rm", "minilm@int8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("edge-a (active)"),
        "{err}"
    );
    let out = ctl.cli(&["models", "rm", "minilm@fp32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("kept for rollback"),
        "{err}"
    );
    // The same bytes under another version are stored once: removing it frees nothing.
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "copy");
    let out = ctl.cli_ok(&["models", "rm", "minilm@copy"]);
    assert!(out.contains("0 artifact file(s)"), "{out}");

    if let StateIn::WithS3 { s3, .. } = &state {
        // The models' bytes are in the object store and nowhere in the controller's folder, and
        // the agents fetched them from the store with presigned URLs: the controller sent none.
        let stored: Vec<String> = s3
            .objects("fleet")
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        for quant in ["int8", "fp32"] {
            let sha = ctl.model(&format!("minilm@{quant}"))["files"][0]["sha256"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                stored.contains(&format!("fleet/{sha}")),
                "{sha} in {stored:?}"
            );
        }
        let folder: Vec<_> = std::fs::read_dir(ctl.data_dir.join("artifacts"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            folder.is_empty(),
            "the controller's artifact folder: {folder:?}"
        );
        let served: u64 = ctl.rollout(&first)["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["served_bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(served, 0, "bytes the controller sent itself");
    }
}

/// Bytes of unfinished transfers in the agents' artifact folders.
fn partial_bytes(dir: &Path, agents: &[&str]) -> u64 {
    agents
        .iter()
        .flat_map(|name| std::fs::read_dir(dir.join("agents").join(name).join("artifacts")))
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn an_agent_killed_mid_transfer_resumes_without_fetching_the_bytes_it_had() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let limit = ["--download-limit", "25"];
    let agent = agent_with_flags(dir.path(), &ctl, "edge-r", &limit);
    ctl.wait_online(&["edge-r"], Duration::from_secs(60));
    register(&ctl);

    let id = ctl
        .cli_ok(&["rollout", "start", "minilm@fp32"])
        .trim()
        .to_string();
    let total = ctl.rollout(&id)["model_bytes"].as_u64().unwrap();
    wait_until(
        "a third of the model fetched",
        Duration::from_secs(60),
        || {
            ctl.rollout(&id)["targets"][0]["served_bytes"]
                .as_u64()
                .unwrap()
                > total / 3
        },
    );
    drop(agent); // SIGKILL in the middle of the transfer
    let served_before = ctl.rollout(&id)["targets"][0]["served_bytes"]
        .as_u64()
        .unwrap();
    assert!(served_before < total, "the kill came mid-transfer");

    let agent = agent_with_flags(dir.path(), &ctl, "edge-r", &limit);
    let out = ctl.cli(&["rollout", "status", &id, "--watch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = ctl.rollout(&id);
    assert_eq!(status["targets"][0]["state"], "done", "{status:#}");
    let served = status["targets"][0]["served_bytes"].as_u64().unwrap();
    // Every byte once, plus at most the one chunk that was in flight when the agent died.
    assert!(served >= total, "{served} < {total}");
    assert!(
        served <= total + (4 << 20),
        "re-sent {} bytes, more than one chunk",
        served - total
    );
    agent.wait_for_log("resuming artifact transfer", Duration::from_secs(1));
    assert_eq!(
        active_on(&ctl, "minilm@fp32", "edge-r").as_deref(),
        Some("active")
    );
}

#[test]
fn a_controller_restarted_mid_rollout_finishes_it() {
    restarted_mid_rollout(StateIn::Sqlite)
}

#[test]
fn a_controller_restarted_mid_rollout_finishes_it_on_postgresql_and_s3() {
    restarted_mid_rollout(StateIn::postgres_and_s3())
}

fn restarted_mid_rollout(state: StateIn) {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // From an object store, presigned URLs live two seconds (one to two, as S3 signs whole
    // seconds): they expire during the three-second transfers, and the agents ask the
    // controller for fresh ones.
    let lifetime = ["--presigned-url-lifetime-s", "2"];
    let s3 = matches!(state, StateIn::WithS3 { .. });
    let ctl = Controller::start_in(
        dir.path(),
        "127.0.0.1:0",
        &state,
        if s3 { &lifetime } else { &[] },
    );
    let limit = ["--download-limit", "30"];
    let _a = agent_with_flags(dir.path(), &ctl, "edge-1", &limit);
    let _b = agent_with_flags(dir.path(), &ctl, "edge-2", &limit);
    ctl.wait_online(&["edge-1", "edge-2"], Duration::from_secs(60));
    register(&ctl);
    let id = ctl
        .cli_ok(&["rollout", "start", "minilm@fp32", "--waves", "50%,100%"])
        .trim()
        .to_string();
    wait_until(
        "the first wave is fetching",
        Duration::from_secs(60),
        || {
            let served = ctl.rollout(&id)["targets"][0]["served_bytes"]
                .as_u64()
                .unwrap();
            served + partial_bytes(dir.path(), &["edge-1", "edge-2"]) > 10_000_000
        },
    );
    let listen = ctl.listen.clone();
    let mut ctl = ctl;
    let _ = ctl.process.child.kill(); // no goodbye: SIGKILL
    let _ = ctl.process.child.wait();
    drop(ctl);

    let ctl = Controller::start_in(
        dir.path(),
        &listen,
        &state,
        if s3 { &lifetime } else { &[] },
    );
    let out = ctl.cli(&["rollout", "status", &id, "--watch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = ctl.rollout(&id);
    assert_eq!(status["state"], "succeeded", "{status:#}");
    for name in ["edge-1", "edge-2"] {
        assert_eq!(
            active_on(&ctl, "minilm@fp32", name).as_deref(),
            Some("active")
        );
    }
    if s3 {
        // Three seconds of transfer at 30 MB/s on two-second URLs: renewed at least once.
        let logs: String = ["edge-1", "edge-2"]
            .iter()
            .map(|name| std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap())
            .collect();
        assert!(
            logs.contains("asking the controller for a fresh one"),
            "an agent renewed an expired URL mid-transfer:\n{logs}"
        );
        let controller_log = ctl.process.log_text();
        for log in [&logs, &controller_log] {
            assert!(
                !log.contains("X-Amz-Signature"),
                "a URL's signature was logged:\n{log}"
            );
        }
    }
}

#[test]
fn tampered_bytes_a_foreign_key_and_a_full_disk_are_refused_and_the_old_version_stays() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent = start_agent(dir.path(), &ctl, "edge-t", &[]);
    ctl.wait_online(&["edge-t"], Duration::from_secs(60));
    register(&ctl);
    let (ok, text, _) = rollout(&ctl, &["minilm@int8"]);
    assert!(ok, "{text}");

    // Not enough disk: the agent keeps a reserve larger than any disk.
    drop(agent);
    let reserve = ["--min-free-disk-mb", "1000000000"];
    let agent = agent_with_flags(dir.path(), &ctl, "edge-t", &reserve);
    ctl.wait_online(&["edge-t"], Duration::from_secs(60));
    let (ok, text, id) = rollout(&ctl, &["minilm@fp32"]);
    assert!(!ok, "{text}");
    let status = ctl.rollout(&id);
    let error = status["targets"][0]["error"].as_str().unwrap();
    assert!(error.contains("not enough disk space"), "{status:#}");
    assert_eq!(
        active_on(&ctl, "minilm@int8", "edge-t").as_deref(),
        Some("active")
    );
    drop(agent);
    let agent = start_agent(dir.path(), &ctl, "edge-t", &[]);
    ctl.wait_online(&["edge-t"], Duration::from_secs(60));

    // One flipped bit in the controller's copy of the fp32 model.
    let sha = ctl.model("minilm@fp32")["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let stored = ctl.data_dir.join("artifacts").join(&sha);
    let mut bytes = std::fs::read(&stored).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&stored, &bytes).unwrap();
    let (ok, text, id) = rollout(&ctl, &["minilm@fp32"]);
    assert!(!ok, "{text}");
    let error = ctl.rollout(&id)["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("failed verification"), "{error}");
    assert_eq!(
        active_on(&ctl, "minilm@int8", "edge-t").as_deref(),
        Some("active")
    );

    // Another controller (another CA, another signing key) takes over the address: the agent's
    // TLS handshake refuses it, so it never sees the rogue's manifests at all (their signature
    // check is the second wall, tested in the agent's enrollment tests).
    let listen = ctl.listen.clone();
    drop(ctl);
    let rogue_dir = dir.path().join("rogue");
    std::fs::create_dir_all(&rogue_dir).unwrap();
    let rogue = Controller::start(&rogue_dir, &listen);
    agent.wait_for_log("invalid peer certificate", Duration::from_secs(60));
    assert!(
        rogue.agents().is_empty(),
        "the agent never joined the rogue"
    );
    let model_dir = dir.path().join("agents/edge-t/models/minilm");
    assert_eq!(
        std::fs::read_link(model_dir.join("active")).unwrap(),
        std::path::Path::new("int8")
    );
}

#[test]
fn a_model_without_a_tokenizer_is_health_checked_on_zero_filled_inputs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-v", &[]);
    ctl.wait_online(&["edge-v"], Duration::from_secs(60));
    let vad = edgefleet_e2e::cached("models/silero-vad/model.fp32.onnx");
    ctl.cli_ok(&[
        "models",
        "add",
        vad.to_str().unwrap(),
        "--name",
        "vad",
        "--version",
        "fp32",
    ]);
    let (ok, text, id) = rollout(&ctl, &["vad@fp32"]);
    assert!(ok, "{text}");
    let status = ctl.rollout(&id);
    let health = status["targets"][0]["health"].as_str().unwrap();
    // Silero's declared inputs, run three times: a model that loads but cannot run would fail.
    assert!(
        health
            .contains("3 inferences on zero-filled inputs (input [1, 576], state [2, 1, 128]) ok"),
        "{status:#}"
    );
}

#[test]
fn a_gate_with_a_suites_audio_input_stops_a_model_that_decides_differently() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-s", &[]);
    ctl.wait_online(&["edge-s"], Duration::from_secs(60));
    for version in ["fp32", "int8"] {
        let file = edgefleet_e2e::cached(&format!("models/silero-vad/model.{version}.onnx"));
        ctl.cli_ok(&[
            "models",
            "add",
            file.to_str().unwrap(),
            "--name",
            "silero-vad",
            "--version",
            version,
        ]);
    }
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-suites/suites/audio-vad.toml");
    // Gated, onto an agent with nothing active: the gate has nothing to compare and says so.
    let (ok, text, first) = rollout(
        &ctl,
        &[
            "silero-vad@fp32",
            "--gate",
            "quality>=0.99",
            "--gate-suite",
            shipped.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let note = "gate not run: edge-s: nothing was active before this install to compare with";
    assert!(
        text.contains(note),
        "--watch says the gate did not run: {text}"
    );
    let status = ctl.cli_ok(&["rollout", "status", &first]);
    assert!(status.contains(note), "{status}");

    // Silero has no tokenizer: without a suite the gate has nothing to feed it.
    let out = ctl.cli(&[
        "rollout",
        "start",
        "silero-vad@int8",
        "--gate",
        "quality>=0.99",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--gate-suite"),
        "{err}"
    );

    // With the shipped audio-vad suite, the gate streams its speech clip through both versions
    // and compares their per-chunk speech decisions: int8 agrees on about 95% of the chunks.
    let (ok, text, id) = rollout(
        &ctl,
        &[
            "silero-vad@int8",
            "--gate",
            "quality>=0.99",
            "--gate-suite",
            shipped.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{text}");
    let status = ctl.rollout(&id);
    assert_eq!(status["state"], "aborted", "{status:#}");
    let verdict = &status["gates"][0];
    assert_eq!(verdict["passed"], false, "{status:#}");
    let quality = verdict["measurements"][0]["value"].as_f64().unwrap();
    assert!(
        (0.85..0.99).contains(&quality),
        "decision agreement {quality}: {status:#}"
    );
    assert_eq!(
        verdict["measurements"][0]["detail"], "candidate vs active output, decisions alike",
        "the quality is named for what it measured: {status:#}"
    );
    // Aborted with the wave rolled back: nobody is on int8.
    assert!(
        ctl.cli_ok(&["rollout", "status"])
            .lines()
            .any(|l| l.contains(&id) && l.contains("0/1")),
        "{}",
        ctl.cli_ok(&["rollout", "status"])
    );
    assert_eq!(
        active_on(&ctl, "silero-vad@fp32", "edge-s").as_deref(),
        Some("active")
    );
}
