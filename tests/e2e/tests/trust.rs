//! End-to-end: who may talk to the controller. Real processes, real TLS on loopback. Each
//! refusal is checked to leave the store (and the agents) as they were.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use edgefleet_e2e::{binary, start_agent, start_agent_raw, Controller};
use edgefleet_proto::v1::admin_client::AdminClient;
use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{FetchArtifactRequest, ListModelsRequest};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sensors(dir: &Path) -> std::path::PathBuf {
    let empty = dir.join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    empty
}

fn model_count(ctl: &Controller) -> usize {
    serde_json::from_str::<Vec<serde_json::Value>>(&ctl.cli_ok(&["models", "ls", "--json"]))
        .unwrap()
        .len()
}

fn add_tiny_model(ctl: &Controller) -> String {
    let model = edgefleet_e2e::cached("models/tiny/add.onnx");
    ctl.cli_ok(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "tiny",
        "--version",
        "1",
    ]);
    ctl.model("tiny@1")["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A TLS channel to `ctl` as the agent whose files are in `agent_dir` (its own certificate).
async fn channel_as_agent(ctl: &Controller, agent_dir: &Path) -> Channel {
    let read = |f: &str| std::fs::read_to_string(agent_dir.join(f)).unwrap();
    Endpoint::from_shared(ctl.address.clone())
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read("ca.pem")))
                .identity(Identity::from_pem(read("agent.pem"), read("agent.key"))),
        )
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The controller's CA, from its credentials file.
fn ca_of(ctl: &Controller) -> String {
    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ctl.credentials).unwrap()).unwrap();
    credentials["ca_pem"].as_str().unwrap().to_string()
}

#[test]
fn plaintext_clients_and_clients_trusting_another_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let model = edgefleet_e2e::cached("models/tiny/add.onnx");
    let add = [
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "tiny",
        "--version",
        "1",
    ];

    // http:// without --insecure: refused before anything is sent, exit 64.
    let out = std::process::Command::new(binary("edgefleet"))
        .args(add)
        .args(["--controller", &format!("http://{}", ctl.listen)])
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("is plaintext"),
        "{}",
        stderr_of(&out)
    );
    // A client speaking plaintext to the TLS port anyway.
    let out = std::process::Command::new(binary("edgefleet"))
        .args(add)
        .args([
            "--insecure",
            "--controller",
            &format!("http://{}", ctl.listen),
        ])
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        stderr_of(&out).trim().lines().count(),
        1,
        "{}",
        stderr_of(&out)
    );

    // A client that trusts another controller's CA.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Controller::start(&other_dir, "127.0.0.1:0");
    let out = std::process::Command::new(binary("edgefleet"))
        .args(add)
        .args(["--controller", &ctl.address])
        .env("EDGEFLEET_CREDENTIALS", &other.credentials)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("invalid peer certificate"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(model_count(&ctl), 0, "nothing was stored");
}

#[test]
fn enrollment_tokens_are_single_use_expire_and_bind_names() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let sensors = sensors(dir.path());
    let enroll = |name: &str, token: &str| {
        let flags = ["--controller", &ctl.address, "--enroll-token", token];
        start_agent_raw(dir.path(), name, &sensors, &flags)
    };

    let open: serde_json::Value =
        serde_json::from_str(&ctl.cli_ok(&["agents", "enroll", "--json"])).unwrap();
    let token = open["token"].as_str().unwrap().to_string();
    let _first = enroll("first", &token);
    ctl.wait_online(&["first"], Duration::from_secs(60));
    let key = dir.path().join("agents/first/agent.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The same token again, by another device.
    let replay = enroll("second", &token);
    replay.wait_for_log("was used already", Duration::from_secs(30));

    // A token past its lifetime.
    let short = ctl
        .cli_ok(&["agents", "enroll", "--ttl", "1s"])
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let late = enroll("late", &short);
    late.wait_for_log("expired", Duration::from_secs(30));

    // A token for name A used by a device called B.
    let bound = ctl.enroll_token("edge-a");
    let wrong = enroll("edge-b", &bound);
    wrong.wait_for_log(
        "is for an agent named edge-a, not edge-b",
        Duration::from_secs(30),
    );

    // A token whose copy was cut: one line, exit 64, nothing written.
    let mut cut = bound.clone();
    cut.pop();
    let out = std::process::Command::new(binary("edgefleet-agent"))
        .args(["run", "--controller", &ctl.address, "--enroll-token", &cut])
        .args(["--data-dir"])
        .arg(dir.path().join("agents/cut"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("checksum does not match"));
    assert!(!dir.path().join("agents/cut/identity.json").exists());

    let names: Vec<String> = ctl
        .agents()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["first"],
        "only the first enrollment created an agent"
    );
}

#[test]
fn a_revoked_agent_is_cut_off_at_once_and_refused_after() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent = start_agent(dir.path(), &ctl, "edge-r", &[]);
    ctl.wait_online(&["edge-r"], Duration::from_secs(60));
    // A result measured before, to see under which name history keeps it.
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let suite = dir.path().join("tiny.toml");
    std::fs::write(
        &suite,
        "name = \"tiny\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"x\"]\n[conditions]\nidle_power_s = 0\n\
         [[scenario]]\nkind = \"single-stream\"\nmin_queries = 5\nmin_duration_s = 0.1\n",
    )
    .unwrap();
    ctl.cli_ok(&["bench", "run", suite.to_str().unwrap(), "--wait"]);

    let revoked_at = Instant::now();
    ctl.cli_ok(&["agents", "revoke", "edge-r"]);
    agent.wait_for_log("link to the controller lost", Duration::from_secs(30));
    println!("stream closed {:?} after the revoke", revoked_at.elapsed());
    agent.wait_for_log("was revoked", Duration::from_secs(30));
    let agents = ctl.agents();
    assert_eq!(agents[0]["online"], false, "{agents:#?}");
    assert!(agents[0]["revoked_at"].is_string(), "{agents:#?}");
    let listing = ctl.cli_ok(&["agents"]);
    assert!(listing.contains("revoked"), "{listing}");

    // `agents rm` forgets it; a device that enrolls again is a new agent.
    ctl.cli_ok(&["agents", "rm", "edge-r"]);
    assert!(ctl.agents().is_empty());
    // Its results keep its name and hardware.
    let records = ctl.records(&dir.path().join("report"), None);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["agent"], "edge-r", "{records:#?}");
    assert!(
        !records[0]["target"].as_str().unwrap_or_default().is_empty(),
        "{records:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_certificates_admin_tokens_and_fetches_stay_in_their_lanes() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-l", &[]);
    ctl.wait_online(&["edge-l"], Duration::from_secs(60));
    let sha = add_tiny_model(&ctl);
    let agent_dir = dir.path().join("agents/edge-l");
    let channel = channel_as_agent(&ctl, &agent_dir).await;

    // An agent's certificate cannot call the admin API.
    let refused = AdminClient::new(channel.clone())
        .list_models(ListModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The agent may not fetch what was never sent to it.
    let mut link = AgentLinkClient::new(channel);
    let refused = link
        .fetch_artifact(FetchArtifactRequest {
            sha256: sha.clone(),
            offset: 0,
            max_bytes: 0,
            agent_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // An admin token opens no link: without a certificate, nothing is served.
    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ctl.credentials).unwrap()).unwrap();
    let token = credentials["token"].as_str().unwrap().to_string();
    let plain_tls = Endpoint::from_shared(ctl.address.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_of(&ctl))))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(FetchArtifactRequest {
        sha256: sha,
        offset: 0,
        max_bytes: 0,
        agent_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let refused = AgentLinkClient::new(plain_tls)
        .fetch_artifact(request)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // A viewer token reads but changes nothing.
    let viewer = ctl
        .cli_ok(&[
            "admin", "tokens", "create", "--name", "dash", "--role", "viewer",
        ])
        .trim()
        .to_string();
    let viewer_file = dir.path().join("viewer.json");
    let mut as_viewer = credentials.clone();
    as_viewer["token"] = serde_json::Value::String(viewer);
    std::fs::write(&viewer_file, as_viewer.to_string()).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(binary("edgefleet"))
            .args(args)
            .env("EDGEFLEET_CREDENTIALS", &viewer_file)
            .output()
            .unwrap()
    };
    assert!(run(&["models", "ls"]).status.success());
    let model = edgefleet_e2e::cached("models/tiny/add.onnx");
    let add = run(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "tiny",
        "--version",
        "2",
    ]);
    assert!(!add.status.success());
    assert!(
        stderr_of(&add).contains("viewer token: it cannot add models"),
        "{}",
        stderr_of(&add)
    );
    let rollout = run(&["rollout", "start", "tiny@1", "--health", "none"]);
    assert!(
        stderr_of(&rollout).contains("it cannot start rollouts"),
        "{}",
        stderr_of(&rollout)
    );
    assert_eq!(model_count(&ctl), 1, "the viewer stored nothing");
    let rollouts = ctl.cli_ok(&["rollout", "status"]);
    assert!(rollouts.contains("no rollouts yet"), "{rollouts}");

    // A revoked admin token is refused from then on.
    ctl.cli_ok(&["admin", "tokens", "revoke", "dash"]);
    let listing = run(&["models", "ls"]);
    assert!(!listing.status.success());
    assert!(
        stderr_of(&listing).contains("not valid on this controller"),
        "{}",
        stderr_of(&listing)
    );
}

#[test]
fn an_agent_renews_its_certificate_and_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    // Renewal at 70% of 20 s leaves 6 s before expiry; heartbeats every 5 s ride out a busy
    // machine's pauses (three missed ones end a link).
    let ctl = Controller::start_with_heartbeat(
        dir.path(),
        "127.0.0.1:0",
        5,
        &["--agent-cert-lifetime-s", "20"],
    );
    let agent = start_agent(dir.path(), &ctl, "edge-n", &[]);
    ctl.wait_online(&["edge-n"], Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(120);
    while agent.log_text().matches("certificate renewed").count() < 2 {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    ctl.wait_online(&["edge-n"], Duration::from_secs(60));
    let log = std::fs::read_to_string(&ctl.process.log).unwrap();
    assert_eq!(
        log.matches("agent connected").count(),
        1,
        "one connection throughout: {log}"
    );
    assert_eq!(log.matches("agent certificate renewed").count(), 2, "{log}");
}

/// `--san` adds names to the certificate's defaults (the CLI on the host dials 127.0.0.1); a
/// name the certificate does not cover is refused with the names it does cover.
#[test]
fn san_adds_to_the_default_names_and_a_name_error_lists_the_covered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with(dir.path(), "0.0.0.0:0", &["--san", "controller.example"]);
    let port = ctl.listen.rsplit(':').next().unwrap().to_string();
    // The credentials file names 127.0.0.1: still covered.
    let out = Command::new(binary("edgefleet"))
        .args([
            "agents",
            "--controller",
            &format!("https://127.0.0.1:{port}"),
        ])
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // 127.0.0.2 reaches the same listener but is not a name of the certificate.
    let out = Command::new(binary("edgefleet"))
        .args([
            "agents",
            "--controller",
            &format!("https://127.0.0.2:{port}"),
        ])
        .env("EDGEFLEET_CREDENTIALS", &ctl.credentials)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for says in ["127.0.0.2", "controller.example", "localhost", "--san"] {
        assert!(stderr.contains(says), "names {says}: {stderr}");
    }
    assert!(!stderr.contains("running there"), "{stderr}");
}

/// `admin tokens create --out FILE` writes what another machine needs (address, CA, token) in the
/// format `--credentials` reads, private to its owner; it never overwrites a file.
#[test]
fn a_token_handed_over_as_a_credentials_file_works_for_its_holder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let file = dir.path().join("ci.json");
    let said = ctl.cli_ok(&[
        "admin",
        "tokens",
        "create",
        "--name",
        "ci",
        "--role",
        "viewer",
        "--out",
        file.to_str().unwrap(),
    ]);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = written["token"].as_str().unwrap();
    assert!(said.contains("wrote") && !said.contains(token), "{said}");
    assert_eq!(written["controller"], ctl.address.as_str());
    assert!(written["ca_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let holder = |args: &[&str]| {
        Command::new(binary("edgefleet"))
            .args(args)
            .arg("--credentials")
            .arg(&file)
            .env_remove("EDGEFLEET_CONTROLLER")
            .env_remove("EDGEFLEET_CREDENTIALS")
            .output()
            .unwrap()
    };
    let out = holder(&["agents"]);
    assert!(
        out.status.success(),
        "a viewer lists agents: {}",
        stderr_of(&out)
    );
    let out = holder(&["agents", "enroll", "--name", "x"]);
    assert!(!out.status.success(), "a viewer cannot enroll");
    assert!(
        stderr_of(&out).contains("viewer"),
        "refused for its role: {}",
        stderr_of(&out)
    );

    // A second --out to the same file is refused before any token is made.
    let again = ctl.cli(&[
        "admin",
        "tokens",
        "create",
        "--name",
        "ci-2",
        "--role",
        "viewer",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(64), "{}", stderr_of(&again));
    assert!(
        stderr_of(&again).contains("exists"),
        "{}",
        stderr_of(&again)
    );
    let tokens = ctl.cli_ok(&["admin", "tokens", "ls", "--json"]);
    assert!(!tokens.contains("ci-2"), "{tokens}");
}
