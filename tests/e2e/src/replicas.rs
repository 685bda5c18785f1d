//! Several controller replicas on one PostgreSQL database and one S3 store, for the tests and
//! the kill trials: started with the key files the first one made (`deploy/replicas.md`), each
//! under its own id with a short lease, and agents that enroll and connect through one
//! balancer address.

use std::path::Path;
use std::time::Duration;

use crate::haproxy::Haproxy;
use crate::{start_agent_raw, Controller, Process, StateIn};

/// The leader's lease of replicas started here (production's default is 10 s).
pub const LEASE_S: u64 = 4;

/// The key files every replica shares: the CA and its key, the manifest signing key, and the
/// CLI's credentials (so that the CLI on each host keeps one token).
pub const SHARED_FILES: [&str; 4] = ["ca.pem", "ca.key", "controller.key", "credentials.json"];

/// Starts replica `id` in `dir/ID` on `listen`, with the shared files of `first` (when given)
/// copied into its data folder first; a replica started again finds them there.
pub fn start_replica(
    dir: &Path,
    id: &str,
    state: &StateIn,
    first: Option<&Controller>,
    listen: &str,
    extra: &[&str],
) -> Controller {
    start_replica_beating(dir, id, state, first, listen, 1, extra)
}

/// The same with agent heartbeats every `heartbeat_s` seconds (the fleet simulator's).
pub fn start_replica_beating(
    dir: &Path,
    id: &str,
    state: &StateIn,
    first: Option<&Controller>,
    listen: &str,
    heartbeat_s: u64,
    extra: &[&str],
) -> Controller {
    let home = dir.join(id);
    std::fs::create_dir_all(&home).unwrap();
    let data = home.join("controller");
    if let Some(first) = first {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&data)
            .unwrap();
        for name in SHARED_FILES {
            let to = data.join(name);
            std::fs::copy(first.data_dir.join(name), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    let lease = LEASE_S.to_string();
    let mut flags = vec!["--replica-id", id];
    // A lease of its own in `extra` (the fleet simulator's, production's default), or ours.
    if !extra.contains(&"--leader-lease-s") {
        flags.extend(["--leader-lease-s", &lease]);
    }
    flags.extend_from_slice(extra);
    Controller::start_in_beating(&home, listen, state, heartbeat_s, &flags)
}

/// `edgefleet controllers --json` through `ctl`.
pub fn controllers(ctl: &Controller) -> Vec<serde_json::Value> {
    serde_json::from_str(&ctl.cli_ok(&["controllers", "--json"])).expect("controllers JSON")
}

/// The replica holding the lease, as `ctl` sees it.
pub fn leader(ctl: &Controller) -> Option<String> {
    controllers(ctl)
        .into_iter()
        .find(|c| c["leader"] == true)
        .map(|c| c["id"].as_str().unwrap().to_string())
}

/// An agent that enrolls (through `ctl`'s token) and connects through the balancer's address,
/// with more flags.
pub fn agent_behind(
    dir: &Path,
    lb: &Haproxy,
    ctl: &Controller,
    name: &str,
    extra: &[&str],
) -> Process {
    let sensors = dir.join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let identity = dir.join("agents").join(name).join("identity.json");
    let mut flags = vec!["--controller".to_string(), lb.address()];
    if !identity.exists() {
        flags.extend(["--enroll-token".into(), ctl.enroll_token(name)]);
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_agent_raw(dir, name, &sensors, &flags)
}

/// The database URL of a state with replicas (PostgreSQL and S3).
pub fn database_url(state: &StateIn) -> String {
    match state {
        StateIn::WithS3 {
            database: Some(url),
            ..
        } => url.clone(),
        _ => panic!("replicas share PostgreSQL and an object store"),
    }
}

/// Waits until `ctl` answers `edgefleet controllers` naming a leader.
pub fn wait_for_leader(ctl: &Controller, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(leader) = leader(ctl) {
            return leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no replica leads after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
