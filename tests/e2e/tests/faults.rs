//! End-to-end under link faults: the agent reaches the controller through the fault-injecting
//! proxy of `edgefleet_e2e::fault_proxy` (this kernel has no netem). A rollout of the 112 MB
//! SmolLM2 model over a 2 MB/s link cut every 5–20 MB completes and resumes each time from the
//! byte it reached; a benchmark whose link is cut while results are in flight stores each result
//! once; a black-holed link is noticed by heartbeats on both sides and the agent comes back.

use std::time::{Duration, Instant};

use edgefleet_e2e::fault_proxy::FaultProxy;
use edgefleet_e2e::{cached, start_agent_raw, Controller, Process};

/// An agent that dials the controller through `proxy`.
fn agent_via(dir: &std::path::Path, ctl: &Controller, proxy: &FaultProxy, name: &str) -> Process {
    let sensors = dir.join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let controller = format!("https://{}", proxy.address);
    let token = ctl.enroll_token(name);
    start_agent_raw(
        dir,
        name,
        &sensors,
        &["--controller", &controller, "--enroll-token", &token],
    )
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn a_rollout_over_a_slow_link_cut_every_few_megabytes_completes_resuming_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let proxy = FaultProxy::start(&ctl.listen);
    let agent = agent_via(dir.path(), &ctl, &proxy, "edge-slow");
    ctl.wait_online(&["edge-slow"], Duration::from_secs(60));
    let model = cached("models/smollm2-135m/model.q4.onnx");
    let tokenizer = cached("models/smollm2-135m/tokenizer.json");
    ctl.cli_ok(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "smollm2-135m",
        "--version",
        "q4",
        "--quant",
        "q4",
        "--with",
        tokenizer.to_str().unwrap(),
    ]);
    proxy.set(|f| {
        f.bandwidth = Some(2_000_000);
        f.cut_after = Some((5_000_000, 20_000_000));
    });
    let out = ctl.cli(&["rollout", "start", "smollm2-135m@q4", "--watch"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}\n{}", agent.log_text());
    let id = said
        .split_whitespace()
        .find(|w| w.starts_with("ro-"))
        .unwrap()
        .to_string();
    let status = ctl.rollout(&id);
    let target = &status["targets"][0];
    assert_eq!(target["state"], "done", "{status:#}");
    let total = status["model_bytes"].as_u64().unwrap();
    let served = target["served_bytes"].as_u64().unwrap();
    let cuts = proxy.resets();
    eprintln!(
        "{total} bytes over {cuts} cuts: {served} served ({} again)",
        served.saturating_sub(total)
    );
    assert!(cuts >= 4, "the link was cut only {cuts} times");
    // Every byte at least once (verified by its sha256 before the install), and at most the
    // chunk in flight again per cut: each transfer resumed from the byte it had reached.
    assert!(served >= total, "{served} < {total}");
    assert!(
        served <= total + cuts * (4 << 20),
        "re-sent {} bytes over {cuts} cuts",
        served - total
    );
    let resumed = agent
        .log_text()
        .matches("resuming artifact transfer")
        .count();
    assert!(resumed >= 1, "{}", agent.log_text());
    assert_eq!(
        ctl.model("smollm2-135m@q4")["placements"][0]["role"],
        "active",
        "{status:#}"
    );
}

#[test]
fn results_cut_in_flight_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let proxy = FaultProxy::start(&ctl.listen);
    let agent = agent_via(dir.path(), &ctl, &proxy, "edge-cut");
    ctl.wait_online(&["edge-cut"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let suite = dir.path().join("cut.toml");
    std::fs::write(
        &suite,
        "name = \"cut\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1, 2, 3, 4]\nmin_queries = 50\nmin_duration_s = 0.3\nrepetitions = 2\n",
    )
    .unwrap();
    // A first run brings the model to the agent, so that the cuts below fall on results.
    ctl.cli_ok(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    let waiter = std::process::Command::new(edgefleet_e2e::binary("edgefleet"))
        .args(["bench", "run", suite.to_str().unwrap(), "--wait", "--json"])
        .env("EDGEFLEET_CONTROLLER", &ctl.address)
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Four jobs of about a second each: the link is reset every 700 ms while they finish and
    // their results travel (each cut also breaks the reconnect that follows it, when it falls
    // on one).
    let finished = |agent: &Process| agent.log_text().matches("job finished").count();
    let before = finished(&agent);
    let mut cuts = 0;
    while finished(&agent) < before + 4 && cuts < 12 {
        std::thread::sleep(Duration::from_millis(700));
        proxy.cut_all();
        cuts += 1;
    }
    let out = waiter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    // The records as the controller stored them, read back after the run.
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut threads: Vec<u64> = records
        .iter()
        .map(|r| r["threads"].as_u64().unwrap())
        .collect();
    threads.sort();
    assert_eq!(
        threads,
        [1, 2, 3, 4],
        "each job's result once: {records:#?}"
    );
    eprintln!("{} connections reset during the run", proxy.resets());
    assert!(proxy.resets() >= 2, "only {} resets", proxy.resets());
}

#[test]
fn a_black_holed_link_is_noticed_on_both_sides_and_the_agent_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let proxy = FaultProxy::start(&ctl.listen);
    let agent = agent_via(dir.path(), &ctl, &proxy, "edge-hole");
    ctl.wait_online(&["edge-hole"], Duration::from_secs(60));

    // Heartbeats every second (the harness's --heartbeat-s 1): three missed ones end the link,
    // long before TCP or HTTP/2 keep-alives (about 40 s) would.
    proxy.set(|f| f.black_hole = true);
    let start = Instant::now();
    let (mut controller_noticed, mut agent_noticed) = (None, None);
    wait_until("both sides notice", Duration::from_secs(15), || {
        if controller_noticed.is_none() && ctl.process.log_text().contains("no word from the agent")
        {
            controller_noticed = Some(start.elapsed());
        }
        if agent_noticed.is_none() && agent.log_text().contains("no word from the controller") {
            agent_noticed = Some(start.elapsed());
        }
        controller_noticed.is_some() && agent_noticed.is_some()
    });
    eprintln!("noticed: controller after {controller_noticed:?}, agent after {agent_noticed:?}");
    assert_eq!(ctl.agents()[0]["online"], false);
    assert!(
        agent.log_text().contains("reconnecting"),
        "{}",
        agent.log_text()
    );

    proxy.set(|f| f.black_hole = false);
    ctl.wait_online(&["edge-hole"], Duration::from_secs(60));
}
