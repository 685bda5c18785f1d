//! Retention in a running controller (`serve --retention-days`): results of runs older than
//! the period are reduced to their summary at start, a newer run stays whole, `store stats`
//! counts them, the report still has every run, and `compare` says why an old run's histograms
//! are gone instead of failing on them.

use std::time::Duration;

use edgefleet_e2e::{start_agent, Controller};

const QUICK: &str = "name = \"retention\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 0.1\nmax_duration_s = 5\n";

#[test]
fn results_past_the_retention_period_keep_their_summary_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-a", &[]);
    ctl.wait_online(&["edge-a"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, QUICK).unwrap();
    let run = |ctl: &Controller| {
        let out = ctl.cli_ok(&["bench", "run", quick.to_str().unwrap(), "--wait", "--json"]);
        let records: serde_json::Value = serde_json::from_str(&out).unwrap();
        records[0]["run_id"].as_str().unwrap().to_string()
    };
    let old = run(&ctl);
    let new = run(&ctl);
    let listen = ctl.listen.clone();
    let data_dir = ctl.data_dir.clone();
    ctl.process.terminate(Duration::from_secs(30));

    // The first run is made ten days old, as if the controller had kept it that long.
    let db = rusqlite::Connection::open(data_dir.join("controller.db")).unwrap();
    db.execute(
        "UPDATE bench_runs SET created_ms = created_ms - 10 * 86400000 WHERE id = ?1",
        [&old],
    )
    .unwrap();
    drop(db);

    let ctl = Controller::start_with(dir.path(), &listen, &["--retention-days", "7"]);
    ctl.process.wait_for_log(
        "results past the retention period reduced to their summary",
        Duration::from_secs(60),
    );
    let stats = || {
        let out = ctl.cli(&[
            "store",
            "stats",
            "--json",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let stats = stats();
    assert_eq!(stats["results_summarized"], 1, "{stats:#}");
    let results = stats["families"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["family"] == "results")
        .unwrap();
    assert_eq!(results["rows"], 2, "{stats:#}");

    // The report still has both runs; the old one without its histogram.
    let records = ctl.records(&dir.path().join("report"), None);
    assert_eq!(records.len(), 2, "{records:#?}");
    let of = |run_id: &str| records.iter().find(|r| r["run_id"] == run_id).unwrap();
    assert_eq!(of(&old)["latency_histogram_hdr"], "");
    assert_ne!(of(&new)["latency_histogram_hdr"], "");
    assert!(
        of(&old)["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "the summary stays: {:#}",
        of(&old)
    );
    assert_eq!(of(&old)["latency_percentiles_ms"], serde_json::json!([]));

    // Comparing the old run says why it cannot, in one line.
    let out = ctl.cli(&["compare", &old, &new]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("dropped by retention"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
