//! End-to-end on real full and read-only disks: small tmpfs mounts (the test needs root, as CI
//! has; it fails, not skips, without it). A controller whose disk fills during `models add`, and
//! an agent whose disk fills during an install (its free-space reserve turned off so that the
//! write itself hits ENOSPC), fail with the reason and change nothing; a controller whose
//! database cannot be written refuses to start in one line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use edgefleet_e2e::{cached, start_agent_with, Controller};

/// A tmpfs of `megabytes` at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u32) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().unwrap().stdout;
        assert_eq!(
            String::from_utf8_lossy(&uid).trim(),
            "0",
            "this test mounts small tmpfs disks and needs root (CI runs as root)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn remount_read_only(&self) {
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_controller_disk_that_fills_during_models_add_fails_it_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the controller's state and the tiny model, not for MiniLM fp32 (90 MB).
    let _disk = Tmpfs::mount(&dir.path().join("controller"), 40);
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    ctl.add_cached_model("models/tiny/add.onnx", "add", "1");
    let artifacts_before = files_under(&ctl.data_dir.join("artifacts"));
    let model = cached("models/minilm-l6/model.fp32.onnx");
    let out = ctl.cli(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "minilm",
        "--version",
        "fp32",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("No space left on device"),
        "the reason: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let models: Vec<serde_json::Value> =
        serde_json::from_str(&ctl.cli_ok(&["models", "ls", "--json"])).unwrap();
    assert_eq!(models.len(), 1, "only the model added before: {models:#?}");
    assert_eq!(
        files_under(&ctl.data_dir.join("artifacts")),
        artifacts_before,
        "no partial upload left behind"
    );
}

#[test]
fn an_agent_disk_that_fills_during_an_install_fails_it_and_the_active_version_stays() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let agent_dir = dir.path().join("agents/edge-full");
    let disk = Tmpfs::mount(&agent_dir, 150);
    let sensors = dir.path().join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    // Slow enough to fill the disk behind the transfer's back; no free-space reserve, so that
    // the install starts with room for the model and nothing more.
    let flags = ["--download-limit", "15", "--min-free-disk-mb", "0"];
    let mut agent = start_agent_with(dir.path(), &ctl, "edge-full", &[], &sensors, &flags);
    ctl.wait_online(&["edge-full"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm", "int8");
    ctl.add_cached_model("models/minilm-l6/model.fp32.onnx", "minilm", "fp32");
    let first = ctl.cli(&["rollout", "start", "minilm@int8", "--watch"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // The install's free-space check passes (90 MB needed, about 120 MB free); then something
    // else on the device fills the disk while the model arrives.
    let id = ctl
        .cli_ok(&["rollout", "start", "minilm@fp32"])
        .trim()
        .to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while ctl.rollout(&id)["targets"][0]["served_bytes"]
        .as_u64()
        .unwrap_or(0)
        < 10_000_000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the transfer never started: {:#}",
            ctl.rollout(&id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let filler = disk.0.join("filler");
    let _ = Command::new("fallocate")
        .args(["-l", "200M"])
        .arg(&filler)
        .status();
    if !filler.exists() || std::fs::metadata(&filler).unwrap().len() == 0 {
        // fallocate past the size fails as a whole: fill it by writing instead.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M", "count=200"])
            .arg(format!("of={}", filler.display()))
            .output();
    }
    let out = ctl.cli(&["rollout", "status", &id, "--watch"]);
    assert!(!out.status.success(), "the install must fail");
    let error = ctl.rollout(&id)["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("No space left on device"), "{error}");
    let placements = ctl.model("minilm@int8")["placements"].clone();
    assert_eq!(placements[0]["role"], "active", "{placements:#}");
    // Nothing half-installed: no fp32 version folder, no staging folder, no partial download.
    let leftovers: Vec<_> = files_under(&agent_dir)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains("/fp32") || s.contains(".staging") || s.ends_with(".partial")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:#?}");
    assert!(agent.is_running(), "the agent stays up");
}

#[test]
fn a_controller_whose_database_cannot_be_written_refuses_to_start_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("controller");
    let disk = Tmpfs::mount(&data, 20);
    drop(Controller::start(dir.path(), "127.0.0.1:0"));
    disk.remount_read_only();
    let out = Command::new(edgefleet_e2e::binary("edgefleet"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("edgefleet: ") && last.contains(&data.display().to_string()),
        "names the data folder: {stderr}"
    );
    assert!(
        last.to_lowercase().contains("read-only") || last.contains("readonly"),
        "says why: {stderr}"
    );
}
