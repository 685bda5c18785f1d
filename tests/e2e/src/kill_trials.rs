//! Kill trials: over and over, SIGKILL the agent or the controller at a random moment of a model
//! install or a benchmark run, start it again, and check what a crash must never do: leave a
//! corrupt or half-installed version active, lose a result or store one twice, or leave a
//! rollout that never reaches a final state. `examples/kill_trials.rs` runs many (`--trials N`);
//! `tests/kill_trials.rs` runs five in CI. [`run_replicas`] does the same to three controller
//! replicas behind HAProxy on PostgreSQL and S3, killing a replica, the leader or PostgreSQL
//! (`--replicas` in the example; three in `tests/replicas.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::haproxy::Haproxy;
use crate::replicas::{agent_behind, leader, start_replica, wait_for_leader};
use crate::{start_agent_with, Controller, StateIn};

/// What the trials found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub trials: u32,
    pub corrupt_installs: u32,
    pub lost_results: u32,
    pub duplicates: u32,
    pub stuck_rollouts: u32,
    /// Trials after which an active version was there and checked file by file.
    pub installs_checked: u32,
}

impl Tally {
    /// Everything that must stay zero.
    pub fn problems(&self) -> u32 {
        self.corrupt_installs + self.lost_results + self.duplicates + self.stuck_rollouts
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trials {}, corrupt installs {}, lost results {}, duplicates {}, stuck rollouts {} \
             (active versions checked {})",
            self.trials,
            self.corrupt_installs,
            self.lost_results,
            self.duplicates,
            self.stuck_rollouts,
            self.installs_checked
        )
    }
}

/// Two jobs of about a second each.
const SUITE: &str = "name = \"trial\"\nmodels = [\"minilm@int8\"]\n[input]\ntext = [\"The firmware update failed.\"]\n[conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1, 2]\nmin_queries = 20\nmin_duration_s = 0.8\n";
/// Model downloads are capped so that a kill can fall inside a transfer (fp32: about 3 s).
const AGENT_FLAGS: [&str; 2] = ["--download-limit", "30"];
/// How long a rollout or run may take to settle after the restart.
const SETTLE: Duration = Duration::from_secs(120);

/// Runs `trials` trials in a fresh folder under `dir`, printing a line per trial.
pub fn run(dir: &Path, trials: u32, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sensors = dir.join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let mut ctl = Controller::start(dir, "127.0.0.1:0");
    let listen = ctl.listen.clone();
    let mut agent = start_agent_with(dir, &ctl, "edge-k", &[], &sensors, &AGENT_FLAGS);
    ctl.wait_online(&["edge-k"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    ctl.add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm", "fp32");
    let suite = dir.join("trial.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let mut tally = Tally::default();
    let mut next_version = ["fp32", "int8"].into_iter().cycle();
    for trial in 1..=trials {
        let kill_controller = rng.random_bool(0.5);
        let install = rng.random_bool(0.5);
        let delay = Duration::from_millis(rng.random_range(100..2500));
        let victim = if kill_controller {
            "controller"
        } else {
            "agent"
        };
        let what = if install { "an install" } else { "a run" };
        // After a restart the agent may still be in its reconnect backoff: a run started now
        // would find no agent online.
        ctl.wait_online(&["edge-k"], SETTLE);
        let started = if install {
            let version = next_version.next().unwrap();
            ctl.cli_ok(&["rollout", "start", &format!("minilm@{version}")])
        } else {
            ctl.cli_ok(&["bench", "run", suite.to_str().unwrap()])
        };
        let id = started.trim().to_string();
        std::thread::sleep(delay);
        if kill_controller {
            drop(ctl);
            ctl = Controller::start(dir, &listen);
        } else {
            drop(agent);
            agent = start_agent_with(dir, &ctl, "edge-k", &[], &sensors, &AGENT_FLAGS);
        }
        tally.trials += 1;
        let problems_before = tally.problems();
        if install {
            settle_rollout(&ctl, &id, &mut tally);
        } else {
            settle_run(&ctl, dir, &id, &mut tally);
        }
        check_active_version(&ctl, dir, &mut tally);
        let verdict = if tally.problems() == problems_before {
            "ok".to_string()
        } else {
            format!("FOUND: {tally}")
        };
        println!(
            "trial {trial}: SIGKILL the {victim} {} ms into {what} ({id}): {verdict}",
            delay.as_millis()
        );
    }
    drop(agent);
    tally
}

/// What a replica trial kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// A replica that does not lead.
    Replica,
    /// The replica holding the lease.
    Leader,
    /// PostgreSQL, stopped and started again.
    Postgres,
    /// The agent.
    Agent,
}

/// Runs `trials` trials against three replicas behind HAProxy on PostgreSQL and S3: each kills
/// a replica (SIGKILL, then started again under its id), the leader, PostgreSQL (stopped, then
/// started again) or the agent at a random moment of an install or a run, and checks the same
/// as [`run`] through a replica that lived.
pub fn run_replicas(dir: &Path, trials: u32, seed: u64) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let state = StateIn::postgres_and_s3();
    let first = start_replica(dir, "r0", &state, None, "127.0.0.1:0", &[]);
    let mut replicas = vec![first];
    for id in ["r1", "r2"] {
        let next = start_replica(dir, id, &state, Some(&replicas[0]), "127.0.0.1:0", &[]);
        replicas.push(next);
    }
    let listens: Vec<String> = replicas.iter().map(|r| r.listen.clone()).collect();
    let lb = Haproxy::start(&listens);
    let mut agent = agent_behind(dir, &lb, &replicas[0], "edge-k", &AGENT_FLAGS);
    replicas[1].wait_online(&["edge-k"], SETTLE);
    replicas[1].add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    replicas[2].add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm", "fp32");
    let suite = dir.join("trial.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let cluster = edgefleet_test_postgres::cluster();
    let mut tally = Tally::default();
    let mut next_version = ["fp32", "int8"].into_iter().cycle();
    let victims = [
        Victim::Replica,
        Victim::Leader,
        Victim::Postgres,
        Victim::Agent,
    ];
    for trial in 1..=trials {
        let victim = victims[rng.random_range(0..victims.len())];
        let install = rng.random_bool(0.5);
        let delay = Duration::from_millis(rng.random_range(100..2500));
        let leader_id = wait_for_leader(&replicas[0], SETTLE);
        let leading = replicas
            .iter()
            .position(|r| r.data_dir.parent().unwrap().ends_with(&leader_id))
            .expect("the leader is one of ours");
        let killed = match victim {
            Victim::Leader => Some(leading),
            Victim::Replica => Some((leading + 1 + rng.random_range(0..2)) % 3),
            Victim::Postgres | Victim::Agent => None,
        };
        // The CLI talks to a replica that lives through the trial.
        let admin = (killed.unwrap_or(0) + 1) % 3;
        replicas[admin].wait_online(&["edge-k"], SETTLE);
        let started = if install {
            let version = next_version.next().unwrap();
            replicas[admin].cli_ok(&["rollout", "start", &format!("minilm@{version}")])
        } else {
            replicas[admin].cli_ok(&["bench", "run", suite.to_str().unwrap()])
        };
        let id = started.trim().to_string();
        std::thread::sleep(delay);
        match victim {
            Victim::Replica | Victim::Leader => {
                let at = killed.expect("a replica");
                let name = format!("r{at}");
                let _ = replicas[at].process.child.kill(); // SIGKILL
                let _ = replicas[at].process.child.wait();
                // Started again at once on its address, under its id, from its folder.
                replicas[at] = start_replica(dir, &name, &state, None, &listens[at], &[]);
            }
            Victim::Postgres => {
                cluster.stop();
                std::thread::sleep(Duration::from_millis(rng.random_range(500..3000)));
                cluster.start_again();
            }
            Victim::Agent => {
                drop(agent);
                agent = agent_behind(dir, &lb, &replicas[admin], "edge-k", &AGENT_FLAGS);
            }
        }
        tally.trials += 1;
        let problems_before = tally.problems();
        let ctl = &replicas[admin];
        if install {
            settle_rollout(ctl, &id, &mut tally);
        } else {
            settle_run(ctl, dir, &id, &mut tally);
        }
        check_active_version(ctl, dir, &mut tally);
        let verdict = if tally.problems() == problems_before {
            "ok".to_string()
        } else {
            format!("FOUND: {tally}")
        };
        let what = if install { "an install" } else { "a run" };
        let victim = match (victim, killed) {
            (Victim::Postgres, _) => "PostgreSQL".to_string(),
            (Victim::Agent, _) => "the agent".to_string(),
            (Victim::Leader, Some(at)) => format!("the leader r{at}"),
            (_, at) => format!("replica r{}", at.unwrap_or(0)),
        };
        println!(
            "trial {trial}: kill {victim} {} ms into {what} ({id}): {verdict}",
            delay.as_millis()
        );
    }
    let _ = leader(&replicas[0]);
    drop(agent);
    tally
}

/// Waits for a rollout to end; one that never does is stuck.
fn settle_rollout(ctl: &Controller, id: &str, tally: &mut Tally) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let state = ctl.rollout(id)["state"].as_str().unwrap_or("").to_string();
        if state != "running" && state != "paused" {
            return;
        }
        if Instant::now() > deadline {
            tally.stuck_rollouts += 1;
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a run's two results; fewer are lost results, more are duplicates.
fn settle_run(ctl: &Controller, dir: &Path, run_id: &str, tally: &mut Tally) {
    let out = dir.join("report");
    let deadline = Instant::now() + SETTLE;
    loop {
        ctl.cli_ok(&["report", "--out", out.to_str().unwrap(), "--run", run_id]);
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap())
                .unwrap();
        let threads: Vec<u64> = records
            .iter()
            .filter_map(|r| r["threads"].as_u64())
            .collect();
        let mut distinct = threads.clone();
        distinct.sort();
        distinct.dedup();
        let settled = distinct.len() >= 2;
        if settled || Instant::now() > deadline {
            tally.duplicates += (threads.len() - distinct.len()) as u32;
            tally.lost_results += 2u32.saturating_sub(distinct.len() as u32);
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The agent's active version of the model, if any, must hold exactly the manifest's files.
fn check_active_version(ctl: &Controller, dir: &Path, tally: &mut Tally) {
    let active = dir.join("agents/edge-k/models/minilm/active");
    let Ok(version_dir) = std::fs::read_link(&active) else {
        return; // nothing installed yet
    };
    let version_dir = if version_dir.is_absolute() {
        version_dir
    } else {
        active.parent().unwrap().join(version_dir)
    };
    let version = version_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let model = ctl.model(&format!("minilm@{version}"));
    let Some(files) = model["files"].as_array() else {
        tally.corrupt_installs += 1;
        return;
    };
    for file in files {
        let name = file["file_name"].as_str().unwrap_or_default();
        let expected = file["sha256"].as_str().unwrap_or_default();
        let actual = std::fs::read(version_dir.join(name))
            .map(|bytes| hex::encode(Sha256::digest(&bytes)))
            .unwrap_or_default();
        if actual != expected {
            tally.corrupt_installs += 1;
            return;
        }
    }
    tally.installs_checked += 1;
}
