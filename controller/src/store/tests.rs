//! Store behaviour against both real backends: each test body below runs on SQLite (in
//! memory) and on a database of its own in a throwaway PostgreSQL cluster; the few that are
//! about SQLite's file and its old schemas run on SQLite only.

use std::collections::BTreeMap;

use edgefleet_proto::v1::{BenchJob, HardwareProfile, Measurement};

use super::db::params;
use super::*;

/// Makes an empty store of the backend a test runs on.
type Fresh = fn() -> Store;

fn sqlite_store() -> Store {
    Store::in_memory().unwrap()
}

/// A store on a new database in this test process's PostgreSQL cluster.
fn postgres_store() -> Store {
    let url = edgefleet_test_postgres::cluster().database("store");
    Store::connect(&url).unwrap_or_else(|e| panic!("{e}"))
}

/// Each named test body, as a test on SQLite and as a test on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(super::sqlite_store)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(super::postgres_store)
            })*
        }
    };
}

on_both_backends!(
    agents_keep_first_seen_and_update_last_seen,
    a_page_of_the_fleet_holds_its_own_agents_and_the_counts_cover_them_all,
    heartbeats_batched_keep_the_latest_time_and_skip_unknown_agents,
    a_model_version_registers_once_and_shares_artifacts,
    results_are_recorded_once_and_only_for_the_agent_that_owns_the_job,
    a_corrupt_agent_row_is_an_error_naming_it_not_an_empty_agent,
    a_corrupt_model_signature_is_an_error_naming_the_version,
    corrupt_jobs_and_results_are_errors_and_nothing_is_stored_on_their_account,
    corrupt_rollout_rows_are_errors_naming_them,
    finished_runs_are_judged_once_and_regressions_acknowledged,
    schedules_keep_their_fires_and_the_last_cron_fire,
    a_schedules_unfinished_runs_and_busy_agents_are_found,
    corrupt_schedule_rows_are_errors_naming_them,
    old_results_become_summaries_in_batches_and_baselines_stay_whole,
    table_stats_count_rows_and_bytes_per_family,
    a_thousand_heartbeats_are_written_in_one_batch,
    a_schedules_fire_is_claimed_once,
    a_fleets_run_is_stored_in_few_statements_and_read_back_for_many_agents_at_once,
    a_wave_starts_and_completes_in_a_few_statements_whatever_its_size,
    results_written_together_each_do_what_they_would_alone,
);

/// Results written in one transaction: each stored once, a repeat (even within the batch) a
/// duplicate, another agent's job unknown, a failure recorded with its reason.
fn results_written_together_each_do_what_they_would_alone(fresh: Fresh) {
    use crate::store::FinishedJob;
    let s = fresh();
    agent(&s, "ag", 1);
    agent(&s, "other", 1);
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 5,
        schedule: None,
    };
    s.insert_run(
        &run,
        "",
        &[job("j1", "ag"), job("j2", "ag"), job("j3", "ag")],
    )
    .unwrap();
    let m = Measurement {
        samples: 7,
        ..Measurement::default()
    };
    let finished = |agent: &str, job: &str, outcome: Result<Measurement, String>| FinishedJob {
        agent_id: agent.into(),
        run_id: "r1".into(),
        job_id: job.into(),
        outcome,
    };
    let each = s
        .record_results(&[
            finished("ag", "j1", Ok(m.clone())),
            finished("ag", "j1", Ok(m.clone())),
            finished("other", "j2", Ok(m.clone())),
            finished("ag", "j2", Err("out of memory".into())),
        ])
        .unwrap();
    let each: Vec<Recorded> = each.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        each,
        [
            Recorded::Stored,
            Recorded::Duplicate,
            Recorded::UnknownJob,
            Recorded::Stored
        ]
    );
    assert_eq!(s.results(Some("r1")).unwrap().len(), 1);
    let jobs = s.jobs(Some("r1")).unwrap();
    assert_eq!(jobs[1].error.as_deref(), Some("out of memory"));
    assert!(s.run_unfinished("r1").unwrap(), "j3 is still pending");
    assert_eq!(
        s.record_measurement("ag", "r1", "j1", &m).unwrap(),
        Recorded::Duplicate,
        "as one result alone sees it"
    );
}

/// A wave of 300 targets starts in one transaction (each waiting target installing, its agent
/// granted the files) and completes in one statement; the next wave and other states are left.
fn a_wave_starts_and_completes_in_a_few_statements_whatever_its_size(fresh: Fresh) {
    use crate::rollout::TargetState;
    let s = fresh();
    let mut targets: Vec<TargetRow> = (0..400)
        .map(|i| {
            let mut t = target("ro-1", &format!("ag-{i:03}"));
            t.state = TargetState::Waiting;
            t.wave = u32::from(i >= 300);
            t
        })
        .collect();
    targets[7].state = TargetState::Failed;
    for t in &targets {
        agent(&s, &t.agent_id, 1);
    }
    s.insert_rollout(&rollout("ro-1"), &targets).unwrap();
    let files = ["f".repeat(64), "g".repeat(64)];
    let moved = s.start_wave("ro-1", 0, &files, 50).unwrap();
    assert_eq!(moved.len(), 299, "the failed one stays");
    assert_eq!(moved[0], "ag-000");
    assert!(s.may_fetch("ag-299", &files[1]).unwrap());
    assert!(
        !s.may_fetch("ag-300", &files[0]).unwrap(),
        "not in the wave"
    );
    assert!(
        s.start_wave("ro-1", 0, &files, 60).unwrap().is_empty(),
        "once"
    );
    let now = s.targets("ro-1").unwrap();
    assert_eq!(now[0].state, TargetState::Installing);
    assert_eq!(now[0].updated_ms, 50);
    assert_eq!(now[7].state, TargetState::Failed);
    assert_eq!(now[350].state, TargetState::Waiting);

    for i in [1, 2, 3] {
        let mut t = now[i].clone();
        t.state = TargetState::Installed;
        s.update_target(&t).unwrap();
    }
    assert_eq!(s.complete_wave("ro-1", 0, 70).unwrap(), 3);
    let after = s.targets("ro-1").unwrap();
    assert_eq!(after[1].state, TargetState::Done);
    assert_eq!(after[0].state, TargetState::Installing, "not answered yet");
}

/// A run of 600 jobs over three agents (more rows than one INSERT holds): every job stored and
/// granted its artifacts, and the pending jobs and waiting commands of several agents read in
/// one call each, as one agent's calls read them.
fn a_fleets_run_is_stored_in_few_statements_and_read_back_for_many_agents_at_once(fresh: Fresh) {
    let s = fresh();
    let agents = ["ag-0", "ag-1", "ag-2"];
    for a in agents {
        agent(&s, a, 1);
    }
    let run = |id: &str, created_ms: i64| RunRow {
        id: id.into(),
        suite: "fleet".into(),
        suite_sha256: "h".into(),
        created_ms,
        schedule: None,
    };
    let jobs: Vec<(String, BenchJob)> = (0..600)
        .map(|i| {
            let (agent, mut job) = job(&format!("j{i:03}"), agents[i % 3]);
            let model = job.model.as_mut().unwrap();
            model.files.push(edgefleet_proto::v1::ArtifactRef {
                file_name: "model.onnx".into(),
                sha256: "a".repeat(64),
                ..Default::default()
            });
            (agent, job)
        })
        .collect();
    s.insert_run(&run("later", 20), "name = 'fleet'", &jobs)
        .unwrap();
    s.insert_run(&run("earlier", 10), "name = 'fleet'", &[job("j1", "ag-1")])
        .unwrap();
    assert_eq!(s.jobs(Some("later")).unwrap().len(), 600);
    for a in agents {
        assert!(
            s.may_fetch(a, &"a".repeat(64)).unwrap(),
            "{a} may fetch the model"
        );
    }

    let asked: Vec<String> = ["ag-0", "ag-1", "nobody"].map(String::from).to_vec();
    let mut pending = s.pending_jobs_of(&asked).unwrap();
    assert_eq!(pending.len(), 2, "only agents with jobs");
    let of_one = pending.remove("ag-1").unwrap();
    assert_eq!(of_one, s.pending_jobs("ag-1").unwrap());
    assert_eq!(of_one.len(), 201);
    assert_eq!(of_one[0].0, "earlier", "the oldest run first");
    let ids: Vec<&str> = of_one[1..].iter().map(|(_, j)| j.job_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in job order");
    assert_eq!(pending["ag-0"].len(), 200);

    s.insert_rollout(
        &rollout("ro-1"),
        &[target("ro-1", "ag-0"), target("ro-1", "ag-2")],
    )
    .unwrap();
    let commands = s.commands_for_agents(&asked).unwrap();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(commands["ag-0"], s.commands_for_agent("ag-0").unwrap());
    assert_eq!(commands["ag-0"][0].0, rollout("ro-1"));
}

fn a_schedules_fire_is_claimed_once(fresh: Fresh) {
    let s = fresh();
    assert!(s.claim_fire("nightly", 1_000, 5).unwrap());
    assert!(
        !s.claim_fire("nightly", 1_000, 6).unwrap(),
        "a second claim"
    );
    assert!(s.claim_fire("nightly", 2_000, 7).unwrap(), "the next fire");
    assert!(
        s.claim_fire("hourly", 1_000, 8).unwrap(),
        "another schedule"
    );
}

/// Two replicas on one database: the lease goes to one at a time, a new take raises the
/// epoch, and a write made under a term that is over is refused by the database itself.
#[test]
fn a_write_under_a_lease_that_is_over_is_refused_and_the_next_leader_gets_a_new_epoch() {
    let url = edgefleet_test_postgres::cluster().database("store");
    let s = Store::connect(&url).unwrap();
    let taken = s.take_lease("r1", 60_000).unwrap().expect("nobody led");
    assert_eq!(taken.previous_holder, "");
    let first = taken.epoch;
    assert_eq!(s.take_lease("r2", 60_000).unwrap(), None, "r1 holds it");
    assert!(s.renew_lease("r1", first, 60_000).unwrap());
    let lease = s.lease().unwrap();
    assert_eq!((lease.holder.as_str(), lease.epoch), ("r1", first));
    assert!(lease.left_ms > 50_000, "{lease:?}");

    // r1's loops write through a store fenced to its term: allowed while it holds the lease.
    let leader = s
        .fenced("r1", first, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(leader.claim_fire("a", 1, 1).unwrap());

    // r1 stalls past its lease (here: the lease is cut short), r2 takes over.
    s.execute_for_test(
        "UPDATE edgefleet_leader SET expires_at = clock_timestamp() - interval '1 s'",
        params![],
    );
    assert!(
        !s.renew_lease("r1", first, 60_000).unwrap(),
        "an expired term is not renewed"
    );
    let taken = s
        .take_lease("r2", 60_000)
        .unwrap()
        .expect("the lease expired");
    assert_eq!(taken.previous_holder, "r1");
    let second = taken.epoch;
    assert!(second > first);
    let refused = leader.claim_fire("a", 2, 2).unwrap_err();
    assert!(refused.is_fenced(), "{refused}");
    assert!(refused.to_string().contains("r1/"), "{refused}");
    // Nothing of the refused statement was written; the current leader's writes go through.
    let current = s
        .fenced("r2", second, std::time::Duration::from_secs(10))
        .unwrap();
    assert!(current.claim_fire("a", 2, 3).unwrap());
    // Unfenced writes (agents' results, admin calls) never depend on the lease.
    assert!(s.claim_fire("a", 3, 4).unwrap());

    // A replica that stops gives the lease up at once.
    s.replica_alive("r2", "127.0.0.1:1", 0).unwrap();
    s.replica_gone("r2").unwrap();
    let third = s.take_lease("r3", 60_000).unwrap().expect("r2 gave it up");
    assert!(third.epoch > second);
    // A replica restarted under its name takes its lease back at once, with a new epoch.
    let again = s.take_lease("r3", 60_000).unwrap().expect("r3 held it");
    assert_eq!(again.previous_holder, "r3");
    assert!(again.epoch > third.epoch);
}

/// The replica holding an agent's stream, the agents online across replicas, and wake-ups
/// announced to listeners.
#[test]
fn agents_are_held_by_one_replica_and_wake_ups_are_announced() {
    let url = edgefleet_test_postgres::cluster().database("store");
    let s = Store::connect(&url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut heard = s.listen(WAKE_CHANNEL).expect("PostgreSQL listens");
    let next = |heard: &mut tokio::sync::mpsc::UnboundedReceiver<Heard>| {
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(20), heard.recv())
                .await
                .expect("a notification within 20 s")
                .expect("still listening")
        })
    };
    assert_eq!(next(&mut heard), Heard::Listening);

    s.replica_alive("r1", "10.0.0.1:7443", 1).unwrap();
    s.replica_alive("r2", "10.0.0.2:7443", 0).unwrap();
    let w1 = s.hold_agent("agent-a", "r1", 1).unwrap();
    let Heard::Payload(payload) = next(&mut heard) else {
        panic!("a payload")
    };
    assert_eq!(parse_wakes(&payload), vec![("agent-a".to_string(), w1)]);
    assert_eq!(holder(&s, "agent-a").as_deref(), Some("r1"));
    assert!(s.agent_held("agent-a", 10_000).unwrap());
    assert_eq!(s.held_agents(10_000).unwrap(), vec!["agent-a".to_string()]);
    assert_eq!(s.held_agent_count(10_000).unwrap(), 1);
    // Who holds each of several agents and whether each may still connect, in one call.
    agent(&s, "agent-a", 1);
    agent(&s, "agent-gone", 1);
    s.revoke_agent("agent-gone", 5).unwrap();
    let asked: Vec<String> = ["agent-a", "agent-gone", "agent-unknown"]
        .map(String::from)
        .to_vec();
    let standing = s.holders_and_standing(&asked).unwrap();
    assert_eq!(standing["agent-a"], (Some("r1".to_string()), true));
    assert_eq!(standing["agent-gone"], (None, false));
    assert_eq!(standing["agent-unknown"], (None, false));

    // The agent's newer stream on r2 wins; r1's late goodbye does not free it.
    let w2 = s.hold_agent("agent-a", "r2", 7).unwrap();
    assert!(w2 > w1);
    assert_eq!(next(&mut heard), Heard::Payload(format!("agent-a:{w2}")));
    s.release_agent("agent-a", "r1", 1).unwrap();
    assert_eq!(holder(&s, "agent-a").as_deref(), Some("r2"));
    // Nor does the goodbye of an older stream on the same replica.
    let w3 = s.hold_agent("agent-a", "r2", 8).unwrap();
    assert_eq!(next(&mut heard), Heard::Payload(format!("agent-a:{w3}")));
    s.release_agent("agent-a", "r2", 7).unwrap();
    assert_eq!(holder(&s, "agent-a").as_deref(), Some("r2"));
    s.release_agent("agent-a", "r2", 8).unwrap();
    assert_eq!(holder(&s, "agent-a"), None);
    s.hold_agent("agent-a", "r2", 9).unwrap();
    let Heard::Payload(_) = next(&mut heard) else {
        panic!("a payload")
    };

    // Many agents woken at once: every one announced, none twice, with rising numbers.
    let many: Vec<String> = (0..400).map(|i| format!("agent-{i:03}")).collect();
    let mut doubled = many.clone();
    doubled.extend(many.iter().take(10).cloned());
    s.wake_agents(&doubled).unwrap();
    let mut announced = Vec::new();
    while announced.len() < many.len() {
        let Heard::Payload(payload) = next(&mut heard) else {
            panic!("a payload")
        };
        announced.extend(parse_wakes(&payload));
    }
    assert_eq!(announced.len(), many.len());
    assert!(announced.iter().all(|(_, w)| *w > w3));
    // A sweep sees the wake-ups of the agents its replica holds.
    let recent = s.recent_wakes("r2", 60_000).unwrap();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert!(s.recent_wakes("r1", 60_000).unwrap().is_empty());

    // A replica not heard from is not holding anyone online.
    s.execute_for_test(
        "UPDATE edgefleet_replicas SET heard_at = clock_timestamp() - interval '1 min'",
        params![],
    );
    assert!(!s.agent_held("agent-a", 10_000).unwrap());
    assert!(s.replicas(10_000).unwrap().is_empty());
    assert_eq!(s.replicas(120_000).unwrap().len(), 2);
}

/// The replica holding `agent_id`'s stream, as a delivery pass reads it.
fn holder(store: &Store, agent_id: &str) -> Option<String> {
    let mut standing = store.holders_and_standing(&[agent_id.to_string()]).unwrap();
    standing.remove(agent_id).unwrap().0
}

fn agent(store: &Store, id: &str, now: i64) {
    let hw = HardwareProfile {
        arch: "x86_64".into(),
        cpu_cores: 2,
        ..HardwareProfile::default()
    };
    let labels = BTreeMap::from([("site".to_string(), "lab".to_string())]);
    store
        .upsert_agent(id, "a", &labels, "0.1.0", &hw, now)
        .unwrap();
}

fn model(name: &str, version: &str) -> ModelRow {
    ModelRow {
        name: name.into(),
        version: version.into(),
        quantization: "int8".into(),
        opset: 17,
        signature_json: "{}".into(),
        files: vec![ModelFile {
            file_name: "model.onnx".into(),
            sha256: "a".repeat(64),
            size_bytes: 10,
        }],
        created_ms: 1,
        manifest: Vec::new(),
        manifest_signature: Vec::new(),
    }
}

fn job(id: &str, agent: &str) -> (String, BenchJob) {
    let job = BenchJob {
        job_id: id.into(),
        model: Some(edgefleet_proto::v1::ModelSpec {
            name: "m".into(),
            version: "1".into(),
            ..Default::default()
        }),
        workload: Some(edgefleet_proto::v1::Workload {
            scenario: "single-stream".into(),
            threads: 1,
            ..Default::default()
        }),
        reference: None,
    };
    (agent.to_string(), job)
}

fn a_page_of_the_fleet_holds_its_own_agents_and_the_counts_cover_them_all(fresh: Fresh) {
    let s = fresh();
    let hw = HardwareProfile::default();
    for i in 0..25 {
        let site = if i % 2 == 0 { "lab" } else { "field" };
        let labels = BTreeMap::from([("site".to_string(), site.to_string())]);
        s.upsert_agent(
            &format!("id{i:02}"),
            &format!("edge-{i:02}"),
            &labels,
            "0.1.0",
            &hw,
            1,
        )
        .unwrap();
        let version = if i < 5 { "fp32" } else { "int8" };
        let installed = AgentModelRow {
            agent_id: format!("id{i:02}"),
            name: "minilm".into(),
            active_version: version.into(),
            versions: vec![version.into()],
        };
        s.record_installed(&format!("id{i:02}"), &[installed], None, 1)
            .unwrap();
    }
    s.remove_agent("id24", 2).unwrap();
    assert_eq!(
        s.agent_count().unwrap(),
        24,
        "a removed agent is not counted"
    );
    assert_eq!(
        s.active_versions().unwrap(),
        vec![
            ("minilm".to_string(), "fp32".to_string(), 5),
            ("minilm".to_string(), "int8".to_string(), 19)
        ]
    );
    // The second page of ten of the lab's agents, in name order, and how many there are.
    let lab = |a: &AgentRow| a.labels.get("site").map(String::as_str) == Some("lab");
    let (page, matching) = s.agents_page(lab, 10, 10).unwrap();
    assert_eq!(matching, 12, "edge-00, -02, ... -22 (edge-24 was removed)");
    let names: Vec<&str> = page.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["edge-20", "edge-22"]);
    let (all, every) = s.agents_page(|_| true, 0, 5).unwrap();
    assert_eq!((all.len(), every), (5, 24));
    let ids = std::collections::HashSet::from(["id00", "id07"]);
    let installed = s.installed_of(&ids).unwrap();
    let found: Vec<(&str, &str)> = installed
        .iter()
        .map(|m| (m.agent_id.as_str(), m.active_version.as_str()))
        .collect();
    assert_eq!(found, [("id00", "fp32"), ("id07", "int8")]);
}

fn agents_keep_first_seen_and_update_last_seen(fresh: Fresh) {
    let s = fresh();
    agent(&s, "id1", 100);
    agent(&s, "id1", 200);
    s.touch_agent("id1", 300).unwrap();
    let rows = s.agents().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].first_seen_ms, rows[0].last_seen_ms), (100, 300));
    assert_eq!(rows[0].labels["site"], "lab");
    assert_eq!(rows[0].hardware.cpu_cores, 2);
}

fn heartbeats_batched_keep_the_latest_time_and_skip_unknown_agents(fresh: Fresh) {
    let s = fresh();
    agent(&s, "id1", 100);
    agent(&s, "id2", 100);
    s.touch_agent("id2", 500).unwrap();
    // A batch written after a later disconnect's own write must not move the time back.
    let batch = [
        ("id1".to_string(), 400),
        ("id2".to_string(), 450),
        ("gone".to_string(), 450),
    ];
    s.touch_agents(&batch).unwrap();
    let seen: Vec<(String, i64)> = s
        .agents()
        .unwrap()
        .into_iter()
        .map(|a| (a.id, a.last_seen_ms))
        .collect();
    assert_eq!(seen, [("id1".to_string(), 400), ("id2".to_string(), 500)]);
}

fn a_model_version_registers_once_and_shares_artifacts(fresh: Fresh) {
    let s = fresh();
    s.insert_model(&model("m", "1")).unwrap();
    let err = s.insert_model(&model("m", "1")).unwrap_err();
    assert!(
        err.to_string().contains("m@1 is already registered"),
        "{err}"
    );
    s.insert_model(&model("m", "2")).unwrap();
    let models = s.models().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1].files[0].size_bytes, 10);
    assert_eq!(s.artifact_size(&"a".repeat(64)).unwrap(), Some(10));
    assert_eq!(s.artifact_size(&"b".repeat(64)).unwrap(), None);
}

fn results_are_recorded_once_and_only_for_the_agent_that_owns_the_job(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    agent(&s, "other", 1);
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 5,
        schedule: None,
    };
    s.insert_run(&run, "name = 'quick'", &[job("j1", "ag"), job("j2", "ag")])
        .unwrap();
    let m = Measurement {
        samples: 42,
        ..Measurement::default()
    };
    assert_eq!(
        s.record_measurement("other", "r1", "j1", &m).unwrap(),
        Recorded::UnknownJob
    );
    assert_eq!(
        s.record_measurement("ag", "r1", "j1", &m).unwrap(),
        Recorded::Stored
    );
    assert_eq!(
        s.record_measurement("ag", "r1", "j1", &m).unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(
        s.record_failure("ag", "r1", "j2", "boom").unwrap(),
        Recorded::Stored
    );
    assert_eq!(
        s.record_failure("ag", "r1", "j2", "boom").unwrap(),
        Recorded::Duplicate
    );

    assert!(
        s.pending_jobs("ag").unwrap().is_empty(),
        "finished jobs are not sent again"
    );
    let results = s.results(Some("r1")).unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].measurement.samples, 42);
    assert_eq!(results[0].suite, "quick");
    let jobs = s.jobs(Some("r1")).unwrap();
    assert_eq!(jobs[1].state, "failed");
    assert_eq!(jobs[1].error.as_deref(), Some("boom"));
    assert_eq!(s.jobs(None).unwrap().len(), 2);
    assert!(s.run("nope").unwrap().is_none());
}

#[test]
fn postgresql_over_tls_checks_the_servers_certificate() {
    let cluster = edgefleet_test_postgres::cluster();
    let url = cluster.database("tls");
    let ca = cluster.ca_file();
    // The cluster's own CA: an encrypted connection, with the store's data.
    let store = Store::open_database(&format!(
        "{url}?sslmode=require&sslrootcert={}",
        ca.display()
    ))
    .unwrap();
    agent(&store, "a1", 1);
    assert_eq!(store.agent_names().unwrap().len(), 1);
    let name = url.rsplit('/').next().unwrap();
    let encrypted = cluster
        .psql(&format!(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND datname = '{name}' AND application_name = 'edgefleet'"
        ))
        .unwrap();
    assert_ne!(encrypted, "0", "the store's connections use TLS");
    drop(store);
    // libpq's verify-full reads the same; the system's roots do not know this CA, and another
    // CA is not this one: refused, naming the certificate.
    let verify_full = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    assert!(Store::open_database(&verify_full).is_ok());
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let foreign = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(other_ca.path(), foreign.cert.pem()).unwrap();
    for refused in [
        format!("{url}?sslmode=require"),
        format!(
            "{url}?sslmode=require&sslrootcert={}",
            other_ca.path().display()
        ),
    ] {
        let err = Store::open_database(&refused).err().expect("refused");
        assert!(
            matches!(err, StoreError::Unreachable { .. })
                && err.to_string().contains("certificate"),
            "{refused}: {err}"
        );
    }
    // A CA file that is not there: a setting to fix, said before any connection.
    let missing = Store::open_database(&format!(
        "{url}?sslmode=require&sslrootcert=/nonexistent.pem"
    ))
    .err()
    .expect("refused");
    assert!(
        missing.to_string().contains("sslrootcert /nonexistent.pem"),
        "{missing}"
    );
}

#[test]
fn libpq_tls_options_are_read_from_the_url() {
    use super::postgres::tls_options;
    assert_eq!(
        tls_options(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x"
        ),
        (
            "postgres://u@h/db?sslmode=require&application_name=x".to_string(),
            Some("/etc/ca.pem".to_string())
        )
    );
    assert_eq!(
        tls_options("postgres://u@h/db?sslrootcert=/ca.pem"),
        ("postgres://u@h/db".to_string(), Some("/ca.pem".to_string()))
    );
    assert_eq!(
        tls_options("postgres://u@h/db"),
        ("postgres://u@h/db".to_string(), None)
    );
}

#[test]
fn a_database_file_reopens_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        let s = Store::open(&path).unwrap();
        agent(&s, "id1", 1);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.agents().unwrap().len(), 1);
}

/// The error a damaged row reads as: which table, which key.
fn corrupt_at(err: StoreError) -> (&'static str, String) {
    let message = err.to_string();
    match err {
        StoreError::Corrupt { table, key, .. } => {
            assert!(
                message.starts_with(&format!("corrupt row in table {table} ({key}): ")),
                "{message}"
            );
            (table, key)
        }
        other => panic!("expected a corrupt row, got {other}"),
    }
}

fn rollout(id: &str) -> RolloutRow {
    RolloutRow {
        id: id.into(),
        model_name: "m".into(),
        model_version: "2".into(),
        spec: crate::rollout::RolloutSpec::parse(&crate::rollout::SpecText {
            waves: "50%,100%",
            gate: "p90<=1.10x",
            ..Default::default()
        })
        .unwrap(),
        gate_workload: None,
        state: crate::rollout::RolloutState::Running,
        reason: String::new(),
        current_wave: 0,
        created_ms: 1,
        updated_ms: 1,
    }
}

fn target(rollout_id: &str, agent_id: &str) -> TargetRow {
    TargetRow {
        rollout_id: rollout_id.into(),
        agent_id: agent_id.into(),
        wave: 0,
        state: crate::rollout::TargetState::Installing,
        error: String::new(),
        previous_version: String::new(),
        health: String::new(),
        updated_ms: 1,
        fetched_bytes: 0,
        fetch_started_ms: 0,
        fetch_finished_ms: 0,
    }
}

fn a_corrupt_agent_row_is_an_error_naming_it_not_an_empty_agent(fresh: Fresh) {
    let s = fresh();
    agent(&s, "id1", 1);
    s.execute_for_test(
        "UPDATE agents SET hardware = ?1 WHERE id = 'id1'",
        params![vec![0xffu8; 4]],
    );
    assert_eq!(
        corrupt_at(s.agents().unwrap_err()),
        ("agents", "id1".into())
    );
    agent(&s, "id1", 2);
    s.execute_for_test(
        "UPDATE agents SET labels = 'not json' WHERE id = 'id1'",
        params![],
    );
    assert_eq!(
        corrupt_at(s.agents().unwrap_err()),
        ("agents", "id1".into())
    );
}

fn a_corrupt_model_signature_is_an_error_naming_the_version(fresh: Fresh) {
    let s = fresh();
    s.insert_model(&model("m", "1")).unwrap();
    s.execute_for_test("UPDATE models SET signature = '{\"inputs\": 7}'", params![]);
    assert_eq!(
        corrupt_at(s.model("m", "1").unwrap_err()),
        ("models", "m@1".into())
    );
    assert!(s.models().is_err());
}

fn corrupt_jobs_and_results_are_errors_and_nothing_is_stored_on_their_account(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 5,
        schedule: None,
    };
    s.insert_run(&run, "", &[job("j1", "ag"), job("j2", "ag")])
        .unwrap();

    // A job as sent that no longer decodes: not resent as an empty job.
    s.execute_for_test(
        "UPDATE bench_jobs SET spec = ?1 WHERE job_id = 'j1'",
        params![vec![0x0au8]],
    );
    assert_eq!(
        corrupt_at(s.pending_jobs("ag").unwrap_err()),
        ("bench_jobs", "r1, j1".into())
    );

    // A state nobody wrote: the result is refused and nothing is written.
    s.execute_for_test(
        "UPDATE bench_jobs SET state = 'exploded' WHERE job_id = 'j2'",
        params![],
    );
    let m = Measurement {
        samples: 7,
        ..Measurement::default()
    };
    assert_eq!(
        corrupt_at(s.record_measurement("ag", "r1", "j2", &m).unwrap_err()),
        ("bench_jobs", "r1, j2".into())
    );
    assert_eq!(
        corrupt_at(s.jobs(Some("r1")).unwrap_err()),
        ("bench_jobs", "r1, j2".into())
    );
    s.execute_for_test(
        "UPDATE bench_jobs SET state = 'pending' WHERE job_id = 'j2'",
        params![],
    );
    assert!(s.results(Some("r1")).unwrap().is_empty(), "nothing stored");

    // A stored measurement that does not decode reads as an error, never as zeros.
    s.record_measurement("ag", "r1", "j2", &m).unwrap();
    s.execute_for_test(
        "UPDATE results SET measurement = ?1 WHERE job_id = 'j2'",
        params![vec![0xffu8, 0x01]],
    );
    assert_eq!(
        corrupt_at(s.results(Some("r1")).unwrap_err()),
        ("results", "r1, j2".into())
    );
}

fn corrupt_rollout_rows_are_errors_naming_them(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    s.insert_rollout(&rollout("ro-1"), &[target("ro-1", "ag")])
        .unwrap();
    assert_eq!(s.rollout("ro-1").unwrap().unwrap(), rollout("ro-1"));
    assert_eq!(
        s.target("ro-1", "ag").unwrap(),
        Some(target("ro-1", "ag")),
        "one agent's row, as targets() reads it"
    );
    assert_eq!(s.target("ro-1", "other").unwrap(), None);

    let not_a_workload = vec![0xffu8];
    for (damage, values, table, key) in [
        (
            "UPDATE rollouts SET spec = '{}'",
            params![],
            "rollouts",
            "ro-1",
        ),
        (
            "UPDATE rollouts SET spec = ''",
            params![],
            "rollouts",
            "ro-1",
        ),
        (
            "UPDATE rollouts SET gate_workload = ?1",
            params![not_a_workload],
            "rollouts",
            "ro-1",
        ),
        (
            "UPDATE rollouts SET state = 'lost'",
            params![],
            "rollouts",
            "ro-1",
        ),
    ] {
        let good = fresh();
        agent(&good, "ag", 1);
        good.insert_rollout(&rollout("ro-1"), &[]).unwrap();
        good.execute_for_test(damage, values);
        assert_eq!(
            corrupt_at(good.rollout("ro-1").unwrap_err()),
            (table, key.to_string()),
            "{damage}"
        );
        assert!(good.rollouts().is_err(), "{damage}");
    }

    s.execute_for_test("UPDATE rollout_targets SET state = 'limbo'", params![]);
    assert_eq!(
        corrupt_at(s.targets("ro-1").unwrap_err()),
        ("rollout_targets", "ro-1, ag".into())
    );
    assert!(s.commands_for_agent("ag").is_ok(), "limbo is not a command");

    s.insert_run(
        &RunRow {
            id: "g1".into(),
            suite: "gate".into(),
            suite_sha256: String::new(),
            created_ms: 2,
            schedule: None,
        },
        "",
        &[],
    )
    .unwrap();
    s.insert_gate("ro-1", 0, "g1").unwrap();
    assert_eq!(s.gates("ro-1").unwrap()[0].verdicts, None);
    s.execute_for_test(
        "UPDATE rollout_gates SET verdicts = '[{\"passed\": \"yes\"}]'",
        params![],
    );
    assert_eq!(
        corrupt_at(s.gates("ro-1").unwrap_err()),
        ("rollout_gates", "ro-1, wave 1".into())
    );

    s.record_installed(
        "ag",
        &[AgentModelRow {
            agent_id: "ag".into(),
            name: "m".into(),
            active_version: "2".into(),
            versions: vec!["2".into(), "1".into()],
        }],
        None,
        3,
    )
    .unwrap();
    assert_eq!(s.installed().unwrap()[0].versions, ["2", "1"]);
    s.execute_for_test("UPDATE agent_models SET versions = '2,1'", params![]);
    assert_eq!(
        corrupt_at(s.installed().unwrap_err()),
        ("agent_models", "ag, m".into())
    );
}

#[test]
fn rollouts_of_an_older_database_get_their_spec_parsed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    {
        // A database as migration 3 left it, with one rollout whose flags parse and one whose
        // flags do not.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        super::migrations::apply_up_to(&mut conn, 3).unwrap();
        conn.execute_batch(
            "INSERT INTO rollouts (id, model_name, model_version, selector, waves, success,
                 abort_after, gate, health_check, state, created_ms, updated_ms)
             VALUES ('ro-old', 'm', '2', 'hw=rpi5', '10%,100%', '95%', '2', 'p90<=1.10x',
                     'bench', 'running', 1, 1),
                    ('ro-bad', 'm', '3', '', '100%', '100%', '', 'p90<=fast', 'smoke',
                     'succeeded', 2, 2);",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let old = s.rollout("ro-old").unwrap().unwrap();
    assert_eq!(old.spec.waves_text(), "10%,100%");
    assert_eq!(old.spec.select, "hw=rpi5");
    assert_eq!(old.spec.gate_text(), "p90<=1.10x");
    assert_eq!(old.spec.health_check, crate::rollout::HealthCheck::Bench);
    // Flags that never parsed are not read as defaults (no gate, which would pass).
    assert_eq!(
        corrupt_at(s.rollout("ro-bad").unwrap_err()),
        ("rollouts", "ro-bad".into())
    );
}

fn finished_runs_are_judged_once_and_regressions_acknowledged(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    let run = |id: &str, suite: &str, at: i64| RunRow {
        id: id.into(),
        suite: suite.into(),
        suite_sha256: "h".into(),
        created_ms: at,
        schedule: None,
    };
    s.insert_run(&run("r1", "quick", 10), "", &[job("j1", "ag")])
        .unwrap();
    s.insert_run(&run("r2", "nightly", 20), "", &[job("j1", "ag")])
        .unwrap();
    assert!(s.unjudged_finished_runs().unwrap().is_empty());
    assert!(s.run_unfinished("r1").unwrap());
    let m = Measurement::default();
    s.record_measurement("ag", "r1", "j1", &m).unwrap();
    s.record_measurement("ag", "r2", "j1", &m).unwrap();
    assert!(!s.run_unfinished("r1").unwrap());
    assert_eq!(s.unjudged_finished_runs().unwrap(), ["r1", "r2"]);
    // What the filter passes.
    let only = |f: ResultFilter| s.results_where(&f).unwrap().len();
    assert_eq!(only(ResultFilter::default()), 2);
    assert_eq!(
        only(ResultFilter {
            suite: Some("nightly".into()),
            ..ResultFilter::default()
        }),
        1
    );
    assert_eq!(
        only(ResultFilter {
            model: Some(("m".into(), "2".into())),
            ..ResultFilter::default()
        }),
        0
    );
    assert_eq!(
        only(ResultFilter {
            since_ms: Some(15),
            ..ResultFilter::default()
        }),
        1
    );
    assert_eq!(
        s.newest_measured_run("quick").unwrap().map(|r| r.id),
        Some("r1".to_string())
    );
    let found = RegressionRow {
        id: 0,
        run_id: "r1".into(),
        suite: "quick".into(),
        model: "m@1".into(),
        scenario: "single-stream".into(),
        device_class: "x86_64".into(),
        metric: "p50".into(),
        kind: RegressionKind::Baseline,
        against: "r0".into(),
        ratio: 1.5,
        ci95: Some([1.4, 1.6]),
        robust_z: None,
        detected_ms: 0,
        acknowledged_ms: None,
    };
    let stored = s
        .record_judgement("r1", std::slice::from_ref(&found), 100)
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(s
        .record_judgement("r1", std::slice::from_ref(&found), 200)
        .unwrap()
        .is_empty());
    assert_eq!(s.unjudged_finished_runs().unwrap(), ["r2"]);
    let listed = s.regressions(0).unwrap();
    assert_eq!(listed, stored);
    assert!(s.regressions(101).unwrap().is_empty());
    let acked = s
        .acknowledge_regression(stored[0].id, 300)
        .unwrap()
        .unwrap();
    assert_eq!(acked.acknowledged_ms, Some(300));
    let again = s
        .acknowledge_regression(stored[0].id, 400)
        .unwrap()
        .unwrap();
    assert_eq!(again.acknowledged_ms, Some(300));
    assert_eq!(s.acknowledge_regression(999, 1).unwrap(), None);
    // Baselines replace per device class.
    s.set_baselines("quick", "r1", &["x86_64".to_string()], 5)
        .unwrap();
    s.set_baselines("quick", "r2", &["x86_64".to_string(), "arm".to_string()], 6)
        .unwrap();
    let b = s.baselines(Some("quick")).unwrap();
    assert_eq!(b.len(), 2);
    assert!(b.iter().all(|b| b.run_id == "r2"));
    assert!(s.baselines(Some("other")).unwrap().is_empty());
    // A kind that is not one of ours is a corrupt row, not a default.
    s.execute_for_test("UPDATE regressions SET kind = 'vibes'", params![]);
    let err = s.regressions(0).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: "regressions",
                ..
            }
        ),
        "{err}"
    );
}

fn schedule(name: &str, cron: &str) -> ScheduleRow {
    ScheduleRow {
        name: name.into(),
        cron: crate::schedule::CronSpec::parse(cron).unwrap(),
        suite_file: "quick.toml".into(),
        suite_toml: "name = 'quick'".into(),
        suite_sha256: "h".into(),
        inputs: vec![StoredInput {
            path: "clip.wav".into(),
            sha256: "c".repeat(64),
            size_bytes: 4,
        }],
        selector: "hw=x86".into(),
        jitter: std::time::Duration::from_secs(600),
        when_idle: true,
        max_start_temp_c: Some(60.0),
        created_ms: 1_000,
        last_fire_ms: None,
        missed_count: 0,
    }
}

fn schedules_keep_their_fires_and_the_last_cron_fire(fresh: Fresh) {
    let s = fresh();
    let nightly = schedule("nightly", "0 0 3 * * *");
    s.insert_schedule(&nightly).unwrap();
    let err = s.insert_schedule(&nightly).unwrap_err();
    assert!(matches!(err, StoreError::ScheduleExists(_)), "{err}");
    assert_eq!(s.schedule("nightly").unwrap().unwrap(), nightly);
    assert_eq!(s.schedule("other").unwrap(), None);

    let fire = |planned_ms, outcome, manual| FireRow {
        schedule: "nightly".into(),
        planned_ms,
        outcome,
        manual,
        left_out: vec!["edge-b".into()],
        recorded_ms: planned_ms + 1,
    };
    let started = FireOutcome::Started {
        run_id: "r1".into(),
    };
    s.record_fire(&fire(5_000, started.clone(), false)).unwrap();
    // A manual fire is recorded but is not the last cron fire.
    s.record_fire(&fire(9_000, FireOutcome::SkippedStillRunning, true))
        .unwrap();
    s.record_missed("nightly", &[6_000, 7_000], 250, 9_500)
        .unwrap();
    let row = s.schedule("nightly").unwrap().unwrap();
    assert_eq!((row.last_fire_ms, row.missed_count), (Some(7_000), 250));
    let fires = s.fires("nightly", 10).unwrap();
    assert_eq!(fires.len(), 4);
    assert_eq!(fires[0].outcome, FireOutcome::Missed);
    assert_eq!(fires[2].outcome, FireOutcome::SkippedStillRunning);
    assert!(fires[2].manual);
    assert_eq!(fires[3], fire(5_000, started, false));
    assert_eq!(s.fires("nightly", 1).unwrap().len(), 1);

    assert!(s.remove_schedule("nightly").unwrap());
    assert!(!s.remove_schedule("nightly").unwrap());
    assert!(s.fires("nightly", 10).unwrap().is_empty());
    assert!(s.schedules().unwrap().is_empty());
}

fn a_schedules_unfinished_runs_and_busy_agents_are_found(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    agent(&s, "idle", 1);
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 5,
        schedule: Some("nightly".into()),
    };
    s.insert_run(&run, "", &[job("j1", "ag")]).unwrap();
    assert_eq!(
        s.run("r1").unwrap().unwrap().schedule.as_deref(),
        Some("nightly")
    );
    assert_eq!(s.unfinished_runs_of("nightly").unwrap(), vec!["r1"]);
    assert!(s.unfinished_runs_of("other").unwrap().is_empty());
    assert_eq!(s.runs_of_schedule("nightly").unwrap(), vec!["r1"]);
    assert_eq!(
        s.busy_agents().unwrap(),
        std::collections::BTreeSet::from(["ag".to_string()])
    );
    s.record_measurement("ag", "r1", "j1", &Measurement::default())
        .unwrap();
    assert!(s.unfinished_runs_of("nightly").unwrap().is_empty());
    assert!(s.busy_agents().unwrap().is_empty());
}

fn corrupt_schedule_rows_are_errors_naming_them(fresh: Fresh) {
    for damage in [
        "UPDATE schedules SET cron = '0 0 3 * *'",
        "UPDATE schedules SET inputs = 'clip.wav'",
        "UPDATE schedules SET jitter_ms = -5",
        "UPDATE schedules SET when_idle = 7",
        "UPDATE schedules SET missed_count = -1",
    ] {
        let s = fresh();
        s.insert_schedule(&schedule("nightly", "0 0 3 * * *"))
            .unwrap();
        s.execute_for_test(damage, params![]);
        let key = ("schedules", "nightly".to_string());
        assert_eq!(corrupt_at(s.schedules().unwrap_err()), key, "{damage}");
        assert_eq!(
            corrupt_at(s.schedule("nightly").unwrap_err()),
            key,
            "{damage}"
        );
    }
    for damage in [
        "UPDATE schedule_fires SET outcome = 'exploded'",
        "UPDATE schedule_fires SET run_id = NULL",
        "UPDATE schedule_fires SET left_out = '{'",
    ] {
        let s = fresh();
        s.insert_schedule(&schedule("nightly", "0 0 3 * * *"))
            .unwrap();
        s.record_fire(&FireRow {
            schedule: "nightly".into(),
            planned_ms: 5,
            outcome: FireOutcome::Started {
                run_id: "r1".into(),
            },
            manual: false,
            left_out: Vec::new(),
            recorded_ms: 6,
        })
        .unwrap();
        s.execute_for_test(damage, params![]);
        assert_eq!(
            corrupt_at(s.fires("nightly", 5).unwrap_err()),
            ("schedule_fires", "nightly, 1".to_string()),
            "{damage}"
        );
    }
}

#[test]
fn a_database_value_that_is_not_a_postgresql_url_is_refused_and_makes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("postgress:");
    for value in ["postgress://fleet@db/x", typo.to_str().unwrap()] {
        let err = Store::open_database(value).err().expect("refused");
        assert!(
            err.to_string()
                .starts_with("--database takes a postgres://"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A password in a URL that does not parse is not repeated.
    let err = Store::open_database("postgres://fleet:hunter2@db:notaport/x")
        .err()
        .expect("refused");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// A store with rows in most tables, through the store's own calls.
fn filled_store(s: &Store) {
    agent(s, "ag", 1);
    agent(s, "ag2", 2);
    s.insert_model(&model("m", "1")).unwrap();
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 10,
        schedule: None,
    };
    s.insert_run(
        &run,
        "name = \"quick\"",
        &[job("j1", "ag"), job("j2", "ag2")],
    )
    .unwrap();
    s.record_measurement("ag", "r1", "j1", &Measurement::default())
        .unwrap();
    s.record_failure("ag2", "r1", "j2", "worker crashed")
        .unwrap();
    s.insert_rollout(&rollout("ro-1"), &[target("ro-1", "ag")])
        .unwrap();
    s.log_event(Some("ro-1"), Some("ag"), "wave 1 started", 5)
        .unwrap();
    s.log_event(None, None, "controller started", 6).unwrap();
    s.insert_schedule(&schedule("nightly", "0 0 3 * * *"))
        .unwrap();
    s.record_fire(&FireRow {
        schedule: "nightly".into(),
        planned_ms: 5,
        outcome: FireOutcome::Missed,
        manual: false,
        left_out: Vec::new(),
        recorded_ms: 6,
    })
    .unwrap();
    s.insert_enrollment_token("hash-1", "edge", &BTreeMap::new(), 1, 100)
        .unwrap();
}

#[test]
fn a_sqlite_store_copies_into_postgresql_whole_and_a_second_copy_adds_nothing() {
    let source = sqlite_store();
    filled_store(&source);
    let target = postgres_store();
    let first = source.copy_into(&target, |_| {}).unwrap();
    assert_eq!(first.len(), TABLES.len());
    assert!(first.iter().all(TableCopy::matches), "{first:#?}");
    let copied = |table: &str, copies: &[TableCopy]| {
        copies.iter().find(|c| c.table == table).unwrap().copied
    };
    assert_eq!(copied("agents", &first), 2);
    assert_eq!(copied("results", &first), 1);
    assert_eq!(copied("events", &first), 2);
    // The copy reads back the same through the store's calls.
    assert_eq!(target.agents().unwrap(), source.agents().unwrap());
    assert_eq!(target.models().unwrap(), source.models().unwrap());
    assert_eq!(target.results(None).unwrap(), source.results(None).unwrap());
    assert_eq!(target.rollouts().unwrap(), source.rollouts().unwrap());
    assert_eq!(
        target.events("ro-1").unwrap(),
        source.events("ro-1").unwrap()
    );
    assert_eq!(target.schedules().unwrap(), source.schedules().unwrap());
    assert_eq!(
        target.fires("nightly", 10).unwrap(),
        source.fires("nightly", 10).unwrap()
    );
    // A second run is a no-op.
    let second = source.copy_into(&target, |_| {}).unwrap();
    assert!(
        second.iter().all(|c| c.copied == 0 && c.matches()),
        "{second:#?}"
    );
    // Ids PostgreSQL numbers go on after the copied ones.
    target
        .log_event(Some("ro-1"), None, "after the move", 7)
        .unwrap();
    let events = target.events("ro-1").unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    // A target with rows the source lacks does not match.
    agent(&target, "only-in-postgres", 8);
    let third = source.copy_into(&target, |_| {}).unwrap();
    assert!(!third
        .iter()
        .find(|c| c.table == "agents")
        .unwrap()
        .matches());

    // Nor does one whose rows clash with the source's: the same count of events, but its
    // event 1 is not the source's (which the copy skipped).
    let used = postgres_store();
    agent(&used, "ag", 1);
    used.log_event(None, None, "another controller's event", 3)
        .unwrap();
    let copies = source.copy_into(&used, |_| {}).unwrap();
    let events = copies.iter().find(|c| c.table == "events").unwrap();
    assert_eq!((events.source_rows, events.target_rows), (2, 2));
    assert!(!events.matches(), "{events:?}");
}

/// A measurement with what retention drops: a histogram and the percentile list.
fn whole_measurement() -> Measurement {
    Measurement {
        samples: 100,
        throughput_per_s: 50.0,
        latency_ms: Some(edgefleet_proto::v1::LatencySummary {
            p50: 2.0,
            p99: 3.0,
            percentiles: (0..=100).map(f64::from).collect(),
            ..Default::default()
        }),
        latency_histogram: vec![7u8; 900],
        ..Measurement::default()
    }
}

fn old_results_become_summaries_in_batches_and_baselines_stay_whole(fresh: Fresh) {
    let s = fresh();
    agent(&s, "ag", 1);
    let run = |id: &str, at: i64| RunRow {
        id: id.into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: at,
        schedule: None,
    };
    let jobs: Vec<_> = (0..5).map(|i| job(&format!("j{i}"), "ag")).collect();
    for (id, at) in [("old", 10), ("baseline", 20), ("new", 1000)] {
        s.insert_run(&run(id, at), "", &jobs).unwrap();
        for i in 0..5 {
            s.record_measurement("ag", id, &format!("j{i}"), &whole_measurement())
                .unwrap();
        }
    }
    s.set_baselines("quick", "baseline", &["x86_64".to_string()], 30)
        .unwrap();
    // An old run not judged for regressions yet, and one with a job still pending.
    s.insert_run(&run("unjudged", 11), "", &jobs[..1]).unwrap();
    s.record_measurement("ag", "unjudged", "j0", &whole_measurement())
        .unwrap();
    s.insert_run(&run("pending", 12), "", &jobs[..2]).unwrap();
    s.record_measurement("ag", "pending", "j0", &whole_measurement())
        .unwrap();
    for id in ["old", "baseline", "new", "pending"] {
        s.record_judgement(id, &[], 40).unwrap();
    }
    // Runs before 500: `old` goes in batches of 2; `baseline` stays whole, `new` is too new,
    // `unjudged` and `pending` wait until they are judged and finished.
    let mut passes = Vec::new();
    loop {
        let pass = s.summarize_old_results(500, 2000, 2).unwrap();
        if pass.results == 0 {
            break;
        }
        passes.push(pass.results);
        assert!(pass.bytes_after < pass.bytes_before, "{pass:?}");
    }
    assert_eq!(passes, [2, 2, 1]);
    let kept = |run_id: &str| s.results(Some(run_id)).unwrap();
    for r in kept("old") {
        assert!(r.measurement.latency_histogram.is_empty());
        let latency = r.measurement.latency_ms.as_ref().unwrap();
        assert!(latency.percentiles.is_empty());
        assert_eq!((latency.p50, latency.p99), (2.0, 3.0), "the summary stays");
        assert_eq!(r.measurement.throughput_per_s, 50.0);
    }
    for id in ["baseline", "new", "unjudged", "pending"] {
        assert!(kept(id)
            .iter()
            .all(|r| r.measurement == whole_measurement()));
    }
    // A corrupt measurement is left as it is and not tried again.
    s.insert_run(&run("damaged", 15), "", &jobs[..1]).unwrap();
    s.record_measurement("ag", "damaged", "j0", &whole_measurement())
        .unwrap();
    s.record_judgement("damaged", &[], 40).unwrap();
    s.execute_for_test(
        "UPDATE results SET measurement = ?1 WHERE run_id = 'damaged'",
        params![vec![0xffu8, 0x01]],
    );
    let pass = s.summarize_old_results(500, 3000, 2).unwrap();
    assert_eq!((pass.results, pass.corrupt), (1, 1));
    assert_eq!(s.summarize_old_results(500, 3000, 2).unwrap().results, 0);
}

fn table_stats_count_rows_and_bytes_per_family(fresh: Fresh) {
    let s = fresh();
    filled_store(&s);
    let stats = s.table_stats().unwrap();
    let family = |name: &str| stats.iter().find(|f| f.family == name).unwrap();
    assert_eq!(family("agents").rows, 2);
    assert_eq!(family("results").rows, 1);
    assert_eq!(family("runs").rows, 1 + 2);
    assert!(
        stats.iter().all(|f| (f.bytes > 0) == (f.rows > 0)),
        "bytes where there are rows: {stats:#?}"
    );
    // Every table is in one family.
    let mut tables: Vec<&str> = stats
        .iter()
        .flat_map(|f| f.tables.iter().copied())
        .collect();
    tables.sort();
    let mut all = TABLES.to_vec();
    all.sort();
    assert_eq!(tables, all);
}

fn a_thousand_heartbeats_are_written_in_one_batch(fresh: Fresh) {
    let s = fresh();
    let ids: Vec<String> = (0..1200).map(|i| format!("a{i:04}")).collect();
    for id in &ids {
        agent(&s, id, 1);
    }
    // More than one statement's worth on PostgreSQL, each agent at its own time; one older
    // than what is stored (kept), one unknown (skipped).
    let mut seen: Vec<(String, i64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), 100 + i as i64))
        .collect();
    seen.push(("nobody".to_string(), 5));
    s.touch_agents(&seen).unwrap();
    s.touch_agents(&[("a0007".to_string(), 50)]).unwrap();
    let agents = s.agents().unwrap();
    assert_eq!(agents.len(), 1200);
    for (i, a) in agents.iter().enumerate() {
        assert_eq!(a.last_seen_ms, 100 + i as i64, "{}", a.id);
    }
}
