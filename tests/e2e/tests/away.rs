//! Devices that come back after being away longer than their certificate lasts, tried with the
//! real processes and short lifetimes: inside the recovery window the agent trades its expired
//! certificate for a new one by itself and comes back with its identity, its model and the
//! result it could not send; past the window, or revoked while away, it is refused with one
//! line on each side that says why and what to do, and `agents` shows it as such.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_e2e::{start_agent, unsent_results, wait_until, Controller};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// When the certificate the agent holds expires, from its `identity.json`.
fn not_after_ms(agent_dir: &Path) -> i64 {
    let text = std::fs::read_to_string(agent_dir.join("identity.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&text).unwrap();
    identity["not_after_ms"].as_i64().unwrap()
}

fn agent_id(agent_dir: &Path) -> String {
    let text = std::fs::read_to_string(agent_dir.join("identity.json")).unwrap();
    let identity: serde_json::Value = serde_json::from_str(&text).unwrap();
    identity["agent_id"].as_str().unwrap().to_string()
}

/// Waits (wall clock) until the agent's certificate has expired, plus `beyond`.
fn wait_past_expiry(agent_dir: &Path, beyond: Duration) {
    let until = not_after_ms(agent_dir) + beyond.as_millis() as i64;
    wait_until(
        "the agent's certificate to expire while it is away",
        Duration::from_secs(120),
        || now_ms() > until,
    );
}

#[test]
fn an_agent_away_past_its_certificate_comes_back_by_itself_with_its_model_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--agent-cert-lifetime-s",
        "10",
        "--agent-recovery-window-s",
        "3600",
    ];
    let mut ctl = Controller::start_with(dir.path(), "127.0.0.1:0", &flags);
    let listen = ctl.listen.clone();
    let agent_dir = dir.path().join("agents").join("edge-away");
    let mut agent = start_agent(dir.path(), &ctl, "edge-away", &[]);
    ctl.wait_online(&["edge-away"], Duration::from_secs(60));
    let id_before = agent_id(&agent_dir);

    // A model rolled out to it.
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    let rollout = ctl.cli_ok(&["rollout", "start", "minilm@int8"]);
    let rollout = rollout.trim().to_string();
    wait_until(
        &format!("rollout {rollout} to succeed"),
        Duration::from_secs(180),
        || ctl.rollout(&rollout)["state"] == "succeeded",
    );

    // A result left unsent: the controller dies while the job runs.
    let suite = dir.path().join("long.toml");
    std::fs::write(
        &suite,
        "name = \"long\"\nmodels = [\"minilm@int8\"]\n[input]\ntext = [\"The pump stopped.\"]\n\
         [conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1]\n\
         min_queries = 20\nmin_duration_s = 3\n",
    )
    .unwrap();
    let run_id = ctl.cli_ok(&["bench", "run", suite.to_str().unwrap()]);
    let run_id = run_id.trim().to_string();
    agent.wait_for_log("job started", Duration::from_secs(120));
    drop(ctl);
    wait_until(
        "the finished job's result kept unsent",
        Duration::from_secs(120),
        || unsent_results(&agent_dir) == 1,
    );
    assert!(agent.terminate(Duration::from_secs(30)).is_some());

    // Away longer than the certificate lasts (10 s), well inside the window (an hour).
    wait_past_expiry(&agent_dir, Duration::from_secs(2));
    ctl = Controller::start_with(dir.path(), &listen, &flags);
    let listing = ctl.cli_ok(&["agents"]);
    assert!(
        listing.contains("cert expired"),
        "an agent whose certificate expired while away is shown as such:\n{listing}"
    );
    let _agent = start_agent(dir.path(), &ctl, "edge-away", &[]);
    ctl.wait_online(&["edge-away"], Duration::from_secs(120));
    _agent.wait_for_log("certificate recovered", Duration::from_secs(30));
    assert_eq!(agent_id(&agent_dir), id_before, "the same identity");
    assert!(not_after_ms(&agent_dir) > now_ms(), "a fresh certificate");
    let agents = ctl.agents();
    assert_eq!(agents.len(), 1, "not a second agent: {agents:#?}");
    ctl.process
        .wait_for_log("agent recovered", Duration::from_secs(10));
    // Its model is still there and active.
    let models = ctl.cli_ok(&["models", "ls"]);
    assert!(models.contains("minilm"), "{models}");
    assert!(
        agent_dir
            .join("models")
            .join("minilm")
            .join("active")
            .exists(),
        "the model installed before stays active"
    );
    // The result the controller missed arrives.
    let report = dir.path().join("report");
    wait_until(
        &format!("the result of run {run_id} to arrive after the recovery"),
        Duration::from_secs(120),
        || ctl.records(&report, Some(&run_id)).len() == 1,
    );
}

#[test]
fn past_the_recovery_window_or_revoked_while_away_an_agent_is_refused_with_a_line_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with(
        dir.path(),
        "127.0.0.1:0",
        &[
            "--agent-cert-lifetime-s",
            "10",
            "--agent-recovery-window-s",
            "8",
        ],
    );
    let late_dir = dir.path().join("agents").join("edge-late");
    let mut late = start_agent(dir.path(), &ctl, "edge-late", &[]);
    let mut revoked = start_agent(dir.path(), &ctl, "edge-gone", &[]);
    ctl.wait_online(&["edge-late", "edge-gone"], Duration::from_secs(60));
    assert!(late.terminate(Duration::from_secs(30)).is_some());
    assert!(revoked.terminate(Duration::from_secs(30)).is_some());
    ctl.cli_ok(&["agents", "revoke", "edge-gone"]);

    // Away past the certificate (10 s) and the window after it (8 s).
    wait_past_expiry(&late_dir, Duration::from_secs(9));
    let listing = ctl.cli_ok(&["agents"]);
    assert!(listing.contains("locked out"), "{listing}");

    let mut late = start_agent(dir.path(), &ctl, "edge-late", &[]);
    late.wait_for_log("it is locked out", Duration::from_secs(60));
    let log = late.log_text();
    assert!(
        log.contains("edgefleet agents enroll --name edge-late"),
        "the agent's line says what to do: {log}"
    );
    ctl.process.wait_for_log(
        "longer ago than the recovery window",
        Duration::from_secs(30),
    );
    assert!(late.is_running(), "the daemon stays up, retrying slowly");
    for line in log.lines().filter(|l| l.contains("locked out")) {
        println!("agent: {line}");
    }
    let controller_log = std::fs::read_to_string(&ctl.process.log).unwrap();
    for line in controller_log
        .lines()
        .filter(|l| l.contains("recovery window"))
    {
        println!("controller: {line}");
    }

    let mut revoked = start_agent(dir.path(), &ctl, "edge-gone", &[]);
    revoked.wait_for_log("was revoked", Duration::from_secs(60));
    ctl.process
        .wait_for_log("refused an agent's certificate", Duration::from_secs(30));
    let controller_log = std::fs::read_to_string(&ctl.process.log).unwrap();
    for line in revoked.log_text().lines().filter(|l| l.contains("revoked")) {
        println!("agent: {line}");
    }
    assert!(
        controller_log
            .lines()
            .any(|l| l.contains("edge-gone") && l.contains("revoked")),
        "the controller names the revoked agent: {controller_log}"
    );
    assert!(revoked.is_running());
    let agents = ctl.agents();
    assert!(
        agents.iter().all(|a| a["online"] == false),
        "neither is let in: {agents:#?}"
    );
    // Said once per state, not at every retry.
    let said = revoked.log_text().matches("was revoked").count();
    assert!(
        said <= 2,
        "the refusal is said once, not per retry ({said} times)"
    );
}

/// The key of each agent's certificate as the controller's store keeps it.
fn recorded_key(data_dir: &Path, name: &str) -> String {
    let db = rusqlite::Connection::open(data_dir.join("controller.db")).unwrap();
    db.query_row(
        "SELECT cert_key_sha256 FROM agents WHERE name = ?1",
        [name],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn an_agent_enrolled_before_keys_were_kept_has_its_key_recorded_when_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let listen = ctl.listen.clone();
    let data_dir = ctl.data_dir.clone();
    let mut agent = start_agent(dir.path(), &ctl, "edge-old", &[]);
    ctl.wait_online(&["edge-old"], Duration::from_secs(60));
    assert!(!recorded_key(&data_dir, "edge-old").is_empty());
    assert!(agent.terminate(Duration::from_secs(30)).is_some());
    drop(ctl);

    // As a store from before the controller kept certificates' keys.
    let db = rusqlite::Connection::open(data_dir.join("controller.db")).unwrap();
    db.execute(
        "UPDATE agents SET cert_key_sha256 = '', cert_previous_key_sha256 = '', cert_not_after_ms = 0",
        [],
    )
    .unwrap();
    drop(db);

    let ctl = Controller::start(dir.path(), &listen);
    let _agent = start_agent(dir.path(), &ctl, "edge-old", &[]);
    ctl.wait_online(&["edge-old"], Duration::from_secs(60));
    wait_until(
        "the agent's key to be recorded from the certificate it connected with",
        Duration::from_secs(30),
        || !recorded_key(&data_dir, "edge-old").is_empty(),
    );
    let agents = ctl.agents();
    assert!(
        agents[0]["cert_not_after"].is_string(),
        "its expiry is known again: {agents:#?}"
    );
}
