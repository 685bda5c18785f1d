//! End-to-end: bad input gets one clear line and changes nothing; the daemon stays up.

use std::time::Duration;

use edgefleet_e2e::{binary, cached, start_agent, start_agent_raw, Controller};
use edgefleet_proto::tokens::EnrollmentToken;

const TOKEN: &str = "right-token";

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn artifact_files(ctl: &Controller) -> usize {
    std::fs::read_dir(ctl.data_dir.join("artifacts")).map_or(0, |d| d.count())
}

#[test]
fn an_agent_with_a_wrong_token_is_refused_on_both_sides_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    // A token in the right form, pinning the right CA, that this controller never issued.
    let issued: serde_json::Value =
        serde_json::from_str(&ctl.cli_ok(&["agents", "enroll", "--json"])).unwrap();
    let forged = EnrollmentToken {
        secret: [42; 32],
        ca_sha256: issued["ca_sha256"].as_str().unwrap().to_string(),
    }
    .encode();
    let sensors = dir.path().join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let flags = ["--controller", &ctl.address, "--enroll-token", &forged];
    let mut agent = start_agent_raw(dir.path(), "intruder", &sensors, &flags);
    agent.wait_for_log("the controller refused this agent", Duration::from_secs(30));
    assert!(
        agent.log_text().contains("not known to this controller"),
        "{}",
        agent.log_text()
    );
    ctl.process
        .wait_for_log("refused an enrollment", Duration::from_secs(10));
    assert!(ctl.agents().is_empty(), "a refused agent is not registered");
    assert!(agent.is_running());

    // The same on a plaintext controller, whose agents present its shared token.
    let plain_dir = dir.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    let plain = Controller::start_insecure(&plain_dir, TOKEN, "127.0.0.1:0");
    let flags = [
        "--controller",
        &plain.address,
        "--insecure",
        "--token",
        "wrong-token",
    ];
    let mut agent = start_agent_raw(&plain_dir, "intruder", &sensors, &flags);
    agent.wait_for_log("the controller refused this agent", Duration::from_secs(30));
    assert!(
        agent.log_text().contains("enrollment token rejected"),
        "{}",
        agent.log_text()
    );
    plain
        .process
        .wait_for_log("wrong enrollment token", Duration::from_secs(10));
    assert!(
        plain.agents().is_empty(),
        "a refused agent is not registered"
    );
    assert!(agent.is_running());
}

#[test]
fn unreachable_controllers_are_named() {
    let out = std::process::Command::new(binary("edgefleet"))
        .args(["agents", "--insecure", "--controller", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("cannot reach the controller at http://127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let dir = tempfile::tempdir().unwrap();
    let sensors = dir.path().join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let token = EnrollmentToken {
        secret: [1; 32],
        ca_sha256: "0".repeat(64),
    }
    .encode();
    let flags = [
        "--controller",
        "https://127.0.0.1:1",
        "--enroll-token",
        &token,
    ];
    // Its repeats at debug level, to see the retries it does not say again.
    let mut cmd = std::process::Command::new(binary("edgefleet-agent"));
    cmd.env("EDGEFLEET_LOG", "info,edgefleet_agent=debug");
    let mut agent = edgefleet_e2e::start_agent_in(cmd, dir.path(), "lonely", &sensors, &flags);
    agent.wait_for_log(
        "cannot reach the controller; retrying",
        Duration::from_secs(20),
    );
    edgefleet_e2e::wait_until(
        "a second try in the agent's log",
        Duration::from_secs(60),
        || agent.log_text().contains("still cannot enroll"),
    );
    assert_eq!(
        agent
            .log_text()
            .matches("cannot reach the controller; retrying")
            .count(),
        1,
        "said once, not at every retry:\n{}",
        agent.log_text()
    );
    assert!(agent.is_running(), "the agent keeps retrying");
}

#[test]
fn junk_and_truncated_models_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"this is a text file, not a model\n").unwrap();
    let real = std::fs::read(cached("models/minilm-l6/model.int8.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let before = artifact_files(&ctl);

    for (file, needle) in [(&junk, "not an ONNX model"), (&truncated, "truncated")] {
        let out = ctl.cli(&[
            "models",
            "add",
            file.to_str().unwrap(),
            "--name",
            "m",
            "--version",
            "1",
        ]);
        assert!(!out.status.success());
        let err = stderr_of(&out);
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let missing = ctl.cli(&[
        "models",
        "add",
        "/nonexistent/model.onnx",
        "--name",
        "m",
        "--version",
        "1",
    ]);
    assert!(stderr_of(&missing).contains("cannot read /nonexistent/model.onnx"));
    assert_eq!(ctl.cli_ok(&["models", "ls", "--json"]).trim(), "[]");
    assert_eq!(artifact_files(&ctl), before, "nothing stored");

    // The same version twice is refused; the first stays.
    let good = cached("models/minilm-l6/model.int8.onnx");
    ctl.cli_ok(&[
        "models",
        "add",
        good.to_str().unwrap(),
        "--name",
        "m",
        "--version",
        "1",
    ]);
    let again = ctl.cli(&[
        "models",
        "add",
        good.to_str().unwrap(),
        "--name",
        "m",
        "--version",
        "1",
    ]);
    assert!(
        stderr_of(&again).contains("m@1 is already registered"),
        "{}",
        stderr_of(&again)
    );
}

#[test]
fn names_that_would_not_stay_in_an_agents_model_folder_are_refused_before_upload() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let model = cached("models/tiny/add.onnx");
    let model = model.to_str().unwrap();
    let companion = dir.path().join("manifest.pb");
    std::fs::write(&companion, b"not a manifest").unwrap();
    let before = artifact_files(&ctl);
    let cases: [(&[&str], &str); 3] = [
        (
            &["--name", "add", "--version", "active"],
            "version `active` is reserved by the agent's model layout",
        ),
        (
            &["--name", "..", "--version", "1"],
            "model name `..` must not be `.` or `..`",
        ),
        (
            &[
                "--name",
                "add",
                "--version",
                "1",
                "--with",
                companion.to_str().unwrap(),
            ],
            "file name `manifest.pb` is reserved by the agent's model layout",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["models", "add", model];
        all.extend_from_slice(args);
        let out = ctl.cli(&all);
        assert!(!out.status.success(), "{args:?} must be refused");
        let err = stderr_of(&out);
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(ctl.cli_ok(&["models", "ls", "--json"]).trim(), "[]");
    assert_eq!(artifact_files(&ctl), before, "nothing stored");
}

#[test]
fn a_suite_cannot_upload_files_from_outside_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    std::fs::create_dir_all(dir.path().join("suite")).unwrap();
    std::fs::write(dir.path().join("secret.wav"), b"not for upload").unwrap();
    let suite = dir.path().join("suite/escape.toml");
    let before = artifact_files(&ctl);
    let absolute = dir.path().join("secret.wav").display().to_string();
    for (file, needle) in [
        ("../secret.wav", "`../secret.wav` goes up with `..`"),
        (absolute.as_str(), "is absolute"),
    ] {
        std::fs::write(
            &suite,
            format!("name = \"escape\"\nmodels = [\"m@1\"]\n[input]\nkind = \"audio\"\nfiles = [\"{file}\"]\n[[scenario]]\nkind = \"single-stream\"\n"),
        )
        .unwrap();
        let out = ctl.cli(&["bench", "run", suite.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("{}:5: field `input.files`", suite.display())),
            "{err}"
        );
        assert!(err.contains(needle), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(artifact_files(&ctl), before, "nothing uploaded");
}

#[test]
fn bad_suites_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let suite = dir.path().join("bad.toml");
    std::fs::write(
        &suite,
        "name = \"bad\"\nmodels = [\"m@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nmin_duration_s = -2\n",
    )
    .unwrap();
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!(
            "{}:7: field `scenario.min_duration_s`",
            suite.display()
        )),
        "{err}"
    );

    std::fs::write(&suite, "name = \"bad\"\nmodels = [\"nope@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n").unwrap();
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap()]);
    std::fs::write(
        &suite,
        "name = \"bad\"\nmodels = [\"local/model.onnx\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n",
    )
    .unwrap();
    let files = ctl.cli(&["bench", "run", suite.to_str().unwrap()]);
    assert!(
        stderr_of(&files).contains("files run only on one device with `edgefleet-agent bench`"),
        "{}",
        stderr_of(&files)
    );
    assert!(
        stderr_of(&out).contains("unknown model nope@1"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_missing_onnxruntime_library_is_one_clear_line() {
    let out = std::process::Command::new(binary("edgefleet-agent"))
        .args([
            "check",
            "--onnxruntime-library",
            "/nonexistent/libonnxruntime.so.1.31.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("ONNX Runtime 1.31.1 not found")
            && err.contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unsupported_operator_is_a_failed_result_naming_it_and_the_agent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent = start_agent(dir.path(), &ctl, "edge-op", &[]);
    ctl.wait_online(&["edge-op"], Duration::from_secs(60));
    // The one-Add model with its operator renamed in place: still a well-formed ONNX file.
    let bytes = std::fs::read(cached("models/tiny/add.onnx")).unwrap();
    let at = bytes
        .windows(3)
        .position(|w| w == b"Add")
        .expect("the Add op_type");
    let mut mutated = bytes.clone();
    mutated[at..at + 3].copy_from_slice(b"Xdd");
    let model = dir.path().join("xdd.onnx");
    std::fs::write(&model, mutated).unwrap();
    let tokenizer = cached("models/minilm-l6/tokenizer.json");
    for (file, name) in [
        (model.as_path(), "xdd"),
        (cached("models/tiny/add.onnx").as_path(), "add"),
    ] {
        ctl.cli_ok(&[
            "models",
            "add",
            file.to_str().unwrap(),
            "--name",
            name,
            "--version",
            "1",
            "--with",
            tokenizer.to_str().unwrap(),
        ]);
    }
    let suite = dir.path().join("op.toml");
    std::fs::write(
        &suite,
        "name = \"op\"\nmodels = [\"xdd@1\", \"add@1\"]\n[input]\ntext = [\"hi there\"]\n[conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nmin_queries = 10\nmin_duration_s = 0.1\n",
    )
    .unwrap();
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    assert!(!out.status.success(), "one of two jobs failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .expect("a FAILED line");
    assert!(
        failed.contains("xdd@1") && failed.contains("Xdd"),
        "names the operator: {failed}"
    );
    assert!(stdout.contains("add@1"), "the next job still ran: {stdout}");
    drop(agent);
}

#[test]
fn a_worker_past_its_memory_limit_is_stopped_with_the_reason_and_the_agent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let empty = dir.path().join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    // MiniLM fp32 needs about 170 MB resident; the tiny model a few MB over the runtime's own.
    let mut agent = edgefleet_e2e::start_agent_with(
        dir.path(),
        &ctl,
        "edge-capped",
        &[],
        &empty,
        &["--worker-memory-limit", "100"],
    );
    ctl.wait_online(&["edge-capped"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm-l6", "fp32");
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let suite = dir.path().join("capped.toml");
    std::fs::write(
        &suite,
        "name = \"capped\"\nmodels = [\"minilm-l6@fp32\", \"add@1\"]\n[input]\ntext = [\"The firmware update failed.\"]\n[conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nmin_queries = 10\nmin_duration_s = 0.1\n",
    )
    .unwrap();
    let out = ctl.cli(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    assert!(!out.status.success(), "the capped job failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .unwrap_or_else(|| panic!("a FAILED line: {stdout}"));
    assert!(
        failed.contains("minilm-l6@fp32") && failed.contains("exceeded 100 MB of memory"),
        "{failed}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("add@1")),
        "the next job still ran: {stdout}"
    );
    assert!(agent.is_running(), "the agent stays up");
}
