//! End-to-end: scheduled benchmark runs fired by tokio-cron-scheduler inside a real TLS
//! controller on a real agent. Bad schedules are refused with one line and store nothing; a
//! schedule every two seconds starts runs whose results are stored; a fire while the previous run
//! is still going is skipped; `schedule rm` stops the fires; fires due while the controller was
//! stopped are recorded as missed after it restarts. Deadlines are generous and only bound
//! waits; nothing asserts how fast anything is.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use edgefleet_e2e::{start_agent, Controller, StateIn};

/// A quick one-model suite on the tiny Add model.
const QUICK: &str = "name = \"sched-quick\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 0.1\nmax_duration_s = 5\n";

/// The same model kept busy for at least 12 s: a run that outlasts several two-second fires.
const LONG: &str = "name = \"sched-long\"\nmodels = [\"add@1\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nwarmup = 1\nmin_queries = 10\nmin_duration_s = 12\nmax_duration_s = 30\n";

const DEADLINE: Duration = Duration::from_secs(120);

fn schedules(ctl: &Controller) -> Vec<serde_json::Value> {
    serde_json::from_str(&ctl.cli_ok(&["schedule", "ls", "--json"])).expect("schedules JSON")
}

fn schedule(ctl: &Controller, name: &str) -> serde_json::Value {
    schedules(ctl)
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("schedule {name} is not listed"))
}

/// Polls `check` until it gives a value, or fails after [`DEADLINE`] saying `what`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The failure's stderr, asserted to be one line containing `needle`.
fn refused(ctl: &Controller, args: &[&str], needle: &str) {
    let out = ctl.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
}

fn add(ctl: &Controller, name: &str, cron: &str, suite: &Path) -> String {
    ctl.cli_ok(&[
        "schedule",
        "add",
        name,
        "--cron",
        cron,
        "--suite",
        suite.to_str().unwrap(),
    ])
}

/// "benchmark run started" lines in the controller's log that name schedule `name`.
fn runs_started_in_log(ctl: &Controller, name: &str) -> usize {
    ctl.process
        .log_text()
        .lines()
        .filter(|l| l.contains("benchmark run started") && l.contains(&format!("\"{name}\"")))
        .count()
}

/// Result records stored for one run (`report --run`).
fn records_of(ctl: &Controller, dir: &Path, run_id: &str) -> Vec<serde_json::Value> {
    ctl.records(&dir.join(format!("report-{run_id}")), Some(run_id))
}

#[test]
fn schedules_fire_skip_while_running_stop_when_removed_and_count_missed_fires() {
    schedules_fire(StateIn::Sqlite)
}

#[test]
fn schedules_fire_skip_while_running_and_count_missed_fires_on_postgresql_and_s3() {
    schedules_fire(StateIn::postgres_and_s3())
}

fn schedules_fire(state: StateIn) {
    let dir = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start_in(dir.path(), "127.0.0.1:0", &state, &[]);
    let _agent = start_agent(dir.path(), &ctl, "edge-a", &["site=lab"]);
    ctl.wait_online(&["edge-a"], Duration::from_secs(60));
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let quick = dir.path().join("quick.toml");
    std::fs::write(&quick, QUICK).unwrap();
    let long = dir.path().join("long.toml");
    std::fs::write(&long, LONG).unwrap();
    let quick_arg = quick.to_str().unwrap();

    // Refused with one line, nothing stored.
    let add_args = |cron: &'static str| ["schedule", "add", "bad", "--cron", cron, "--suite"];
    let with_suite = |args: [&'static str; 6], suite: &str| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.push(suite.to_string());
        v
    };
    for (cron, why) in [
        ("0 0 3 * *", "5 fields, not 6"),
        ("61 * * * * *", "invalid cron expression `61 * * * * *`"),
    ] {
        let args = with_suite(add_args(cron), quick_arg);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&ctl, &args, why);
        refused(&ctl, &args, "the first is seconds");
    }
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "name = \"x\"\nmodels = [\n").unwrap();
    for (suite, why) in [
        ("/nonexistent/suite.toml", "/nonexistent/suite.toml"),
        (bad_toml.to_str().unwrap(), "bad.toml"),
    ] {
        let args = with_suite(add_args("*/2 * * * * *"), suite);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&ctl, &args, why);
    }
    let mut bad_select = with_suite(add_args("*/2 * * * * *"), quick_arg);
    bad_select.extend(["--select".to_string(), "hw".to_string()]);
    let bad_select: Vec<&str> = bad_select.iter().map(String::as_str).collect();
    refused(&ctl, &bad_select, "selector `hw`");
    assert!(schedules(&ctl).is_empty(), "a refused schedule was stored");
    refused(&ctl, &["schedule", "rm", "nope"], "no schedule nope");
    refused(&ctl, &["schedule", "run", "nope"], "no schedule nope");

    // The options are kept as given, and the nightly schedule's next fire is at 03:00:00.
    ctl.cli_ok(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 0 3 * * *",
        "--suite",
        quick_arg,
        "--select",
        "site=lab",
        "--jitter",
        "10m",
        "--when-idle",
        "--max-start-temp",
        "60",
    ]);
    let nightly = schedule(&ctl, "nightly");
    assert_eq!(nightly["select"], "site=lab", "{nightly:#}");
    assert_eq!(nightly["jitter_ms"], 600_000, "{nightly:#}");
    assert_eq!(nightly["when_idle"], true, "{nightly:#}");
    assert_eq!(nightly["max_start_temp_c"], 60.0, "{nightly:#}");
    assert_eq!(nightly["missed"], 0, "{nightly:#}");
    assert!(nightly["last_fire"].is_null(), "{nightly:#}");
    let next = nightly["next_fire"].as_str().unwrap();
    assert!(next.contains("T03:00:00"), "{next}");
    refused(
        &ctl,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 0 4 * * *",
            "--suite",
            quick_arg,
        ],
        "exists already",
    );
    ctl.cli_ok(&["schedule", "rm", "nightly"]);
    assert!(schedules(&ctl).is_empty());

    // Every two seconds: at least two runs start and their results are stored.
    let added = add(&ctl, "every2", "*/2 * * * * *", &quick);
    assert!(added.contains("added schedule every2"), "{added}");
    let listed = schedule(&ctl, "every2");
    assert_eq!(listed["cron"], "*/2 * * * * *");
    assert_eq!(listed["suite"], "sched-quick");
    assert!(
        listed["next_fire"].as_str().unwrap().ends_with('Z'),
        "{listed:#}"
    );
    let mut started = BTreeSet::new();
    wait_for("two scheduled runs", || {
        let fire = &schedule(&ctl, "every2")["last_fire"];
        if fire["outcome"] == "started" {
            started.insert(fire["run_id"].as_str().unwrap().to_string());
        }
        (started.len() >= 2).then_some(())
    });
    for run_id in &started {
        let records = wait_for("a scheduled run's results", || {
            Some(records_of(&ctl, dir.path(), run_id)).filter(|r| !r.is_empty())
        });
        assert_eq!(records[0]["model"], "add", "{records:#?}");
        assert_eq!(records[0]["agent"], "edge-a", "{records:#?}");
    }

    // Removed: no further fires.
    ctl.cli_ok(&["schedule", "rm", "every2"]);
    assert!(schedules(&ctl).is_empty());
    // A fire that was already starting when rm arrived may still finish starting its run: wait
    // until the count holds still over two fire intervals.
    let mut seen = runs_started_in_log(&ctl, "every2");
    wait_for("the runs started before rm to settle", || {
        std::thread::sleep(Duration::from_secs(4));
        let now = runs_started_in_log(&ctl, "every2");
        let settled = now == seen;
        seen = now;
        settled.then_some(())
    });
    let before = runs_started_in_log(&ctl, "every2");
    assert!(before >= 2, "{before}");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        runs_started_in_log(&ctl, "every2"),
        before,
        "fired after rm"
    );

    // A long run: the fires during it are skipped, and so is a manual one.
    add(&ctl, "long", "*/2 * * * * *", &long);
    let long_run = wait_for("the long run to start", || {
        let fire = schedule(&ctl, "long")["last_fire"].clone();
        (fire["outcome"] == "started").then(|| fire["run_id"].as_str().unwrap().to_string())
    });
    wait_for("a fire skipped while the long run goes on", || {
        let fire = schedule(&ctl, "long")["last_fire"].clone();
        (fire["outcome"] == "skipped-still-running").then_some(())
    });
    refused(&ctl, &["schedule", "run", "long"], "still going");
    assert_eq!(runs_started_in_log(&ctl, "long"), 1);

    // Stopped for several fire intervals: the fires it missed are recorded after the restart.
    let listen = ctl.listen.clone();
    assert!(
        ctl.process.terminate(Duration::from_secs(60)).is_some(),
        "the controller stops on SIGTERM"
    );
    // Down for several fire intervals (time passing is what this tests).
    std::thread::sleep(Duration::from_secs(9));
    ctl = Controller::start_in(dir.path(), &listen, &state, &[]);
    let after = schedule(&ctl, "long");
    assert!(after["missed"].as_u64().unwrap() >= 3, "{after:#}");
    assert!(
        ctl.process
            .log_text()
            .contains("missed while the controller was down"),
        "{}",
        ctl.process.log_text()
    );
    let table = ctl.cli_ok(&["schedule", "ls"]);
    assert!(
        table.contains(" missed") && table.contains("long"),
        "{table}"
    );

    // The long run finishes with its result; the schedule then starts runs again.
    wait_for("the long run's result", || {
        Some(records_of(&ctl, dir.path(), &long_run)).filter(|r| !r.is_empty())
    });
    wait_for("a run started after the long one", || {
        let fire = schedule(&ctl, "long")["last_fire"].clone();
        (fire["outcome"] == "started" && fire["run_id"] != long_run.as_str()).then_some(())
    });
    ctl.cli_ok(&["schedule", "rm", "long"]);
}
