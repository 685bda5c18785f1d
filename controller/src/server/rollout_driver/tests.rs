//! The driver against a real SQLite store and agent streams that are plain channels, with tokio's
//! clock paused: time moves only when every task waits, so each tick is deterministic.

use std::time::Duration;

use edgefleet_proto::v1::{
    controller_message, ControllerMessage, InstallResult, LatencySummary, Measurement,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::registry::manifest;
use crate::rollout::gate::GATE_ROUNDS;
use crate::rollout::{RolloutSpec, SpecText};
use crate::server::Settings;
use crate::store::RolloutRow;
use crate::store::TargetRow;
use crate::store::{ModelFile, ModelRow};
use edgefleet_proto::v1::BenchJob;

type Stream = mpsc::Receiver<Box<ControllerMessage>>;

struct Fixture {
    ctl: Controller,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A controller with agents `a1`, `a2` (each with an open stream), models m@1 and m@2, and the
/// driver running.
fn fixture() -> (Fixture, Stream, Stream) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::open(
        dir.path(),
        Settings {
            security: crate::server::Security::Insecure {
                shared_token: "t".into(),
            },
            heartbeat_interval: Duration::from_secs(5),
            limits: Default::default(),
            retention: None,
            max_stream_age: None,
        },
    )
    .unwrap();
    for version in ["1", "2"] {
        let mut row = ModelRow {
            name: "m".into(),
            version: version.into(),
            quantization: "int8".into(),
            opset: 17,
            signature_json: "{}".into(),
            files: vec![ModelFile {
                file_name: "model.onnx".into(),
                sha256: version.repeat(64),
                size_bytes: 10,
            }],
            created_ms: 1,
            manifest: Vec::new(),
            manifest_signature: Vec::new(),
        };
        manifest::sign(&mut row, &ctl.signer);
        ctl.store.insert_model(&row).unwrap();
    }
    let mut streams = Vec::new();
    for agent in ["a1", "a2"] {
        ctl.store
            .upsert_agent(
                agent,
                agent,
                &Default::default(),
                "0.1.0",
                &Default::default(),
                1,
            )
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        ctl.fleet.join(agent, tx);
        streams.push(rx);
    }
    let stop = CancellationToken::new();
    tokio::spawn(drive(ctl.clone(), stop.clone()));
    let a2 = streams.pop().unwrap();
    let a1 = streams.pop().unwrap();
    (
        Fixture {
            ctl,
            _dir: dir,
            stop,
        },
        a1,
        a2,
    )
}

/// Starts a rollout of m@2 to both agents, one per wave.
fn start(ctl: &Controller, gate: &str) -> String {
    let spec = RolloutSpec::parse(&SpecText {
        waves: "50%,100%",
        gate,
        ..SpecText::default()
    })
    .unwrap();
    let id = "ro-test".to_string();
    let row = RolloutRow {
        id: id.clone(),
        model_name: "m".into(),
        model_version: "2".into(),
        spec,
        gate_workload: None,
        state: RolloutState::Running,
        reason: String::new(),
        current_wave: 0,
        created_ms: 1,
        updated_ms: 1,
    };
    let targets: Vec<TargetRow> = ["a1", "a2"]
        .iter()
        .zip([0, 1])
        .map(|(agent, wave)| TargetRow {
            rollout_id: id.clone(),
            agent_id: agent.to_string(),
            wave,
            state: TargetState::Waiting,
            error: String::new(),
            previous_version: String::new(),
            health: String::new(),
            updated_ms: 1,
            fetched_bytes: 0,
            fetch_started_ms: 0,
            fetch_finished_ms: 0,
        })
        .collect();
    ctl.store.insert_rollout(&row, &targets).unwrap();
    id
}

/// The next command on an agent's stream (time runs on while the driver ticks).
async fn next(stream: &mut Stream) -> controller_message::Body {
    tokio::time::timeout(Duration::from_secs(60), stream.recv())
        .await
        .expect("a command within a minute")
        .expect("the stream is open")
        .body
        .expect("a body")
}

fn installed(install_id: &str) -> InstallResult {
    InstallResult {
        install_id: install_id.into(),
        ok: true,
        model_name: "m".into(),
        active_version: "2".into(),
        previous_version: "1".into(),
        health: "smoke ok".into(),
        ..InstallResult::default()
    }
}

/// Waits (in paused time) until the rollout reaches `state`.
async fn settle(ctl: &Controller, id: &str, state: RolloutState) -> RolloutRow {
    for _ in 0..400 {
        let row = ctl.store.rollout(id).unwrap().unwrap();
        if row.state == state {
            return row;
        }
        tokio::time::sleep(TICK).await;
    }
    panic!("rollout {id} never became {state}");
}

#[tokio::test(start_paused = true)]
async fn waves_install_one_after_the_other_and_the_rollout_succeeds() {
    let (f, mut a1, mut a2) = fixture();
    let id = start(&f.ctl, "");

    let controller_message::Body::Install(install) = next(&mut a1).await else {
        panic!("a1 gets its install first");
    };
    assert_eq!(install.install_id, "ro-test/a1");
    assert_eq!(install.health_check, "smoke");
    assert!(a2.try_recv().is_err(), "wave 2 waits for wave 1");
    // The agent verifies exactly these bytes against the controller's key.
    let signed = f.ctl.store.model("m", "2").unwrap().unwrap();
    assert_eq!(install.manifest, signed.manifest);

    on_install_result(&f.ctl, "a1", installed("ro-test/a1")).await;
    let controller_message::Body::Install(install) = next(&mut a2).await else {
        panic!("a2 gets its install in wave 2");
    };
    on_install_result(&f.ctl, "a2", installed(&install.install_id)).await;

    let row = settle(&f.ctl, &id, RolloutState::Succeeded).await;
    assert_eq!(row.current_wave, 2);
    let targets = f.ctl.store.targets(&id).unwrap();
    assert!(
        targets.iter().all(|t| t.state == TargetState::Done),
        "{targets:?}"
    );
    assert_eq!(targets[0].previous_version, "1");
    // A duplicate answer changes nothing.
    on_install_result(&f.ctl, "a1", installed("ro-test/a1")).await;
    assert_eq!(f.ctl.store.targets(&id).unwrap(), targets);
}

/// Answers the gate's jobs (all but the last `hold_back`) with the given p90 for the candidate and
/// for the active version; returns the run id and the jobs held back.
async fn answer_gate(
    ctl: &Controller,
    agent: &str,
    stream: &mut Stream,
    (candidate_p90, active_p90): (f64, f64),
    hold_back: usize,
) -> (String, Vec<BenchJob>) {
    let controller_message::Body::RunJobs(mut run) = next(stream).await else {
        panic!("the gate's benchmark");
    };
    assert_eq!(run.jobs.len(), 2 * GATE_ROUNDS);
    let held = run.jobs.split_off(run.jobs.len() - hold_back);
    for job in &run.jobs {
        let p90 = if job.job_id.ends_with("-candidate") {
            candidate_p90
        } else {
            active_p90
        };
        let m = Measurement {
            latency_ms: Some(LatencySummary {
                p50: p90 / 2.0,
                p90,
                p99: p90 * 2.0,
                ..LatencySummary::default()
            }),
            peak_rss_bytes: 1_000_000,
            ..Measurement::default()
        };
        ctl.store
            .record_measurement(agent, &run.run_id, &job.job_id, &m)
            .unwrap();
    }
    (run.run_id, held)
}

#[tokio::test(start_paused = true)]
async fn a_slower_candidate_is_stopped_by_the_gate_and_rolled_back() {
    let (f, mut a1, mut a2) = fixture();
    let id = start(&f.ctl, "p90<=1.10x");
    next(&mut a1).await;
    on_install_result(&f.ctl, "a1", installed("ro-test/a1")).await;
    answer_gate(&f.ctl, "a1", &mut a1, (5.0, 2.0), 0).await;

    let controller_message::Body::Rollback(rollback) = next(&mut a1).await else {
        panic!("a breach rolls the wave back");
    };
    assert_eq!(rollback.install_id, "ro-test/a1/rollback");
    let row = settle(&f.ctl, &id, RolloutState::Aborted).await;
    assert!(
        row.reason
            .starts_with("performance gate breached on a1: p90 2.500x (limit <=1.10x)"),
        "{}",
        row.reason
    );
    let gate = &f.ctl.store.gates(&id).unwrap()[0];
    assert!(!gate.verdicts.as_ref().unwrap()[0].passed);

    let rolled_back = InstallResult {
        install_id: rollback.install_id,
        ok: true,
        active_version: "1".into(),
        ..InstallResult::default()
    };
    on_install_result(&f.ctl, "a1", rolled_back).await;
    let targets = f.ctl.store.targets(&id).unwrap();
    assert_eq!(targets[0].state, TargetState::RolledBack);
    assert_eq!(
        targets[1].state,
        TargetState::Waiting,
        "wave 2 never started"
    );
    assert!(a2.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_faster_candidate_passes_the_gate() {
    let (f, mut a1, mut a2) = fixture();
    let id = start(&f.ctl, "p90<=1.10x");
    next(&mut a1).await;
    on_install_result(&f.ctl, "a1", installed("ro-test/a1")).await;
    answer_gate(&f.ctl, "a1", &mut a1, (2.0, 5.0), 0).await;
    let controller_message::Body::Install(install) = next(&mut a2).await else {
        panic!("wave 2 starts after the gate passed");
    };
    on_install_result(&f.ctl, "a2", installed(&install.install_id)).await;
    answer_gate(&f.ctl, "a2", &mut a2, (2.0, 5.0), 0).await;
    settle(&f.ctl, &id, RolloutState::Succeeded).await;
}

#[tokio::test(start_paused = true)]
async fn a_gate_that_cannot_read_its_measurements_stops_the_wave() {
    let (f, mut a1, _a2) = fixture();
    let id = start(&f.ctl, "p90<=1.10x");
    next(&mut a1).await;
    on_install_result(&f.ctl, "a1", installed("ro-test/a1")).await;
    // The gate is judged once no job is pending: damage a stored result before the last one.
    let (run_id, held) = answer_gate(&f.ctl, "a1", &mut a1, (2.0, 5.0), 1).await;
    f.ctl.store.execute_for_test(
        &format!(
        "UPDATE results SET measurement = x'ff01' WHERE run_id = '{run_id}' AND job_id = 'a000-r1-active'"
        ),
        &[],
    );
    f.ctl
        .store
        .record_failure("a1", &run_id, &held[0].job_id, "worker crashed")
        .unwrap();
    let row = settle(&f.ctl, &id, RolloutState::Aborted).await;
    assert!(
        row.reason.starts_with(
            "performance gate cannot read its measurements: corrupt row in table results"
        ),
        "{}",
        row.reason
    );
    assert!(matches!(
        next(&mut a1).await,
        controller_message::Body::Rollback(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn control_says_what_was_wrong_with_the_right_error() {
    let (f, _a1, _a2) = fixture();
    let id = start(&f.ctl, "");
    assert!(matches!(
        control(&f.ctl, "ro-nope", "pause").await,
        Err(ControlError::NoSuchRollout(_))
    ));
    let paused = control(&f.ctl, &id, "pause").await.unwrap();
    assert_eq!(paused.state, RolloutState::Paused);
    let again = control(&f.ctl, &id, "pause").await.unwrap_err();
    assert_eq!(
        again.to_string(),
        "cannot pause rollout ro-test: it is paused"
    );
    assert!(matches!(again, ControlError::Refused(_)));
    assert!(matches!(
        control(&f.ctl, &id, "explode").await,
        Err(ControlError::Refused(_))
    ));
}
