//! Five kill trials (the long run is `examples/kill_trials.rs`): the agent or the controller
//! SIGKILLed at a random moment of an install or a benchmark run, then restarted; nothing
//! corrupt installed, no result lost or stored twice, every rollout final.

#[test]
fn five_kill_trials_find_nothing_broken() {
    let dir = tempfile::tempdir().unwrap();
    let tally = edgefleet_e2e::kill_trials::run(dir.path(), 5, 2026);
    println!("{tally}");
    assert_eq!(tally.trials, 5);
    assert_eq!(tally.problems(), 0, "{tally}");
    assert!(
        tally.installs_checked >= 1,
        "no active version was checked: {tally}"
    );
}
