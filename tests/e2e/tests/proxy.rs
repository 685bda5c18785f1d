//! A device on a network whose only way out is an HTTP proxy: the agent runs in a network
//! namespace that reaches nothing but a real proxy (Debian's tinyproxy, with a password) on the
//! host side of its link, and the controller listens on the host's loopback, out of the
//! namespace's reach. Enrollment, the link, a benchmark and an install go through the proxy's
//! `CONNECT` tunnel with TLS end to end; `check` names the proxy without its password; with the
//! proxy stopped the agent says so once and comes back when it returns; a proxy that refuses
//! the tunnel is named as the cause.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgefleet_e2e::http_proxy::{HttpProxy, ProxyOptions, REFUSED_PORT_STATUS};
use edgefleet_e2e::netns::NetNamespace;
use edgefleet_e2e::{binary, start_agent_in, wait_until, Controller, Process};

const PASSWORD: &str = "s3cret-Proxy-pw";

/// Starts agent `name` inside `ns`, reaching the controller through `proxy_url` (HTTPS_PROXY).
fn start_in_namespace(
    ns: &NetNamespace,
    dir: &Path,
    ctl: &Controller,
    name: &str,
    proxy_url: &str,
) -> Process {
    let mut cmd = ns.command(binary("edgefleet-agent"));
    cmd.env("HTTPS_PROXY", proxy_url)
        .env("EDGEFLEET_LOG", "info,edgefleet_agent::link=debug");
    let empty = dir.join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    let flags = ctl.agent_flags(&dir.join("agents").join(name), name);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_agent_in(cmd, dir, name, &empty, &flags)
}

#[test]
fn an_agent_whose_only_way_out_is_a_proxy_enrolls_benchmarks_and_installs_through_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let ns = NetNamespace::create();
    let mut proxy = HttpProxy::start(
        ns.host_address(),
        ProxyOptions {
            basic_auth: Some(("edge".into(), PASSWORD.into())),
            ..ProxyOptions::default()
        },
    );
    let proxy_url = proxy.url();
    assert!(proxy_url.contains(PASSWORD), "{proxy_url}");

    // The namespace cannot reach the controller directly.
    let direct = ns
        .command("python3")
        .args([
            "-c",
            &format!(
                "import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', {}), 3)\nexcept OSError:\n sys.exit(3)",
                ctl.listen.rsplit(':').next().unwrap()
            ),
        ])
        .status()
        .unwrap();
    assert_eq!(
        direct.code(),
        Some(3),
        "the controller is out of the namespace's reach"
    );

    // `check` says which proxy it would use, without the password.
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, format!("controller = \"{}\"\n", ctl.address)).unwrap();
    let check = Command::new(binary("edgefleet-agent"))
        .args(["check", "--config"])
        .arg(&config)
        .env("HTTPS_PROXY", &proxy_url)
        .env(
            "EDGEFLEET_ONNXRUNTIME",
            edgefleet_e2e::onnxruntime_library(),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("proxy"))
        .unwrap_or_else(|| panic!("no proxy line:\n{stdout}"));
    println!("check: {line}");
    assert!(
        line.contains(&format!("http://edge:***@{}", proxy.address()))
            && line.contains("from HTTPS_PROXY"),
        "{line}"
    );
    assert!(!stdout.contains(PASSWORD), "{stdout}");

    // Enrollment and the link, through the proxy.
    let agent = start_in_namespace(&ns, dir.path(), &ctl, "edge-proxied", &proxy_url);
    ctl.wait_online(&["edge-proxied"], Duration::from_secs(90));
    let target = ctl.listen.clone();
    assert!(
        proxy.connect_requests().contains(&target),
        "the proxy tunnelled to the controller: {:?}",
        proxy.connect_requests()
    );

    // A benchmark (its model fetched through the tunnel) and an install.
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    let suite = dir.path().join("quick.toml");
    std::fs::write(
        &suite,
        "name = \"quick\"\nmodels = [\"minilm@int8\"]\n[input]\ntext = [\"The pump stopped.\"]\n\
         [conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1]\n\
         min_queries = 5\nmin_duration_s = 0.2\n",
    )
    .unwrap();
    ctl.cli_ok(&["bench", "run", suite.to_str().unwrap(), "--wait"]);
    assert_eq!(ctl.records(&dir.path().join("report"), None).len(), 1);
    let rollout = ctl.cli_ok(&["rollout", "start", "minilm@int8"]);
    let rollout = rollout.trim().to_string();
    wait_until(
        &format!("rollout {rollout} through the proxy to succeed"),
        Duration::from_secs(180),
        || ctl.rollout(&rollout)["state"] == "succeeded",
    );

    // The proxy goes away: said once, retried, and back when it returns.
    proxy.stop();
    agent.wait_for_log("cannot reach the proxy", Duration::from_secs(60));
    wait_until(
        "the agent to retry a few times while the proxy is down",
        Duration::from_secs(90),
        || {
            agent
                .log_text()
                .matches("still cannot connect to the controller")
                .count()
                >= 2
        },
    );
    let log = agent.log_text();
    // The repeats are at debug level ("still cannot connect"); the line itself once.
    let said = log
        .lines()
        .filter(|l| l.contains("cannot reach the proxy") && !l.contains("still cannot"))
        .count();
    assert_eq!(said, 1, "said once, not at every retry:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cannot reach the proxy"))
        .unwrap();
    println!("agent: {line}");
    proxy.start_again();
    wait_until(
        "the agent back online once the proxy returns",
        Duration::from_secs(90),
        || ctl.agents()[0]["online"] == true,
    );
    assert!(
        !agent.log_text().contains(PASSWORD),
        "the proxy's password never reaches the log"
    );

    // A proxy that does not allow tunnels to the controller's port is named as the cause.
    let strict = HttpProxy::start(
        ns.host_address(),
        ProxyOptions {
            connect_only_443: true,
            ..ProxyOptions::default()
        },
    );
    let refused = start_in_namespace(&ns, dir.path(), &ctl, "edge-strict", &strict.url());
    refused.wait_for_log(REFUSED_PORT_STATUS, Duration::from_secs(60));
    let log = refused.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(REFUSED_PORT_STATUS))
        .unwrap();
    println!("agent: {line}");
    assert!(
        line.contains("refused CONNECT to 127.0.0.1:") && line.contains(&strict.url()),
        "{line}"
    );
    drop((agent, refused));
}
