//! The Debian packages as a device and an operator meet them: `scripts/package.sh` makes all
//! three (from the debug builds `scripts/test.sh` already made, with quick compression); their
//! contents and control data are checked; the amd64 agent package is unpacked into a throwaway
//! root, where its `check` loads the package's own ONNX Runtime, `enroll` takes it from nothing
//! to enrolled against a real controller and the daemon then runs from the written config; dpkg
//! refuses the arm64 package on this amd64 machine; and systemd-analyze verifies both units and
//! rates the agent's exposure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use edgefleet_e2e::{repo_root, Controller, Process};

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
    // Nothing listens on a port just closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
