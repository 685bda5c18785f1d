//! Kill trials, many of them: `cargo run --release -p edgefleet-e2e --example kill_trials --
//! --trials 100 [--seed 7]` (build the binaries first: `cargo build --release --bins`). Each
//! trial SIGKILLs the agent or the controller at a random moment of an install or a benchmark
//! run, restarts it, and checks for corrupt installs, lost or duplicated results and stuck
//! rollouts; the last line is the tally. `--replicas`: three controller replicas behind
//! HAProxy on PostgreSQL and S3, and each trial kills a replica, the leader, PostgreSQL or the
//! agent.

fn main() {
    let mut trials = 20;
    let mut seed = 1;
    let mut replicas = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--replicas" {
            replicas = true;
            continue;
        }
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--trials", Some(n)) => trials = n,
            ("--seed", Some(n)) => seed = n,
            _ => {
                eprintln!("usage: kill_trials [--trials N] [--seed N] [--replicas]");
                std::process::exit(64);
            }
        }
    }
    let dir = tempfile::tempdir().expect("a scratch folder");
    let tally = if replicas {
        edgefleet_e2e::kill_trials::run_replicas(dir.path(), trials as u32, seed)
    } else {
        edgefleet_e2e::kill_trials::run(dir.path(), trials as u32, seed)
    };
    println!("{tally}");
    if tally.problems() > 0 {
        std::process::exit(1);
    }
}
