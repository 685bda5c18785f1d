//! Artifacts in an S3 object store (`serve --artifacts s3://…`, a real `s3s-fs` that checks
//! signatures), in the ways it fails: the store down while a model is added (nothing
//! registered) and while an install fetches (the agent retries; out of attempts, the install
//! fails with the reason and the active version stays), and delivery through the controller for
//! a store devices cannot reach (from the controller's checked copy, even with the store down). (The flows themselves run on PostgreSQL and S3 in rollout.rs,
//! compare.rs and schedules.rs.)

use std::time::Duration;

use edgefleet_e2e::{cached, start_agent, Controller, StateIn};
use sha2::Digest;

/// `rollout start MODEL --health smoke --watch`: whether it succeeded, its output, its id.
fn rollout(ctl: &Controller, model: &str) -> (bool, String, String) {
    ctl.rollout_watch(&[model, "--health", "smoke"])
}

fn active(ctl: &Controller, model: &str) -> Vec<String> {
    ctl.model(model)["placements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "active")
        .map(|p| p["agent"].as_str().unwrap().to_string())
        .collect()
}

fn add_model(ctl: &Controller, quant: &str) -> std::process::Output {
    let model = cached(&format!("models/minilm-l6/model.{quant}.onnx"));
    ctl.cli(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "minilm",
        "--version",
        quant,
    ])
}

#[test]
fn the_object_store_down_refuses_an_add_and_an_install_retries_then_fails_keeping_the_active_version(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut state = StateIn::sqlite_and_s3();
    let ctl = Controller::start_in(dir.path(), "127.0.0.1:0", &state, &[]);
    let agent = start_agent(dir.path(), &ctl, "edge-s3", &[]);
    ctl.wait_online(&["edge-s3"], Duration::from_secs(60));

    // Down while a model is added: one line naming the store, and nothing registered.
    state.s3().unwrap().stop();
    let out = add_model(&ctl, "int8");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "models add with the store down");
    assert!(err.contains("object store s3://edgefleet/fleet"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let shown = ctl.cli(&["models", "show", "minilm@int8"]);
    assert!(
        String::from_utf8_lossy(&shown.stderr).contains("unknown model minilm@int8"),
        "nothing registered: {shown:?}"
    );
    state.s3().unwrap().start_again();
    assert!(state.s3().unwrap().objects("").is_empty());

    // Back up: registered, and installed from the store.
    assert!(add_model(&ctl, "int8").status.success());
    let (ok, text, _) = rollout(&ctl, "minilm@int8");
    assert!(ok, "{text}");
    assert_eq!(active(&ctl, "minilm@int8"), vec!["edge-s3"]);

    // Down while an install fetches, and up again before the agent runs out of attempts: the
    // agent's retries carry it through.
    assert!(add_model(&ctl, "fp32").status.success());
    state.s3().unwrap().stop();
    let id = ctl
        .cli_ok(&["rollout", "start", "minilm@fp32", "--health", "smoke"])
        .trim()
        .to_string();
    agent.wait_for_log(
        "artifact transfer failed; retrying",
        Duration::from_secs(60),
    );
    state.s3().unwrap().start_again();
    let out = ctl.cli(&["rollout", "status", &id, "--watch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(active(&ctl, "minilm@fp32"), vec!["edge-s3"]);

    // Down for good: the install of bytes the agent does not hold fails with the store's
    // reason once the agent is out of attempts, and the active version stays.
    let multi = cached("models/minilm-l6/model.int8-multi.onnx");
    ctl.cli_ok(&[
        "models",
        "add",
        multi.to_str().unwrap(),
        "--name",
        "minilm",
        "--version",
        "multi",
    ]);
    state.s3().unwrap().stop();
    let (ok, text, id) = rollout(&ctl, "minilm@multi");
    assert!(!ok, "{text}");
    let status = ctl.rollout(&id);
    let error = status["targets"][0]["error"].as_str().unwrap_or_default();
    // The store's host and path and why (the connection refused), never the URL's signature.
    assert!(
        error.contains("object store http://127.0.0.1:"),
        "{status:#}"
    );
    assert!(error.to_lowercase().contains("refused"), "{status:#}");
    for log in [agent.log_text(), ctl.process.log_text()] {
        assert!(
            !log.contains("X-Amz-Signature"),
            "a URL's signature was logged:\n{log}"
        );
    }
    assert_eq!(active(&ctl, "minilm@fp32"), vec!["edge-s3"]);
}

#[test]
fn proxy_delivery_sends_the_object_stores_bytes_through_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = StateIn::sqlite_and_s3();
    let ctl = Controller::start_in(
        dir.path(),
        "127.0.0.1:0",
        &state,
        &["--artifact-delivery", "proxy"],
    );
    let _agent = start_agent(dir.path(), &ctl, "edge-p", &[]);
    ctl.wait_online(&["edge-p"], Duration::from_secs(60));
    assert!(add_model(&ctl, "int8").status.success());
    let (ok, text, id) = rollout(&ctl, "minilm@int8");
    assert!(ok, "{text}");
    let status = ctl.rollout(&id);
    let served = status["targets"][0]["served_bytes"].as_u64().unwrap();
    let total = status["model_bytes"].as_u64().unwrap();
    assert_eq!(
        served, total,
        "every byte through the controller: {status:#}"
    );
    assert_eq!(active(&ctl, "minilm@int8"), vec!["edge-p"]);
    // The controller kept a copy of what it read from the store, checked against its digest.
    let copies: Vec<_> = std::fs::read_dir(ctl.data_dir.join("artifact-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!copies.is_empty(), "a copy in DATA/artifact-cache");
    for copy in &copies {
        let name = copy.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(copy).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), name);
    }
    // With the store down, an agent that joins later still gets the model from the copy.
    state.s3().unwrap().stop();
    let _late = start_agent(dir.path(), &ctl, "edge-q", &[]);
    ctl.wait_online(&["edge-q"], Duration::from_secs(60));
    let (ok, text, _) = ctl.rollout_watch(&[
        "minilm@int8",
        "--health",
        "smoke",
        "--select",
        "name=edge-q",
    ]);
    assert!(
        ok,
        "installed from the controller's copy with the store down: {text}"
    );
    let mut now_active = active(&ctl, "minilm@int8");
    now_active.sort();
    assert_eq!(now_active, vec!["edge-p", "edge-q"]);
}
