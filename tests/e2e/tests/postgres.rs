//! The controller with its state in PostgreSQL, in the ways it fails: a database that does not
//! answer at start, one migrated by a newer edgefleet, and one restarted while a run's results
//! arrive. (The flows themselves run on PostgreSQL in rollout.rs, compare.rs and schedules.rs.)
//!
//! The tests here share this process's PostgreSQL cluster and one of them stops it: they run
//! one at a time.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgefleet_e2e::{binary, start_agent, Controller, StateIn};

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `edgefleet serve` on `database` until it exits by itself: its exit code and stderr.
fn serve_exits(dir: &std::path::Path, database: &str) -> (Option<i32>, String) {
    let out = Command::new(binary("edgefleet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("refused"))
        .args(["--database", database])
        .output()
        .expect("run edgefleet serve");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_database_or_a_newer_schema_stops_serve_in_one_line() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();

    // Nothing listens on port 1: EX_UNAVAILABLE, and the password is not in the message.
    let (code, stderr) = serve_exits(dir.path(), "postgres://fleet:hunter2@127.0.0.1:1/fleet");
    assert_eq!(code, Some(69), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("cannot reach the database postgres://fleet@127.0.0.1:1/fleet"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");

    // A database a newer controller migrated: EX_USAGE, saying to upgrade.
    let state = StateIn::postgres();
    let StateIn::Postgres(url) = &state else {
        unreachable!()
    };
    let mut ctl = Controller::start_with(dir.path(), "127.0.0.1:0", &state.flags());
    ctl.process.terminate(Duration::from_secs(30));
    let cluster = edgefleet_test_postgres::cluster();
    assert_eq!(
        cluster
            .psql_on(url, "SELECT version FROM edgefleet_schema")
            .unwrap(),
        "4"
    );
    cluster
        .psql_on(url, "UPDATE edgefleet_schema SET version = 99")
        .unwrap();
    let (code, stderr) = serve_exits(dir.path(), url);
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr
            .contains("schema version 99, newer than this controller knows (4); upgrade edgefleet"),
        "{stderr}"
    );
}

/// Three one-model scenarios of about two seconds each: three jobs per agent, one after the
/// other, so results keep arriving for several seconds.
const SUITE: &str = "name = \"pg-restart\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 2\nmax_duration_s = 10\n\
[[scenario]]\nkind = \"single-stream\"\nthreads = [2]\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 2\nmax_duration_s = 10\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 2\nmin_queries = 20\nmin_duration_s = 2\nmax_duration_s = 10\n";

/// The same model, briefly: a first run that leaves it on the agents.
const QUICK: &str = "name = \"pg-quick\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n\
[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 0.1\nmax_duration_s = 5\n";

#[test]
fn results_arriving_while_postgresql_restarts_are_stored_once_each() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let state = StateIn::postgres();
    let ctl = Controller::start_with(dir.path(), "127.0.0.1:0", &state.flags());
    let _a = start_agent(dir.path(), &ctl, "edge-a", &[]);
    let _b = start_agent(dir.path(), &ctl, "edge-b", &[]);
    ctl.wait_online(&["edge-a", "edge-b"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, QUICK).unwrap();
    ctl.cli_ok(&["bench", "run", quick.to_str().unwrap(), "--wait"]);
    let suite = dir.path().join("suite.toml");
    std::fs::write(&suite, SUITE).unwrap();
    let run_id = ctl
        .cli_ok(&["bench", "run", suite.to_str().unwrap()])
        .trim()
        .to_string();

    // PostgreSQL goes away while the run is under way, long enough for results to arrive at a
    // controller that cannot store them, and comes back.
    let cluster = edgefleet_test_postgres::cluster();
    cluster.stop();
    ctl.process
        .wait_for_log("cannot store result", Duration::from_secs(120));
    cluster.start_again();

    // Every job done, each with one result (the table's key allows no second one; a result
    // stored twice would have failed its insert and shown here as a job never done).
    let StateIn::Postgres(url) = &state else {
        unreachable!()
    };
    let count = |sql: &str| -> String {
        cluster
            .psql_on(url, &sql.replace("RUN", &run_id))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    while count("SELECT count(*) FROM bench_jobs WHERE run_id = 'RUN' AND state = 'done'") != "6" {
        assert!(
            Instant::now() < deadline,
            "all 6 jobs of run {run_id} done after PostgreSQL restarted, within 240 s; jobs: {}\n{}",
            count("SELECT string_agg(job_id || ' ' || state || ' ' || coalesce(error, ''), ', ') FROM bench_jobs WHERE run_id = 'RUN'"),
            ctl.process.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        count("SELECT count(*) || ' ' || count(DISTINCT job_id) FROM results WHERE run_id = 'RUN'"),
        "6 6"
    );
    // The agents' results read back whole: the report has every scenario of the run.
    let records = ctl.records(&dir.path().join("report"), Some(&run_id));
    assert!(!records.is_empty(), "the run's report has records");
    assert!(
        records.iter().all(|r| r["run_id"] == run_id.as_str()),
        "{records:#?}"
    );
}

#[test]
fn a_controller_moved_from_sqlite_to_postgresql_and_s3_keeps_its_agents_models_and_results() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent(dir.path(), &ctl, "edge-a", &["site=lab"]);
    ctl.wait_online(&["edge-a"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, QUICK).unwrap();
    ctl.cli_ok(&["bench", "run", quick.to_str().unwrap(), "--wait"]);
    let before = ctl.records(&dir.path().join("before"), None);
    assert_eq!(before.len(), 1, "{before:#?}");
    let listen = ctl.listen.clone();
    let data_dir = ctl.data_dir.clone();
    ctl.process.terminate(Duration::from_secs(30));

    let state = StateIn::postgres();
    let StateIn::Postgres(url) = &state else {
        unreachable!()
    };
    let s3 = edgefleet_test_s3::S3Server::start();
    let migrate = |what: &str| {
        let out = Command::new(binary("edgefleet"))
            .args(["store", "migrate", "--from"])
            .arg(&data_dir)
            .args(["--to", url])
            .args([
                "--artifacts",
                &s3.url("fleet"),
                "--s3-endpoint",
                &s3.endpoint(),
            ])
            .envs(s3.env())
            .output()
            .expect("run edgefleet store migrate");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = migrate("the first migrate");
    let results_row = first
        .lines()
        .find(|l| l.starts_with("results "))
        .unwrap_or_else(|| panic!("a results row: {first}"));
    assert_eq!(
        results_row.split_whitespace().collect::<Vec<_>>(),
        ["results", "1", "1", "1", "same"],
        "{first}"
    );
    // Every artifact the store names was hashed in the data folder.
    let artifacts = first
        .lines()
        .find(|l| l.starts_with("artifacts "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("an artifacts row: {first}"));
    assert!(
        first.contains(&format!("\n{artifacts} artifacts ("))
            && first.contains("match their sha256"),
        "{first}"
    );
    // ... and every one is in the object store, read back and checked there.
    assert!(
        first.contains(&format!(
            "\n{artifacts} artifacts in s3://edgefleet/fleet match their sha256 ({artifacts} uploaded now"
        )),
        "{first}"
    );
    assert_eq!(
        s3.objects("fleet").len(),
        artifacts.parse::<usize>().unwrap()
    );
    let second = migrate("the second migrate");
    assert!(
        second.contains("\n0 rows copied") && second.contains("(0 uploaded now"),
        "a second run copies nothing: {second}"
    );

    // The same data folder's keys with the state in PostgreSQL and the artifacts in the object
    // store only: the agent comes back with its certificate, the old results are there, and a
    // new agent fetches the model from the object store for a new run.
    for entry in std::fs::read_dir(data_dir.join("artifacts")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let mut flags = state.flags();
    let s3_flags = s3.serve_flags("fleet");
    flags.extend(s3_flags.iter().map(String::as_str));
    let ctl = Controller::start_with_env(dir.path(), &listen, &flags, &s3.env());
    ctl.wait_online(&["edge-a"], Duration::from_secs(120));
    let after = ctl.records(&dir.path().join("after"), None);
    assert_eq!(after, before);
    let _b = start_agent(dir.path(), &ctl, "edge-b", &[]);
    ctl.wait_online(&["edge-a", "edge-b"], Duration::from_secs(120));
    ctl.cli_ok(&["bench", "run", quick.to_str().unwrap(), "--wait"]);
    assert_eq!(ctl.records(&dir.path().join("later"), None).len(), 3);
}
