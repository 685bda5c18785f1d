//! The Debian packages as a device and an operator meet them: `scripts/package.sh` makes all
//! three (from the debug builds `scripts/test.sh` already made, with quick compression); their
//! contents and control data are checked; the amd64 agent package is unpacked into a throwaway
//! root, where its `check` loads the package's own ONNX Runtime, `enroll` takes it from nothing
//! to enrolled against a real controller and the daemon then runs from the written config; dpkg
//! refuses the arm64 package on this amd64 machine; systemd-analyze verifies both units and rates
//! the agent's exposure; every maintainer script parses as shell; and both packages are installed
//! for real with `apt-get` in a throwaway Debian 12 root (`edgefleet_e2e::debian_root`), used,
//! upgraded, removed and purged there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use edgefleet_e2e::debian_root::DebianRoot;
use edgefleet_e2e::{repo_root, unsent_results, wait_until, Controller, Process};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The packages, made once for every test in this file.
fn packages() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/debian-test");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/package.sh"))
            .args(["--profile", "dev", "--no-build", "--fast", "--out"])
            .arg(&dir)
            .output()
            .expect("run scripts/package.sh");
        assert!(
            out.status.success(),
            "scripts/package.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn package(name: &str, arch: &str) -> PathBuf {
    packages().join(format!("{name}_{VERSION}-1_{arch}.deb"))
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn stdout_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The paths a package holds (as `dpkg-deb -c` lists them, without the leading `.`).
fn contents(deb: &Path) -> Vec<String> {
    stdout_ok("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches('.').to_string())
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    stdout_ok("dpkg-deb", &["-f", deb.to_str().unwrap(), name])
        .trim()
        .to_string()
}

/// The ELF machine of a file: 62 x86-64, 183 aarch64.
fn elf_machine(path: &Path) -> u16 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

fn unpack(deb: &Path, root: &Path) {
    stdout_ok(
        "dpkg-deb",
        &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
    );
}

#[test]
fn the_agent_packages_carry_everything_a_device_needs() {
    for (arch, machine) in [("amd64", 62), ("arm64", 183)] {
        let deb = package("edgefleet-agent", arch);
        let files = contents(&deb);
        for expected in [
            "/usr/bin/edgefleet-agent",
            "/usr/bin/edgefleet-agent-worker",
            "/usr/lib/edgefleet-agent/libonnxruntime.so.1.31.1",
            "/usr/share/doc/edgefleet-agent/examples/agent.toml",
            "/usr/share/bash-completion/completions/edgefleet-agent",
            "/usr/share/zsh/vendor-completions/_edgefleet-agent",
            "/usr/share/fish/vendor_completions.d/edgefleet-agent.fish",
            "/usr/share/man/man1/edgefleet-agent.1.gz",
            "/usr/share/man/man1/edgefleet-agent-enroll.1.gz",
            "/usr/lib/udev/rules.d/60-edgefleet-agent-powercap.rules",
        ] {
            assert!(
                files.iter().any(|f| f == expected),
                "{arch}: {expected} missing from {files:#?}"
            );
        }
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("/systemd/system/edgefleet-agent.service")),
            "{arch}: no unit in {files:#?}"
        );
        assert_eq!(field(&deb, "Package"), "edgefleet-agent");
        assert_eq!(field(&deb, "Architecture"), arch);
        assert!(field(&deb, "Depends").contains("libstdc++6"));

        // Every binary and the library are built for the package's architecture.
        let root = tempfile::tempdir().unwrap();
        unpack(&deb, root.path());
        for file in [
            "usr/bin/edgefleet-agent",
            "usr/bin/edgefleet-agent-worker",
            "usr/lib/edgefleet-agent/libonnxruntime.so.1.31.1",
        ] {
            assert_eq!(
                elf_machine(&root.path().join(file)),
                machine,
                "{arch} {file}"
            );
        }
        // The maintainer scripts: its own user, and the unit enabled, started and restarted on
        // upgrade; purge (and only purge) deletes the data folder.
        let control = tempfile::tempdir().unwrap();
        stdout_ok(
            "dpkg-deb",
            &[
                "-e",
                deb.to_str().unwrap(),
                control.path().to_str().unwrap(),
            ],
        );
        let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
        assert!(postinst.contains("useradd --system"), "{postinst}");
        assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
        assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
        let postrm = std::fs::read_to_string(control.path().join("postrm")).unwrap();
        let purge = postrm.find("= purge").expect("a purge branch");
        assert!(postrm[purge..].contains("rm -rf /var/lib/edgefleet-agent"));
        assert!(!postrm[..purge].contains("/var/lib/edgefleet-agent"));
    }
}

#[test]
fn the_controller_package_carries_the_cli_unit_and_docs() {
    let deb = package("edgefleet", "amd64");
    let files = contents(&deb);
    for expected in [
        "/usr/bin/edgefleet",
        "/usr/share/doc/edgefleet/examples/controller.env",
        "/usr/share/bash-completion/completions/edgefleet",
        "/usr/share/man/man1/edgefleet.1.gz",
        "/usr/share/man/man1/edgefleet-serve.1.gz",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} missing from {files:#?}"
        );
    }
    assert!(files
        .iter()
        .any(|f| f.ends_with("/systemd/system/edgefleet-controller.service")));
    // (`edgefleet agents …` has man pages of its own: edgefleet-agents-*.)
    let agent_file = |f: &&String| {
        ["edgefleet-agent.", "edgefleet-agent-", "edgefleet-agent/"]
            .iter()
            .any(|s| f.contains(s))
            || f.ends_with("edgefleet-agent")
    };
    assert!(
        !files.iter().any(|f| agent_file(&f)),
        "the agent's files are not the controller's: {files:#?}"
    );
    assert_eq!(field(&deb, "Architecture"), "amd64");
}

#[test]
fn dpkg_refuses_the_arm64_package_on_this_machine() {
    let host = stdout_ok("dpkg", &["--print-architecture"]);
    assert_eq!(host.trim(), "amd64", "this test expects an amd64 host");
    let out = run(
        "dpkg",
        &[
            "--dry-run",
            "-i",
            package("edgefleet-agent", "arm64").to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("package architecture (arm64) does not match system (amd64)"),
        "{stderr}"
    );
}

#[test]
fn an_unpacked_agent_loads_its_own_onnxruntime_enrolls_and_runs() {
    let root = tempfile::tempdir().unwrap();
    unpack(&package("edgefleet-agent", "amd64"), root.path());
    let agent = root.path().join("usr/bin/edgefleet-agent");

    // `check` finds the library the package installed, not any other.
    let out = Command::new(&agent)
        .arg("check")
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("EDGEFLEET_ONNXRUNTIME")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let library = root
        .path()
        .join("usr/bin/../lib/edgefleet-agent/libonnxruntime.so.1.31.1");
    assert!(
        text.contains(&format!("library       {}", library.display())),
        "{text}"
    );
    assert!(text.contains("onnxruntime   1.31.1"), "{text}");

    // Enroll: the config and certificate appear, the token is not kept.
    let work = tempfile::tempdir().unwrap();
    let ctl = Controller::start(work.path(), "127.0.0.1:0");
    let config = work.path().join("etc/edgefleet/agent.toml");
    let data = work.path().join("var/lib/edgefleet-agent");
    let token = ctl.enroll_token("gateway-1");
    let out = Command::new(&agent)
        .args([
            "enroll",
            "--controller",
            &ctl.address,
            "--enroll-token",
            &token,
        ])
        .args(["--label", "site=store-42", "--no-start", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("enrolled as gateway-1"), "{said}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains(&ctl.address), "{written}");
    assert!(written.contains("site = \"store-42\""), "{written}");
    assert!(
        !written.contains(&token) && !written.contains("efe1."),
        "{written}"
    );
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(data.join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    // Enrolling again is refused (it would make a second agent) and changes nothing.
    let again = Command::new(&agent)
        .args([
            "enroll",
            "--controller",
            &ctl.address,
            "--enroll-token",
            &token,
        ])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already enrolled"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // The daemon as the unit starts it: only the config file.
    let log = work.path().join("daemon.log");
    let empty = work.path().join("no-sensors");
    std::fs::create_dir_all(&empty).unwrap();
    let child = Command::new(&agent)
        .args(["run", "--config"])
        .arg(&config)
        .env("EDGEFLEET_SENSORS_ROOT", &empty)
        .env_remove("ORT_DYLIB_PATH")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Process { child, log };
    ctl.wait_online(&["gateway-1"], Duration::from_secs(60));
    let agents = ctl.agents();
    assert_eq!(agents[0]["labels"]["site"], "store-42", "{agents:#?}");
    assert_eq!(agents[0]["hardware"]["onnxruntime_version"], "1.31.1");
}

#[test]
fn enroll_says_what_is_wrong_in_one_line_with_its_exit_status() {
    let root = tempfile::tempdir().unwrap();
    unpack(&package("edgefleet-agent", "amd64"), root.path());
    let agent = root.path().join("usr/bin/edgefleet-agent");
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("agent.toml");
    let enroll = |controller: &str, token: &str| {
        Command::new(&agent)
            .args(["enroll", "--no-start", "--controller", controller])
            .args(["--enroll-token", token, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(work.path().join("data"))
            .output()
            .unwrap()
    };
    let good_shape = edgefleet_proto::tokens::EnrollmentToken {
        secret: [3; 32],
        ca_sha256: "0".repeat(64),
    }
    .encode();
    // Port 1 is privileged and nothing of ours listens there (a port just closed could be
    // taken by a test beside this one).
    let port = 1;
    for (controller, token, code, says) in [
        ("https://127.0.0.1:7070", "efe1.garbage", 64, "token"),
        (
            "http://127.0.0.1:7070",
            good_shape.as_str(),
            64,
            "plaintext",
        ),
        (
            &format!("https://127.0.0.1:{port}") as &str,
            good_shape.as_str(),
            69,
            "cannot reach",
        ),
    ] {
        let out = enroll(controller, token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{controller}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(!config.exists(), "nothing written for {controller}");
        assert!(
            !work.path().join("data").exists(),
            "no data folder left behind for {controller}"
        );
    }
}

#[test]
fn systemd_verifies_both_units_and_rates_the_agent_at_2_or_lower() {
    let root = tempfile::tempdir().unwrap();
    unpack(&package("edgefleet-agent", "amd64"), root.path());
    unpack(&package("edgefleet", "amd64"), root.path());
    // What verify needs of the rest of a system: the target every service is ordered after.
    let units = root.path().join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("sysinit.target"),
        "[Unit]\nDescription=System Initialization\n",
    )
    .unwrap();
    for unit in ["edgefleet-agent.service", "edgefleet-controller.service"] {
        let path = ["lib/systemd/system", "usr/lib/systemd/system"]
            .iter()
            .map(|dir| root.path().join(dir).join(unit))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{unit} not in the packages"));
        let out = run(
            "systemd-analyze",
            &[
                "verify",
                &format!("--root={}", root.path().display()),
                path.to_str().unwrap(),
            ],
        );
        // verify exits 0 on unknown keys too: anything it says is a failure.
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );

        let out = run(
            "systemd-analyze",
            &["security", "--offline=yes", path.to_str().unwrap()],
        );
        let report = String::from_utf8_lossy(&out.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in {report}"));
        if unit == "edgefleet-agent.service" {
            assert!(score <= 2.0, "{unit} exposure {score}:\n{report}");
        } else {
            assert!(score <= 3.0, "{unit} exposure {score}:\n{report}");
        }
    }
}

/// The maintainer scripts of every package, as dpkg gets them, are shell that parses (a comment
/// naming cargo-deb's marker once became code with an open quote, and dpkg stopped half-way).
#[test]
fn every_maintainer_script_parses_as_shell() {
    for (name, arch) in [
        ("edgefleet-agent", "amd64"),
        ("edgefleet-agent", "arm64"),
        ("edgefleet", "amd64"),
    ] {
        let control = tempfile::tempdir().unwrap();
        let deb = package(name, arch);
        stdout_ok(
            "dpkg-deb",
            &[
                "-e",
                deb.to_str().unwrap(),
                control.path().to_str().unwrap(),
            ],
        );
        let mut checked = 0;
        for script in ["preinst", "postinst", "prerm", "postrm"] {
            let path = control.path().join(script);
            if !path.exists() {
                continue;
            }
            let out = run("sh", &["-n", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{name} {arch} {script} does not parse: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&path).unwrap()
            );
            checked += 1;
        }
        assert!(checked >= 2, "{name} {arch}: postinst and postrm at least");
    }
}

/// A package's version again, one Debian revision later: the same files, as a rebuilt release
/// reaches a device (`apt-get install` of it is an upgrade).
fn next_revision(deb: &Path, out: &Path) -> PathBuf {
    let tree = out.join("tree");
    stdout_ok(
        "dpkg-deb",
        &["-R", deb.to_str().unwrap(), tree.to_str().unwrap()],
    );
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let old = format!("Version: {VERSION}-1");
    assert!(text.contains(&old), "{text}");
    std::fs::write(
        &control,
        text.replace(&old, &format!("Version: {VERSION}-2")),
    )
    .unwrap();
    let next = out.join("next.deb");
    stdout_ok(
        "dpkg-deb",
        &[
            "-Zgzip",
            "-b",
            tree.to_str().unwrap(),
            next.to_str().unwrap(),
        ],
    );
    next
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid())
}

fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    ))
}

/// The uid a process runs as (from /proc).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .expect("a Uid line")
}

/// The RAPL counter of an x86 gateway, root-only (0400) as Linux 5.10 on makes it, in a fixture
/// tree: the agent as its own user cannot read it and `check` says so; the package's udev rule,
/// carried out as udev would for that zone, lets the agent's group read it, and `check` then
/// names RAPL as the energy source.
fn rapl_becomes_readable_to_the_agent_by_the_packaged_udev_rule(root: &DebianRoot) {
    use std::os::unix::fs::PermissionsExt;
    let rule = std::fs::read_to_string(
        root.file("/usr/lib/udev/rules.d/60-edgefleet-agent-powercap.rules"),
    )
    .expect("the package carries its powercap udev rule");
    let rule = rule
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a rule line");
    for condition in [
        "SUBSYSTEM==\"powercap\"",
        "ACTION==\"add|change\"",
        "TEST==\"energy_uj\"",
    ] {
        assert!(rule.contains(condition), "{condition} in {rule}");
    }
    let zone = "/srv/sensors/sys/class/powercap/intel-rapl:0";
    std::fs::create_dir_all(root.file(zone)).unwrap();
    for (file, value) in [
        ("name", "package-0\n"),
        ("energy_uj", "123456789\n"),
        ("max_energy_range_uj", "262143328850\n"),
    ] {
        let path = root.file(&format!("{zone}/{file}"));
        std::fs::write(&path, value).unwrap();
        let mode = if file == "name" { 0o444 } else { 0o400 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let check = || {
        let out = root.run_as(
            "edgefleet-agent",
            &["/usr/bin/edgefleet-agent", "check"],
            &[
                ("EDGEFLEET_SENSORS_ROOT", "/srv/sensors"),
                ("ORT_DISABLE_TELEMETRY", "1"),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .find(|l| l.starts_with("energy"))
            .unwrap_or_else(|| panic!("no energy line in {text}"))
            .to_string()
    };
    let before = check();
    assert!(
        before.contains("none readable") && before.contains("intel-rapl:0/energy_uj"),
        "{before}"
    );
    // What udev runs for the zone: each RUN+= command, %p being the zone's path under /sys.
    let mut commands = 0;
    for run in rule.split("RUN+=\"").skip(1) {
        let command = run.split('"').next().unwrap().replace("/sys%p", zone);
        let args: Vec<&str> = command.split_whitespace().collect();
        root.run_ok(&args);
        commands += 1;
    }
    assert_eq!(commands, 2, "chgrp and chmod: {rule}");
    let after = check();
    assert!(
        after.contains("rapl (") && after.contains("intel-rapl:0"),
        "{after}"
    );
}

/// The agent package's whole life on a Debian 12 machine: `apt-get install` runs its scripts
/// (user, data folder 0700, unit enabled); `edgefleet-agent enroll`; the daemon as the unit
/// runs it (the package's user, the packaged ONNX Runtime); a model installed and a result left
/// unsent while the controller is down; an upgrade keeps identity, model and result, and the
/// result arrives after it; `remove` keeps the data, `purge` deletes it.
#[test]
fn the_agent_package_installs_enrolls_runs_upgrades_and_purges_in_a_debian_root() {
    let root = DebianRoot::copy_of_base();
    let deb = package("edgefleet-agent", "amd64");
    root.install(&deb);

    // What postinst did.
    let uid = root
        .uid("edgefleet-agent")
        .expect("postinst creates the edgefleet-agent user");
    assert_eq!(
        mode_and_owner(&root.file("/var/lib/edgefleet-agent")),
        (0o700, uid)
    );
    assert!(root.file("/etc/edgefleet").is_dir());
    let wants = root.file("/etc/systemd/system/multi-user.target.wants/edgefleet-agent.service");
    assert!(
        wants.symlink_metadata().is_ok(),
        "the unit is enabled: {} missing",
        wants.display()
    );
    let status = root.run_ok(&[
        "dpkg-query",
        "-W",
        "-f=${Status} ${Version}",
        "edgefleet-agent",
    ]);
    assert_eq!(status.trim(), format!("install ok installed {VERSION}-1"));
    rapl_becomes_readable_to_the_agent_by_the_packaged_udev_rule(&root);

    // Enroll as the README says, as root; no systemd runs here, so it says how to start.
    let work = tempfile::tempdir().unwrap();
    let mut ctl = Controller::start(work.path(), "127.0.0.1:0");
    let listen = ctl.listen.clone();
    let token = ctl.enroll_token("gateway-1");
    let said = root.run_ok(&[
        "edgefleet-agent",
        "enroll",
        "--controller",
        &ctl.address,
        "--enroll-token",
        &token,
        "--label",
        "site=store-42",
    ]);
    assert!(said.contains("enrolled as gateway-1"), "{said}");
    let config = root.file("/etc/edgefleet/agent.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(!written.contains(&token), "{written}");
    assert_eq!(
        mode_and_owner(&root.file("/var/lib/edgefleet-agent/agent.key")),
        (0o600, uid)
    );

    // The daemon as the unit starts it: its user, its config, nothing else.
    std::fs::create_dir_all(root.file("/srv/no-sensors")).unwrap();
    let start_daemon = |log: &str| {
        root.spawn_as(
            "edgefleet-agent",
            &[
                "/usr/bin/edgefleet-agent",
                "run",
                "--config",
                "/etc/edgefleet/agent.toml",
            ],
            &[
                ("ORT_DISABLE_TELEMETRY", "1"),
                ("EDGEFLEET_LOG", "info"),
                ("NO_COLOR", "1"),
                ("EDGEFLEET_SENSORS_ROOT", "/srv/no-sensors"),
            ],
            &work.path().join(log),
        )
    };
    let mut daemon = start_daemon("daemon-1.log");
    ctl.wait_online(&["gateway-1"], Duration::from_secs(120));
    assert_eq!(uid_of(daemon.child.id()), uid, "runs as edgefleet-agent");
    let agent = ctl.agents().remove(0);
    assert_eq!(
        agent["hardware"]["onnxruntime_version"], "1.31.1",
        "{agent:#?}"
    );
    assert_eq!(agent["labels"]["site"], "store-42", "{agent:#?}");

    // A model rolled out to it.
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    let rollout = ctl.cli_ok(&["rollout", "start", "minilm@int8"]);
    let rollout = rollout.trim();
    wait_until(
        &format!("rollout {rollout} to succeed"),
        Duration::from_secs(180),
        || {
            let state = ctl.rollout(rollout)["state"]
                .as_str()
                .unwrap_or("")
                .to_string();
            assert!(
                state == "running" || state == "succeeded",
                "rollout {rollout}: {state}: {}",
                daemon.log_text()
            );
            state == "succeeded"
        },
    );
    let active = root.file("/var/lib/edgefleet-agent/models/minilm/active");
    let model = ctl.model("minilm@int8");
    let model_file = active.join(
        model["files"][0]["file_name"]
            .as_str()
            .expect("a file name"),
    );
    let model_sha = sha256_of(&model_file);

    // A result left unsent: the controller dies while the job runs.
    let suite = work.path().join("long.toml");
    std::fs::write(
        &suite,
        "name = \"long\"\nmodels = [\"minilm@int8\"]\n[input]\ntext = [\"The pump stopped.\"]\n\
         [conditions]\nidle_power_s = 0\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1]\n\
         min_queries = 20\nmin_duration_s = 4\n",
    )
    .unwrap();
    let run_id = ctl.cli_ok(&["bench", "run", suite.to_str().unwrap()]);
    let run_id = run_id.trim().to_string();
    daemon.wait_for_log("job started", Duration::from_secs(120));
    drop(ctl);
    daemon.wait_for_log("job finished", Duration::from_secs(120));
    let unsent = || unsent_results(&root.file("/var/lib/edgefleet-agent"));
    wait_until(
        "the finished job's result kept unsent",
        Duration::from_secs(60),
        || unsent() == 1,
    );
    assert!(
        daemon.terminate(Duration::from_secs(30)).is_some(),
        "the daemon stops on SIGTERM"
    );
    let identity: Vec<(PathBuf, String)> = ["agent.key", "agent.pem", "ca.pem", "identity.json"]
        .iter()
        .map(|f| root.file(&format!("/var/lib/edgefleet-agent/{f}")))
        .filter(|p| p.exists())
        .map(|p| {
            let sha = sha256_of(&p);
            (p, sha)
        })
        .collect();
    assert_eq!(identity.len(), 4, "identity files: {identity:?}");

    // The upgrade, as apt does it: the old package's scripts, then the new one's.
    let upgrade_dir = tempfile::tempdir().unwrap();
    root.install(&next_revision(&deb, upgrade_dir.path()));
    let status = root.run_ok(&["dpkg-query", "-W", "-f=${Version}", "edgefleet-agent"]);
    assert_eq!(status.trim(), format!("{VERSION}-2"));
    for (path, sha) in &identity {
        assert_eq!(
            &sha256_of(path),
            sha,
            "{} kept across the upgrade",
            path.display()
        );
    }
    assert_eq!(sha256_of(&model_file), model_sha, "the active model kept");
    assert_eq!(unsent(), 1, "the unsent result kept");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written);

    // Back: the same agent, and the result the controller missed arrives.
    ctl = Controller::start(work.path(), &listen);
    let _daemon = start_daemon("daemon-2.log");
    ctl.wait_online(&["gateway-1"], Duration::from_secs(120));
    let agents = ctl.agents();
    assert_eq!(
        agents.len(),
        1,
        "the same identity, not a second agent: {agents:#?}"
    );
    assert_eq!(agents[0]["id"], agent["id"]);
    let report = work.path().join("report");
    wait_until(
        &format!("the result of run {run_id} kept across the upgrade to arrive"),
        Duration::from_secs(120),
        || ctl.records(&report, Some(&run_id)).len() == 1,
    );
    drop(_daemon);

    // remove keeps identity, model and config; purge deletes them and the unit's enablement.
    root.run_ok(&["apt-get", "remove", "-y", "edgefleet-agent"]);
    assert!(!root.file("/usr/bin/edgefleet-agent").exists());
    assert!(root.file("/var/lib/edgefleet-agent/agent.key").exists());
    assert!(model_file.exists());
    assert!(config.exists());
    root.run_ok(&["dpkg", "--purge", "edgefleet-agent"]);
    assert!(!root.file("/var/lib/edgefleet-agent").exists());
    assert!(!config.exists());
    assert!(
        wants.symlink_metadata().is_err(),
        "{} left after purge",
        wants.display()
    );
}

/// The controller package the same way: its user, a data folder only it can read, the unit
/// enabled, `serve` as its user writing a database no one else can read, and remove/purge.
#[test]
fn the_controller_package_installs_serves_as_its_user_and_purges_in_a_debian_root() {
    use std::os::unix::fs::PermissionsExt;
    let root = DebianRoot::copy_of_base();
    root.install(&package("edgefleet", "amd64"));
    let uid = root
        .uid("edgefleet")
        .expect("postinst creates the edgefleet user");
    let data = root.file("/var/lib/edgefleet");
    assert_eq!(mode_and_owner(&data), (0o700, uid));
    let wants =
        root.file("/etc/systemd/system/multi-user.target.wants/edgefleet-controller.service");
    assert!(wants.symlink_metadata().is_ok(), "the unit is enabled");

    let work = tempfile::tempdir().unwrap();
    let serve = root.spawn_as(
        "edgefleet",
        &[
            "/usr/bin/edgefleet",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/var/lib/edgefleet",
        ],
        &[("EDGEFLEET_LOG", "info")],
        &work.path().join("serve.log"),
    );
    let ctl = Controller::attach(serve, &data, None);
    assert_eq!(
        uid_of(ctl.process.child.id()),
        uid,
        "serve runs as edgefleet"
    );
    let token = ctl.enroll_token("gateway-9");
    assert!(token.starts_with("efe1."), "{token}");
    assert_eq!(mode_and_owner(&data), (0o700, uid));
    for file in ["controller.db", "controller.db-wal", "credentials.json"] {
        let path = data.join(file);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{file} is {:o}: only its owner reads it",
            mode & 0o777
        );
    }
    drop(ctl);

    root.run_ok(&["apt-get", "remove", "-y", "edgefleet"]);
    assert!(
        data.join("controller.db").exists(),
        "remove keeps the store"
    );
    root.run_ok(&["dpkg", "--purge", "edgefleet"]);
    assert!(!data.exists(), "purge deletes the store");
}
