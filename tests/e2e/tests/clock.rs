//! A device whose clock is wrong, under libfaketime (Debian's `faketime`) with the monotonic
//! clock left real, as NTP stepping a clock would: at 2020-01-01 the agent says once, in words,
//! that its clock is before the controller's certificate, and comes back online by itself as soon
//! as the clock is right; a clock that lags by most of a day is no trouble, also after the
//! controller restarts, because the server certificate is kept and back-dated.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgefleet_e2e::fake_clock::FakeClock;
use edgefleet_e2e::{binary, start_agent, start_agent_in, wait_until, Controller, Process};

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Starts the enrolled agent `name` under `clock`, its link's repeats logged at debug level so
/// the test can see the retries that are not said again.
fn start_under(clock: &FakeClock, dir: &Path, ctl: &Controller, name: &str) -> Process {
    let mut cmd = Command::new(binary("edgefleet-agent"));
    clock.apply(&mut cmd);
    cmd.env("EDGEFLEET_LOG", "info,edgefleet_agent::link=debug");
    let empty = dir.join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    start_agent_in(
        cmd,
        dir,
        name,
        &empty,
        &["--controller", ctl.address.as_str()],
    )
}

#[test]
fn a_device_clock_in_2020_is_named_once_and_the_agent_recovers_when_it_is_right() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let listen = ctl.listen.clone();
    let mut agent = start_agent(dir.path(), &ctl, "edge-clock", &[]);
    ctl.wait_online(&["edge-clock"], Duration::from_secs(60));
    assert!(agent.terminate(Duration::from_secs(30)).is_some());

    // The controller restarts: the same server certificate.
    let server_pem = ctl.data_dir.join("server.pem");
    let before = sha256_of(&server_pem);
    drop(ctl);
    let ctl = Controller::start(dir.path(), &listen);
    assert_eq!(
        sha256_of(&server_pem),
        before,
        "the server certificate is kept across restarts"
    );

    // 2020: the controller's certificate is not valid yet on this device.
    let clock = FakeClock::new();
    clock.set_absolute("2020-01-01 00:00:00");
    let agent = start_under(&clock, dir.path(), &ctl, "edge-clock");
    agent.wait_for_log(
        "the device clock reads 2020-01-01T",
        Duration::from_secs(60),
    );
    wait_until(
        "the agent to retry a few times with the wrong clock",
        Duration::from_secs(60),
        || {
            agent
                .log_text()
                .matches("still cannot connect to the controller")
                .count()
                >= 3
        },
    );
    let log = agent.log_text();
    // The repeats are at debug level ("still cannot connect"); the line itself once.
    let said = log
        .lines()
        .filter(|l| l.contains("the device clock reads") && !l.contains("still cannot"))
        .count();
    assert_eq!(said, 1, "said once, not at every retry:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("the device clock reads"))
        .unwrap();
    println!("agent: {line}");
    assert!(
        line.contains("before the controller's certificate is valid") && line.contains("NTP"),
        "{line}"
    );
    assert_eq!(ctl.agents()[0]["online"], false);

    // NTP answers: the clock is right, and the agent is back without a restart.
    clock.set_real();
    let took = wait_until(
        "the agent back online once its clock is right",
        Duration::from_secs(90),
        || ctl.agents()[0]["online"] == true,
    );
    println!("back online {took:?} after the clock was set right");
    drop(agent);
    wait_until("the agent to show offline", Duration::from_secs(60), || {
        ctl.agents()[0]["online"] == false
    });

    // A clock most of a day behind is within the back-dated certificate.
    clock.set_offset("-20h");
    let mark = std::fs::read_to_string(dir.path().join("edge-clock.log"))
        .unwrap()
        .len();
    let agent = start_under(&clock, dir.path(), &ctl, "edge-clock");
    let since = || agent.log_text()[mark..].to_string();
    wait_until(
        "the agent with a clock 20 hours behind to connect",
        Duration::from_secs(90),
        || since().contains("connected to the controller"),
    );
    ctl.wait_online(&["edge-clock"], Duration::from_secs(30));
    assert!(
        !since().contains("the device clock reads"),
        "a day of lag is no trouble:\n{}",
        since()
    );
}
