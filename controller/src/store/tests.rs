//! Store behaviour against a real SQLite database (in memory, and on disk for reopening).

use super::*;

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

#[test]
fn agents_keep_first_seen_and_update_last_seen() {
    let s = Store::in_memory().unwrap();
    agent(&s, "id1", 100);
    agent(&s, "id1", 200);
    s.touch_agent("id1", 300).unwrap();
    let rows = s.agents().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].first_seen_ms, rows[0].last_seen_ms), (100, 300));
    assert_eq!(rows[0].labels["site"], "lab");
    assert_eq!(rows[0].hardware.cpu_cores, 2);
}

#[test]
fn a_model_version_registers_once_and_shares_artifacts() {
    let s = Store::in_memory().unwrap();
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

#[test]
fn results_are_recorded_once_and_only_for_the_agent_that_owns_the_job() {
    let s = Store::in_memory().unwrap();
    agent(&s, "ag", 1);
    agent(&s, "other", 1);
    let run = RunRow {
        id: "r1".into(),
        suite: "quick".into(),
        suite_sha256: "h".into(),
        created_ms: 5,
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
