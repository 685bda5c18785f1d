//! Several controllers on one PostgreSQL database and one S3 store, behind a real HAProxy in TCP
//! mode (mutual TLS ends on the replicas): agents enroll and connect through the one address,
//! any replica answers the CLI, one leads. Real processes throughout, killed with SIGKILL and
//! stopped with SIGSTOP as a dead host or a frozen VM would.

use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_e2e::haproxy::Haproxy;
use edgefleet_e2e::replicas::{self, controllers, database_url, leader, LEASE_S};
use edgefleet_e2e::{start_agent_raw, Controller, Process, StateIn};

/// Generous: CI runs on a busy two-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// These tests start many processes: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_replica(dir: &Path, id: &str, state: &StateIn, first: Option<&Controller>) -> Controller {
    replicas::start_replica(dir, id, state, first, "127.0.0.1:0", &[])
}

/// An agent that enrolls and connects through the balancer's one address.
fn agent(dir: &Path, lb: &Haproxy, ctl: &Controller, name: &str) -> Process {
    replicas::agent_behind(dir, lb, ctl, name, &[])
}

fn agent_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Every (planned time, outcome) of schedule `name`'s fires, read from PostgreSQL.
fn fires(url: &str, name: &str) -> Vec<(i64, String)> {
    let out = edgefleet_test_postgres::cluster()
        .psql_on(
            url,
            &format!(
                "SELECT planned_ms || ' ' || outcome FROM schedule_fires \
                 WHERE schedule = '{name}' AND manual = 0 ORDER BY planned_ms, id"
            ),
        )
        .expect("psql");
    out.lines()
        .filter_map(|l| {
            let (at, outcome) = l.trim().split_once(' ')?;
            Some((at.parse().ok()?, outcome.to_string()))
        })
        .collect()
}

fn kill(ctl: &mut Controller) {
    let _ = ctl.process.child.kill(); // SIGKILL: no goodbye, its lease and agents left as they were
    let _ = ctl.process.child.wait();
}

/// Three replicas behind HAProxy, six agents. The leader, which also holds agents, is killed in
/// the middle of a rollout: another replica takes the lease within the lease time, the killed
/// one's agents come back through the others, the rollout finishes with every agent installed
/// exactly once, and a schedule firing every two seconds loses and doubles no fire across the
/// change.
#[test]
fn the_leader_killed_mid_rollout_costs_a_reconnect_not_the_rollout_or_a_fire() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let url = database_url(&state);
    let first = start_replica(dir.path(), "r0", &state, None);
    let mut replicas = vec![first];
    for id in ["r1", "r2"] {
        let next = start_replica(dir.path(), id, &state, Some(&replicas[0]));
        replicas.push(next);
    }
    let lb = Haproxy::start(
        &replicas
            .iter()
            .map(|r| r.listen.clone())
            .collect::<Vec<_>>(),
    );
    let leader_id = wait_for("a leader", DEADLINE, || leader(&replicas[1]));

    let names: Vec<String> = (1..=6).map(|i| format!("edge-{i}")).collect();
    let mut agents: Vec<Process> = names
        .iter()
        .map(|n| agent(dir.path(), &lb, &replicas[0], n))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    replicas[2].wait_online(&name_refs, DEADLINE);
    let held = wait_for("every agent counted by a replica", DEADLINE, || {
        let listed = controllers(&replicas[0]);
        let total: u64 = listed.iter().map(|c| c["agents"].as_u64().unwrap()).sum();
        (listed.len() == 3 && total == 6).then_some(listed)
    });
    // Round robin over three replicas: the agents are spread, none holds them all.
    assert!(
        held.iter().all(|c| c["agents"].as_u64().unwrap() < 6),
        "{held:#?}"
    );
    assert_eq!(held.iter().filter(|c| c["leader"] == true).count(), 1);

    // Models and schedules go in through any replica.
    replicas[1].add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    replicas[2].add_cached_model("models/tiny/add.onnx", "add", "1");
    let suite = dir.path().join("nobody.toml");
    std::fs::write(
        &suite,
        "name = \"nobody\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n",
    )
    .unwrap();
    // A fire every two seconds for no agent at all: each is recorded, as failed, and costs the
    // fleet nothing.
    replicas[2].cli_ok(&[
        "schedule",
        "add",
        "tick",
        "--cron",
        "*/2 * * * * *",
        "--select",
        "hw=none",
        "--suite",
        suite.to_str().unwrap(),
    ]);
    wait_for("the leader to fire the schedule", DEADLINE, || {
        (fires(&url, "tick").len() >= 2).then_some(())
    });

    let id = replicas[1]
        .cli_ok(&["rollout", "start", "minilm@int8", "--waves", "34%,67%,100%"])
        .trim()
        .to_string();
    wait_for("the first wave installed", DEADLINE, || {
        let status = replicas[0].rollout(&id);
        let done = status["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| matches!(t["state"].as_str(), Some("installed" | "done")))
            .count();
        (done >= 2).then_some(())
    });

    // The leader dies, with its agents' streams and its lease as they were.
    let at = replicas
        .iter()
        .position(|r| r.data_dir.parent().unwrap().ends_with(&leader_id))
        .expect("the leader is one of ours");
    let mut dead = replicas.remove(at);
    let killed = Instant::now();
    kill(&mut dead);

    let next = wait_for("another replica to take the lease", DEADLINE, || {
        leader(&replicas[0]).filter(|l| *l != leader_id)
    });
    let took = killed.elapsed();
    eprintln!("lease moved from {leader_id} to {next} {took:?} after the kill");
    assert!(
        took < Duration::from_secs(LEASE_S * 3),
        "the lease moved to {next} {took:?} after the kill (lease {LEASE_S} s)"
    );
    replicas[0].wait_online(&name_refs, DEADLINE);

    wait_for("the rollout to succeed", DEADLINE, || {
        let status = replicas[1].rollout(&id);
        assert_ne!(status["state"], "aborted", "{status:#}");
        (status["state"] == "succeeded").then_some(())
    });
    for name in &names {
        let placements = replicas[0].model("minilm@int8");
        let role = placements["placements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["agent"] == name.as_str())
            .map(|p| p["role"].clone());
        assert_eq!(
            role,
            Some(serde_json::json!("active")),
            "{name}: {placements:#}"
        );
        // Installed exactly once: a command delivered again is skipped by the agent.
        let installs = agent_log(dir.path(), name)
            .matches("model installed and active")
            .count();
        assert_eq!(installs, 1, "{name} installed {installs} times");
    }

    // The schedule went on under the new leader: every two-second fire from the first to the
    // last recorded exactly once, none lost to the change.
    let after_ms = now_ms() + 2_000;
    wait_for("a fire after the change", DEADLINE, || {
        fires(&url, "tick")
            .iter()
            .any(|(at, _)| *at >= after_ms)
            .then_some(())
    });
    let recorded = fires(&url, "tick");
    replicas[0].cli_ok(&["schedule", "rm", "tick"]);
    assert!(recorded.len() >= 4, "{recorded:?}");
    eprintln!(
        "agents held before the kill: {held:?}; fires recorded: {}",
        recorded.len()
    );
    let times: Vec<i64> = recorded.iter().map(|(at, _)| *at).collect();
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(unique, times, "a fire recorded twice: {recorded:?}");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 2_000, "a fire lost: {recorded:?}");
    }
    assert!(
        recorded.iter().all(|(_, outcome)| outcome == "failed"),
        "every fire ran (and found no agent), none missed: {recorded:?}"
    );

    for a in &mut agents {
        a.terminate(Duration::from_secs(10));
    }
    drop(lb);
    drop(dead);
}

/// Milliseconds since the epoch, by this machine's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The leader stopped (SIGSTOP) past its lease: another replica leads within the lease time;
/// the stopped one, continued, finds its lease over and steps down, and says so.
#[test]
fn a_leader_stopped_past_its_lease_is_fenced_and_steps_down() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let first = start_replica(dir.path(), "r0", &state, None);
    wait_for("r0 to lead", DEADLINE, || {
        leader(&first).filter(|l| l == "r0")
    });
    let second = start_replica(dir.path(), "r1", &state, Some(&first));
    assert_eq!(leader(&second).as_deref(), Some("r0"));

    let pid = nix::unistd::Pid::from_raw(first.process.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    wait_for("r1 to take the lease", DEADLINE, || {
        leader(&second).filter(|l| l == "r1")
    });
    assert!(stopped.elapsed() < Duration::from_secs(LEASE_S * 3));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    first
        .process
        .wait_for_log("stepped down as leader", DEADLINE);
    // One leader still, the one that took over; the continued one serves as a replica.
    let listed = controllers(&first);
    let leaders: Vec<_> = listed.iter().filter(|c| c["leader"] == true).collect();
    assert_eq!(leaders.len(), 1, "{listed:#?}");
    assert_eq!(leaders[0]["id"], "r1", "{listed:#?}");
}

/// Agents spread over a replica added later, as their streams reach their maximum age; an
/// enrollment token is spent once across replicas; an agent revoked through one replica is cut
/// off by the replica holding it.
#[test]
fn a_replica_added_later_takes_agents_and_a_revocation_reaches_the_replica_holding_the_agent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let url = database_url(&state);
    let aging = ["--max-stream-age-s", "6"];
    let r0 = replicas::start_replica(dir.path(), "r0", &state, None, "127.0.0.1:0", &aging);
    let r1 = replicas::start_replica(dir.path(), "r1", &state, Some(&r0), "127.0.0.1:0", &aging);
    // r2's port is known to the balancer before r2 runs (down until then).
    let later = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let lb = Haproxy::start(&[r0.listen.clone(), r1.listen.clone(), later.clone()]);
    let names = ["edge-1", "edge-2", "edge-3", "edge-4"];
    let _agents: Vec<Process> = names
        .iter()
        .map(|n| agent(dir.path(), &lb, &r0, n))
        .collect();
    r1.wait_online(&names, DEADLINE);

    // One token, two devices, two replicas: the database lets it enroll one.
    let sensors = dir.path().join("no-sensors");
    let token = r0.enroll_token("solo");
    let _solo = start_agent_raw(
        dir.path(),
        "solo",
        &sensors,
        &["--controller", &r1.address, "--enroll-token", &token],
    );
    r0.wait_online(&["solo"], DEADLINE);
    let _copycat = start_agent_raw(
        dir.path(),
        "copycat",
        &sensors,
        &["--controller", &r0.address, "--enroll-token", &token],
    );
    wait_for("the copied token to be refused", DEADLINE, || {
        agent_log(dir.path(), "copycat")
            .contains("the enrollment token was used already")
            .then_some(())
    });

    // Revoked through r0; r1 holds the agent's stream and closes it.
    let solo_id = r0
        .agents()
        .into_iter()
        .find(|a| a["name"] == "solo")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .unwrap();
    let holder = edgefleet_test_postgres::cluster()
        .psql_on(
            &url,
            &format!("SELECT replica FROM agent_holders WHERE agent_id = '{solo_id}'"),
        )
        .unwrap();
    assert_eq!(holder.trim(), "r1");
    let revoked = Instant::now();
    r0.cli_ok(&["agents", "revoke", "solo"]);
    r1.process.wait_for_log(
        "the agent was revoked or removed; closing its stream",
        DEADLINE,
    );
    eprintln!(
        "revoked through r0, cut off by r1 {:?} later",
        revoked.elapsed()
    );
    wait_for("solo offline", DEADLINE, || {
        let solo = r1.agents().into_iter().find(|a| a["name"] == "solo")?;
        (solo["online"] == false).then_some(())
    });

    // r2 joins: streams that reach their age come back through the balancer, some to r2.
    let r2 = replicas::start_replica(dir.path(), "r2", &state, Some(&r0), &later, &aging);
    let spread = wait_for("agents on the replica added later", DEADLINE, || {
        let listed = controllers(&r0);
        let on_r2 = listed
            .iter()
            .find(|c| c["id"] == "r2")
            .and_then(|c| c["agents"].as_u64())
            .unwrap_or(0);
        (on_r2 > 0).then_some(listed)
    });
    eprintln!("after r2 joined: {spread:?}");
    assert!(
        r0.process
            .log_text()
            .contains("the stream reached its maximum age")
            || r1
                .process
                .log_text()
                .contains("the stream reached its maximum age")
    );
    r2.wait_online(&names, DEADLINE);
}

/// An agent given a list of controller addresses (no balancer): it enrolls past an address
/// where nothing answers, connects to a live replica (the first its own order of the list
/// reaches), and when that replica dies it comes back through the other.
#[test]
fn an_agent_with_a_list_of_replicas_moves_to_another_when_one_is_dead() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let url = database_url(&state);
    let r0 = start_replica(dir.path(), "r0", &state, None);
    let r1 = start_replica(dir.path(), "r1", &state, Some(&r0));
    // A port nothing listens on: the address of a replica that is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = format!("https://{dead}");
    let sensors = dir.path().join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let token = r0.enroll_token("listed");
    let listed = [dead.as_str(), &r0.address, &r1.address].join(",");
    let _agent = start_agent_raw(
        dir.path(),
        "listed",
        &sensors,
        &["--controller", &listed, "--enroll-token", &token],
    );
    let holder = |url: &str| {
        edgefleet_test_postgres::cluster()
            .psql_on(
                url,
                "SELECT h.replica FROM agent_holders h JOIN agents a ON a.id = h.agent_id \
                 WHERE a.name = 'listed'",
            )
            .unwrap()
            .trim()
            .to_string()
    };
    // Enrolled through the first address that answered (the dead one came first); connected to
    // whichever live replica its own order of the list reaches first.
    let first = wait_for("the agent held by r0 or r1", DEADLINE, || {
        let h = holder(&url);
        (!h.is_empty()).then_some(h)
    });
    let (mut held_it, other, other_id) = match first.as_str() {
        "r0" => (r0, r1, "r1"),
        "r1" => (r1, r0, "r0"),
        h => panic!("held by {h}, not r0 or r1"),
    };
    other.wait_online(&["listed"], DEADLINE);

    kill(&mut held_it);
    wait_for(
        &format!("the agent on {other_id} after {first} died"),
        DEADLINE,
        || (holder(&url) == other_id).then_some(()),
    );
    other.wait_online(&["listed"], DEADLINE);
    let log = agent_log(dir.path(), "listed");
    assert!(
        log.lines()
            .any(|l| l.contains("connected to the controller") && l.contains(&other.address)),
        "the agent says which replica it reached: {log}"
    );
}

const QUICK: &str = "name = \"replicas-quick\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 0.1\nmax_duration_s = 5\n";

/// Three jobs of two seconds and more each per agent: results arrive over several seconds.
const SUITE: &str = "name = \"replicas-pg-restart\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 2\nmax_duration_s = 10\n\
[[scenario]]\nkind = \"single-stream\"\nthreads = [2]\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 2\nmax_duration_s = 10\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 2\nmin_queries = 20\nmin_duration_s = 2\nmax_duration_s = 10\n";

/// PostgreSQL restarted while a run's results arrive at two replicas: both ride it out (their
/// pools, listeners and lease reconnect), the agents' results that could not be stored come
/// again, and every job has exactly one result.
#[test]
fn replicas_ride_out_a_postgresql_restart_and_store_each_result_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres_and_s3();
    let url = database_url(&state);
    let r0 = start_replica(dir.path(), "r0", &state, None);
    let r1 = start_replica(dir.path(), "r1", &state, Some(&r0));
    let lb = Haproxy::start(&[r0.listen.clone(), r1.listen.clone()]);
    let names = ["edge-1", "edge-2", "edge-3"];
    let _agents: Vec<Process> = names
        .iter()
        .map(|n| agent(dir.path(), &lb, &r0, n))
        .collect();
    r1.wait_online(&names, DEADLINE);
    r1.add_cached_model("models/tiny/add.onnx", "add", "1");
    // The model on every agent first (a run through the other replica): this test is about
    // results arriving, not transfers.
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, QUICK).unwrap();
    r1.cli_ok(&["bench", "run", quick.to_str().unwrap(), "--wait"]);
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let run_id = r0
        .cli_ok(&["bench", "run", suite.to_str().unwrap()])
        .trim()
        .to_string();

    let cluster = edgefleet_test_postgres::cluster();
    cluster.stop();
    wait_for("a replica that cannot store a result", DEADLINE, || {
        [&r0, &r1]
            .iter()
            .any(|r| r.process.log_text().contains("cannot store result"))
            .then_some(())
    });
    cluster.start_again();

    let count = |sql: &str| -> String {
        cluster
            .psql_on(&url, &sql.replace("RUN", &run_id))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    wait_for(
        "all 9 jobs done after PostgreSQL restarted",
        DEADLINE * 2,
        || {
            (count("SELECT count(*) FROM bench_jobs WHERE run_id = 'RUN' AND state = 'done'")
                == "9")
                .then_some(())
        },
    );
    assert_eq!(
        count("SELECT count(*) || ' ' || count(DISTINCT job_id) FROM results WHERE run_id = 'RUN'"),
        "9 9"
    );
    // Both replicas back: alive, one of them leading, every agent online.
    let listed = wait_for("both replicas alive and one leading", DEADLINE, || {
        let listed = controllers(&r1);
        (listed.len() == 2 && listed.iter().filter(|c| c["leader"] == true).count() == 1)
            .then_some(listed)
    });
    eprintln!("after the restart: {listed:?}");
    r0.wait_online(&names, DEADLINE);
}

/// Three kill trials against replicas (the long run: `examples/kill_trials.rs --replicas`): a
/// replica, the leader, PostgreSQL or the agent killed at a random moment of an install or a
/// run; nothing corrupt installed, no result lost or stored twice, every rollout final.
#[test]
fn three_kill_trials_against_replicas_find_nothing_broken() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tally = edgefleet_e2e::kill_trials::run_replicas(dir.path(), 3, 2026);
    println!("{tally}");
    assert_eq!(tally.trials, 3);
    assert_eq!(tally.problems(), 0, "{tally}");
}
