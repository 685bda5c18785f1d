//! Peers that connect and never speak: a flood of idle and half-handshake connections from five
//! processes on five source addresses, more connections in all than the controller's open-file limit,
//! while real agents reconnect and the CLI is used. The agents and the CLI get through (past a
//! cap the oldest unauthenticated connection makes way), the deadlines cut the flood's
//! connections, and the controller's descriptors stay below its limit; the figures (connections
//! held at peak, the time to shed a flood frozen in place, the agents' reconnect time) are
//! printed for the closing note.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::metrics::{http_get, metrics_address, samples};
use edgefleet_e2e::{repo_root, start_agent, wait_until, Controller};

/// The controller's open-file limit in this test; the flood opens more than this in all.
const OPEN_FILES: u64 = 1024;
const FLOODERS: usize = 5;
const CONNECTIONS_EACH: usize = 500;
const HANDSHAKE_S: u64 = 2;
const IDLE_S: u64 = 3;

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The process's open descriptors by kind (`socket`, `anon_inode:[eventpoll]`, a file's path),
/// most first: what a peak was made of.
fn descriptor_kinds(pid: u32) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let kind = target.split(':').next().unwrap_or_default().to_string();
        *kinds.entry(kind).or_default() += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The last JSON report line a flooder wrote.
fn last_report(path: &Path) -> serde_json::Value {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null)
}

struct Flooder {
    child: Child,
    out: std::path::PathBuf,
}

impl Drop for Flooder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series from the controller's `/metrics`; 0 when the endpoint does not answer (it may be
/// out of descriptors itself in the exhaustion test).
fn metric(metrics: &str, series: &str) -> f64 {
    let address = metrics.to_string();
    std::panic::catch_unwind(|| http_get(&address, "/metrics").1)
        .ok()
        .and_then(|body| samples(&body).get(series).copied())
        .unwrap_or(0.0)
}

/// The two floods load both cores: one at a time.
static ONE_FLOOD_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The most refusal lines a budget of ten a minute allows per listener since `since`.
fn log_budget_since(since: Instant, listeners: usize) -> usize {
    (since.elapsed().as_secs() as usize / 60 + 1) * 10 * listeners
}

#[test]
fn a_flood_of_silent_connections_is_cut_off_while_agents_and_the_cli_get_through() {
    let _alone = one_flood_at_a_time();
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_open_files(
        dir.path(),
        "127.0.0.1:0",
        OPEN_FILES,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--handshake-timeout-s",
            &HANDSHAKE_S.to_string(),
            "--unauthenticated-idle-s",
            &IDLE_S.to_string(),
            "--max-unauthenticated",
            "200",
            "--max-unauthenticated-per-source",
            "100",
        ],
    );
    let metrics = metrics_address(&ctl);
    let pid = ctl.process.child.id();
    let names = ["edge-f1", "edge-f2", "edge-f3"];
    let mut agents: Vec<_> = names
        .iter()
        .map(|n| start_agent(dir.path(), &ctl, n, &[]))
        .collect();
    ctl.wait_online(&names, Duration::from_secs(90));
    let fds_before = open_descriptors(pid);

    // The flood: five processes, five loopback sources besides the agents' and the CLI's own
    // (127.0.0.1), 2,500 connections wanted in all.
    let port = ctl.listen.rsplit(':').next().unwrap().to_string();
    let flooders: Vec<Flooder> = (0..FLOODERS)
        .map(|i| {
            let out = dir.path().join(format!("flood-{i}.jsonl"));
            let child = Command::new("python3")
                .arg(repo_root().join("tests/e2e/flood.py"))
                .args(["--target", &format!("127.0.0.1:{port}")])
                .args(["--source", &format!("127.0.0.{}", i + 2)])
                .args(["--connections", &CONNECTIONS_EACH.to_string()])
                .args(["--mode", "mixed", "--duration", "120"])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start flood.py");
            Flooder { child, out }
        })
        .collect();
    let made_way = |m: &str| {
        metric(
            m,
            "edgefleet_connections_cut_total{listener=\"link\",phase=\"evicted\"}",
        )
    };
    let flood_took = wait_until(
        "the flood to fill the unauthenticated caps (older connections making way)",
        Duration::from_secs(60),
        || made_way(&metrics) > 100.0,
    );
    println!("flood: caps full {flood_took:?} after it began");

    // While it lasts: every agent is restarted and must come back; the CLI answers.
    let mut peak_fds = 0;
    let mut peak_rss = 0;
    let mut peak_held = 0.0f64;
    let mut peak_kinds = String::new();
    let mut sample = || {
        let fds = open_descriptors(pid);
        if fds > peak_fds {
            peak_fds = fds;
            peak_kinds = descriptor_kinds(pid);
        }
        peak_rss = peak_rss.max(rss_kib(pid));
        peak_held = peak_held.max(metric(
            &metrics,
            "edgefleet_connections{listener=\"link\",state=\"open\"}",
        ));
    };
    for agent in &mut agents {
        assert!(agent.terminate(Duration::from_secs(30)).is_some());
    }
    wait_until(
        "the restarted agents to show offline",
        Duration::from_secs(60),
        || ctl.agents().iter().all(|a| a["online"] == false),
    );
    sample();
    let reconnect = Instant::now();
    let agents: Vec<_> = names
        .iter()
        .map(|n| start_agent(dir.path(), &ctl, n, &[]))
        .collect();
    let mut cli_times = Vec::new();
    let mut cli_failures = Vec::new();
    wait_until(
        "every agent back online during the flood",
        Duration::from_secs(120),
        || {
            sample();
            let started = Instant::now();
            let listed = ctl.cli(&["agents", "--json"]);
            if !listed.status.success() {
                // Counted, and bounded below: a CLI call that loses the race for a slot on a
                // starved machine is retried, as a person would.
                cli_failures.push(String::from_utf8_lossy(&listed.stderr).to_string());
                return false;
            }
            cli_times.push(started.elapsed());
            let agents: Vec<serde_json::Value> =
                serde_json::from_slice(&listed.stdout).unwrap_or_default();
            names.iter().all(|n| {
                agents
                    .iter()
                    .any(|a| a["name"] == *n && a["online"] == true)
            })
        },
    );
    let reconnect_time = reconnect.elapsed();
    assert!(
        cli_failures.len() <= cli_times.len(),
        "the CLI gets through the flood: {} calls failed, {} succeeded: {cli_failures:?}",
        cli_failures.len(),
        cli_times.len()
    );
    wait_until(
        "`edgefleet models ls` to answer during the flood",
        Duration::from_secs(60),
        || ctl.cli(&["models", "ls"]).status.success(),
    );
    // Let the flood run through several deadlines, sampling the controller.
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(3 * (HANDSHAKE_S + IDLE_S)) {
        sample();
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = samples(&http_get(&metrics, "/metrics").1);
    let unauthenticated = during
        .get("edgefleet_connections{listener=\"link\",state=\"unauthenticated\"}")
        .copied()
        .unwrap_or(-1.0);
    let cut = during
        .get("edgefleet_connections_cut_total{listener=\"link\",phase=\"handshake\"}")
        .copied()
        .unwrap_or(0.0);

    // The flood's own view: how many connects the kernel completed for it.
    let opened: u64 = flooders
        .iter()
        .map(|f| last_report(&f.out)["opened"].as_u64().unwrap_or(0))
        .sum();
    let cut_before_stop = metric(
        &metrics,
        "edgefleet_connections_cut_total{listener=\"link\",phase=\"handshake\"}",
    );
    // Stop the flooders where they are (SIGSTOP): their sockets stay open and silent, and no
    // new ones come; the deadlines alone must shed what the controller holds.
    for flooder in &flooders {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(flooder.child.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    let shed = wait_until(
        "the controller to cut the stopped flood's silent connections at its deadlines",
        Duration::from_secs(60),
        || {
            metric(
                &metrics,
                "edgefleet_connections{listener=\"link\",state=\"unauthenticated\"}",
            ) == 0.0
        },
    );
    drop(flooders);
    ctl.wait_online(&names, Duration::from_secs(30));
    let log = std::fs::read_to_string(&ctl.process.log).unwrap();
    let refusal_lines = log.matches("refused a connection").count()
        + log
            .matches("closed the oldest unauthenticated connection")
            .count();
    println!(
        "flood figures: {FLOODERS} processes x {CONNECTIONS_EACH} connections wanted ({} in all) \
         against an open-file limit of {OPEN_FILES}; {opened} connects accepted by the kernel, \
         {} closed by the controller to make way past a cap, {cut} cut at the {HANDSHAKE_S} s handshake \
         deadline; connections the controller held at once, at peak: {peak_held} (agents and CLI \
         included); controller descriptors {fds_before} before, {peak_fds} at peak; RSS at peak \
         {peak_rss} KiB; unauthenticated during the flood: {unauthenticated}; three agents \
         restarted and back online in {reconnect_time:?}; CLI calls during the flood: {} \
         (slowest {:?}, {} failed); the flood stopped in place (SIGSTOP, its sockets open): all shed by the \
         deadlines in {shed:?}; refusal log lines: {refusal_lines}",
        FLOODERS * CONNECTIONS_EACH,
        made_way(&metrics),
        cli_times.len(),
        cli_times.iter().max().copied().unwrap_or_default(),
        cli_failures.len(),
    );
    assert!(
        peak_fds < OPEN_FILES as usize - 100,
        "the controller's descriptors stay below its limit with room to spare: {peak_fds} \
         ({peak_kinds})"
    );
    let cut_after_stop = metric(
        &metrics,
        "edgefleet_connections_cut_total{listener=\"link\",phase=\"handshake\"}",
    );
    assert!(
        cut_after_stop > cut_before_stop,
        "the handshake deadline shed the frozen flood ({cut_before_stop} cut before, {cut_after_stop} after)"
    );
    assert!(
        refusal_lines <= log_budget_since(began, 1),
        "refusals are logged at a bounded rate, not per connection: {refusal_lines} lines"
    );
    drop(agents);
}

/// With no descriptor reserve and caps above the open-file limit, the flood runs the process out
/// of descriptors: accept fails with EMFILE, which is counted and logged within the budget while
/// the loop backs off; once the flood stops (its silent connections cut by the deadline) the
/// controller serves again.
#[test]
fn running_out_of_descriptors_is_counted_and_logged_and_the_accept_loop_recovers() {
    let _alone = one_flood_at_a_time();
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_open_files(
        dir.path(),
        "127.0.0.1:0",
        256,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--handshake-timeout-s",
            &HANDSHAKE_S.to_string(),
            "--descriptor-reserve",
            "0",
            "--max-unauthenticated",
            "100000",
            "--max-unauthenticated-per-source",
            "100000",
        ],
    );
    let metrics = metrics_address(&ctl);
    let port = ctl.listen.rsplit(':').next().unwrap().to_string();
    let out = dir.path().join("flood.jsonl");
    let child = Command::new("python3")
        .arg(repo_root().join("tests/e2e/flood.py"))
        .args(["--target", &format!("127.0.0.1:{port}")])
        .args(["--source", "127.0.0.2", "--connections", "600"])
        .args(["--mode", "idle", "--duration", "120"])
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("start flood.py");
    let flooder = Flooder { child, out };
    let emfile = "edgefleet_accept_errors_total{listener=\"link\",error=\"EMFILE\"}";
    wait_until(
        "accept to fail with EMFILE and be counted",
        Duration::from_secs(60),
        || metric(&metrics, emfile) > 0.0,
    );
    drop(flooder);
    // The flood is gone: the controller accepts again.
    wait_until(
        "the CLI to get through once the descriptors are free",
        Duration::from_secs(60),
        || ctl.cli(&["agents", "--json"]).status.success(),
    );
    let agent = start_agent(dir.path(), &ctl, "edge-e", &[]);
    ctl.wait_online(&["edge-e"], Duration::from_secs(60));
    let log = std::fs::read_to_string(&ctl.process.log).unwrap();
    let lines = log
        .matches("cannot accept connections; backing off")
        .count();
    println!(
        "descriptor exhaustion: {} EMFILE accept errors counted, {lines} log lines",
        metric(&metrics, emfile)
    );
    // At most ten a minute per listener (the link's and the metrics endpoint's, which the test
    // polls through the exhaustion), however many accepts failed.
    assert!(
        lines >= 1 && lines <= log_budget_since(began, 2),
        "{lines} lines: {log}"
    );
    drop(agent);
}
