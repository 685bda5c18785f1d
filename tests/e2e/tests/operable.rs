//! End-to-end: what an operator's monitoring sees. A controller started with `--metrics-listen`
//! serves Prometheus metrics and `/healthz` over plain HTTP, and the gRPC health service on its
//! TLS port (no client certificate or token needed); a scrape after an agent connected and ran
//! a benchmark shows the agent, its heartbeats, the artifact bytes and the job results.

use std::time::Duration;

use edgefleet_e2e::metrics::{http_get, metrics_address, samples};
use edgefleet_e2e::{start_agent, Controller};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[test]
fn metrics_and_health_show_the_fleet_at_work() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with(
        dir.path(),
        "127.0.0.1:0",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = metrics_address(&ctl);

    // Before any agent: every series is there, at zero.
    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains("200"), "{status}");
    let before = samples(&body);
    assert_eq!(before["edgefleet_agents_connected"], 0.0, "{body}");
    assert_eq!(before["edgefleet_heartbeats_total"], 0.0, "{body}");
    assert!(
        body.contains("# HELP edgefleet_artifact_bytes_served_total"),
        "{body}"
    );
    assert_eq!(
        http_get(&metrics, "/healthz"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    assert!(http_get(&metrics, "/other").0.contains("404"));

    let _agent = start_agent(dir.path(), &ctl, "edge-m", &[]);
    ctl.wait_online(&["edge-m"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let suite = dir.path().join("m.toml");
    std::fs::write(
        &suite,
        "name = \"m\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nmin_queries = 10\nmin_duration_s = 0.1\n",
    )
    .unwrap();
    ctl.cli_ok(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    // Heartbeats come every second (the harness's --heartbeat-s 1); the store takes them in a
    // batch once a second.
    edgefleet_e2e::wait_until(
        "a heartbeat counted and a heartbeat batch timed in /metrics",
        Duration::from_secs(60),
        || {
            let now = samples(&http_get(&metrics, "/metrics").1);
            now.get("edgefleet_heartbeats_total")
                .is_some_and(|n| *n >= 1.0)
                && now
                    .get("edgefleet_store_seconds_count{operation=\"heartbeats\"}")
                    .is_some_and(|n| *n >= 1.0)
        },
    );

    let after = samples(&http_get(&metrics, "/metrics").1);
    assert_eq!(after["edgefleet_agents_connected"], 1.0, "{after:#?}");
    assert!(after["edgefleet_heartbeats_total"] >= 1.0, "{after:#?}");
    let model_bytes = std::fs::metadata(edgefleet_e2e::cached("models/tiny/add.onnx"))
        .unwrap()
        .len() as f64;
    assert!(
        after["edgefleet_artifact_bytes_served_total"] >= model_bytes,
        "{after:#?}"
    );
    assert!(
        after["edgefleet_artifact_transfers_total"] >= 1.0,
        "{after:#?}"
    );
    assert_eq!(
        after["edgefleet_job_results_total{outcome=\"measured\"}"], 1.0,
        "{after:#?}"
    );
    assert_eq!(after["edgefleet_jobs{state=\"done\"}"], 1.0, "{after:#?}");
    assert_eq!(
        after["edgefleet_jobs{state=\"pending\"}"], 0.0,
        "{after:#?}"
    );
    assert_eq!(
        after["edgefleet_rollouts{state=\"running\"}"], 0.0,
        "{after:#?}"
    );
    assert!(
        after["edgefleet_store_seconds_count{operation=\"record_result\"}"] >= 1.0,
        "{after:#?}"
    );
    assert!(
        after["edgefleet_store_seconds_count{operation=\"heartbeats\"}"] >= 1.0,
        "{after:#?}"
    );
    // Heartbeats reach the store in batches, once a second: the agent's last-seen time moves on.
    let last_seen = || {
        let agents: serde_json::Value =
            serde_json::from_str(&ctl.cli_ok(&["agents", "--json"])).unwrap();
        agents
            .as_array()
            .and_then(|all| all.iter().find(|a| a["name"] == "edge-m"))
            .and_then(|a| a["last_seen"].as_str())
            .unwrap_or_else(|| panic!("no last_seen for edge-m in {agents}"))
            .to_string()
    };
    let first = last_seen();
    edgefleet_e2e::wait_until(
        &format!("edge-m's last_seen to move on from {first}"),
        Duration::from_secs(60),
        || last_seen() > first,
    );

    // gRPC health over the TLS port: the CA is all a probe needs.
    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ctl.credentials).unwrap()).unwrap();
    let ca = credentials["ca_pem"].as_str().unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Endpoint::from_shared(ctl.address.clone())
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        for service in ["", "edgefleet.v1.AgentLink", "edgefleet.v1.Admin"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of `{service}`: {e}"))
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "`{service}`");
        }
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    });
}

#[test]
fn a_metrics_address_already_taken_stops_serve_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(edgefleet_e2e::binary("edgefleet"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &address,
        ])
        .arg("--data-dir")
        .arg(dir.path().join("controller"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for metrics on {address}")),
        "{stderr}"
    );
}
