//! Distribution benchmark: one ~110 MB model (SmolLM2-135M q4 from the set-up cache) rolled out
//! to 20 real agent processes on loopback, against the same bytes fetched by 20 concurrent
//! `curl` clients from Python's static HTTP server, in the same run, alternating twice.
//! Prints each aggregate throughput and the ratio ours / peer (goal ≥ 1.0).
//!
//! Ours is "fetched, verified and durable": from the first agent's first request to the last
//! agent's sha256 check and fsync, as the agents report it. The plain peer's is from starting the
//! curls to the last one's exit, with no verification. A second peer does the same work as ours:
//! each curl is followed by a sha256 check of the file it wrote (Python's hashlib, which uses
//! OpenSSL's SHA-NI code like our sha2 crate does) and an fsync.
//!
//! A third figure is what TLS costs: the same rollout from a plaintext (`--insecure`) controller
//! in the same run, alternating with the TLS one; the ratio TLS / plaintext has a goal of ≥ 0.85.
//!
//! With `--object-store`, the model is in an S3 server instead (`s3s-fs`, which checks
//! signatures, from scripts/setup_packaging.sh) and two controllers share it: one hands agents
//! presigned URLs to fetch from it directly, one sends the bytes itself (`--artifact-delivery
//! proxy`), alternating twice. Prints each throughput, the bytes that left each controller, and
//! the ratio presigned / proxy (goal ≥ 1.0, controller egress ≈ 0).
//!
//! Run: `cargo run --release -p edgefleet-e2e --example distribution [-- --object-store]` (after
//! scripts/setup.sh and `cargo build --release --bins`).

use std::path::Path;

use sha2::Digest;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgefleet_e2e::{cached, start_agent_with, Controller, Process};

/// Agents and curl clients (20, or EDGEFLEET_DIST_AGENTS).
fn client_count() -> usize {
    std::env::var("EDGEFLEET_DIST_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn main() {
    if std::env::args().any(|a| a == "--object-store") {
        return object_store();
    }
    let model = cached("models/smollm2-135m/model.q4.onnx");
    let size = std::fs::metadata(&model).unwrap().len();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!(
        "artifact: {} ({:.1} MB), {} agents, loopback",
        model.display(),
        size as f64 / 1e6,
        client_count()
    );

    let tls_dir = dir.join("tls");
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&tls_dir).unwrap();
    std::fs::create_dir_all(&plain_dir).unwrap();
    let ctl = Controller::start(&tls_dir, "127.0.0.1:0");
    let plain = Controller::start_insecure(&plain_dir, "distribution", "127.0.0.1:0");
    for controller in [&ctl, &plain] {
        add_model(controller, &model);
        for entry in std::fs::read_dir(controller.data_dir.join("artifacts"))
            .unwrap()
            .flatten()
        {
            let _ = std::fs::read(entry.path());
        }
    }
    // Warm the page cache for every copy alike.
    let _ = std::fs::read(&model);

    let peer = PeerServer::start(dir, &model);
    let mut ours = Vec::new();
    let mut ours_plain = Vec::new();
    let mut theirs = Vec::new();
    let mut theirs_verified = Vec::new();
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&model).unwrap()));
    for round in 1..=2 {
        theirs.push(peer.fetch_all(dir, round, size, None));
        theirs_verified.push(peer.fetch_all(dir, round, size, Some(&digest)));
        ours_plain.push(served_round(&plain, &plain_dir, round, size));
        ours.push(served_round(&ctl, &tls_dir, round, size));
        println!(
            "round {round}: edgefleet {:.0} MB/s (plaintext {:.0} MB/s), python http.server + curl {:.0} MB/s, \
             + sha256 check and fsync {:.0} MB/s",
            ours.last().unwrap() / 1e6,
            ours_plain.last().unwrap() / 1e6,
            theirs.last().unwrap() / 1e6,
            theirs_verified.last().unwrap() / 1e6
        );
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "aggregate throughput, best of 2: edgefleet {:.0} MB/s vs peer {:.0} MB/s: ratio {:.2} (goal >= 1.00)",
        best(&ours) / 1e6,
        best(&theirs) / 1e6,
        best(&ours) / best(&theirs)
    );
    println!(
        "TLS vs plaintext, best of 2: {:.0} vs {:.0} MB/s: ratio {:.2} (goal >= 0.85)",
        best(&ours) / 1e6,
        best(&ours_plain) / 1e6,
        best(&ours) / best(&ours_plain)
    );
    println!(
        "same work (fetch + sha256 check + fsync): edgefleet {:.0} MB/s vs peer {:.0} MB/s: ratio {:.2}",
        best(&ours) / 1e6,
        best(&theirs_verified) / 1e6,
        best(&ours) / best(&theirs_verified)
    );
}

/// Checks a file's sha256 (1 MiB reads) and fsyncs it: argv[1] file, argv[2] expected digest.
const VERIFY_PY: &str = "import hashlib, os, sys
h = hashlib.sha256()
with open(sys.argv[1], 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
        h.update(block)
    os.fsync(f.fileno())
sys.exit(h.hexdigest() != sys.argv[2])";

/// Presigned delivery from an S3 server against delivery through the controller.
fn object_store() {
    let model = cached("models/smollm2-135m/model.q4.onnx");
    let size = std::fs::metadata(&model).unwrap().len();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    println!(
        "artifact: {} ({:.1} MB), {} agents, loopback, s3s-fs",
        model.display(),
        size as f64 / 1e6,
        client_count()
    );
    let s3 = edgefleet_test_s3::S3Server::start();
    let start = |name: &str, delivery: &str| {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let mut flags = s3.serve_flags(name);
        flags.extend(["--artifact-delivery".to_string(), delivery.to_string()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let ctl = Controller::start_with_env(&home, "127.0.0.1:0", &flags, &s3.env());
        add_model(&ctl, &model);
        (ctl, home)
    };
    let (presigned, presigned_dir) = start("presigned", "presigned");
    let (proxy, proxy_dir) = start("proxy", "proxy");
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for round in 1..=2 {
        let (rate, egress) = rollout_round(&presigned, &presigned_dir, round, size);
        direct.push(rate);
        let direct_egress = egress;
        let (rate, egress) = rollout_round(&proxy, &proxy_dir, round, size);
        through.push(rate);
        assert_eq!(
            egress,
            size * client_count() as u64,
            "proxy: every byte through the controller"
        );
        println!(
            "round {round}: presigned {:.0} MB/s ({:.1} MB left the controller), proxy {:.0} MB/s ({:.1} MB left the controller)",
            direct.last().unwrap() / 1e6,
            direct_egress as f64 / 1e6,
            through.last().unwrap() / 1e6,
            egress as f64 / 1e6,
        );
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    println!(
        "aggregate throughput, best of 2: presigned {:.0} MB/s vs proxy {:.0} MB/s: ratio {:.2} (goal >= 1.00)",
        best(&direct) / 1e6,
        best(&through) / 1e6,
        best(&direct) / best(&through)
    );
}

/// Registers the model as dist@1.
fn add_model(ctl: &Controller, model: &Path) {
    ctl.cli_ok(&[
        "models",
        "add",
        model.to_str().unwrap(),
        "--name",
        "dist",
        "--version",
        "1",
        "--quant",
        "q4",
    ]);
}

/// A rollout round whose every byte the controller sends itself: bytes/s.
fn served_round(ctl: &Controller, dir: &Path, round: usize, size: u64) -> f64 {
    let (rate, served) = rollout_round(ctl, dir, round, size);
    assert_eq!(
        served,
        size * client_count() as u64,
        "no byte was sent twice"
    );
    rate
}

/// Starts client_count() fresh agents, rolls the model out to them, and returns bytes/s and the
/// bytes the controller sent itself.
fn rollout_round(ctl: &Controller, dir: &Path, round: usize, size: u64) -> (f64, u64) {
    let sensors = dir.join("no-sensors");
    std::fs::create_dir_all(&sensors).unwrap();
    let round_dir = dir.join(format!("round{round}"));
    std::fs::create_dir_all(&round_dir).unwrap();
    let label = format!("round={round}");
    let names: Vec<String> = (0..client_count())
        .map(|i| format!("r{round}-agent-{i:02}"))
        .collect();
    let processes: Vec<Process> = names
        .iter()
        .map(|n| start_agent_with(&round_dir, ctl, n, &[&label], &sensors, &[]))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    ctl.wait_online(&refs, Duration::from_secs(120));
    let out = ctl.cli(&[
        "rollout", "start", "dist@1", "--select", &label, "--health", "none", "--watch",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .find(|w| w.starts_with("ro-"))
        .expect("rollout id")
        .to_string();
    let status = ctl.rollout(&id);
    let targets = status["targets"].as_array().unwrap();
    assert_eq!(targets.len(), client_count());
    let start = targets
        .iter()
        .map(|t| t["fetch_started_unix_ms"].as_i64().unwrap())
        .min()
        .unwrap();
    let end = targets
        .iter()
        .map(|t| t["fetch_finished_unix_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    let bytes: u64 = targets
        .iter()
        .map(|t| t["fetched_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(
        bytes,
        size * client_count() as u64,
        "every agent fetched every byte"
    );
    let served: u64 = targets
        .iter()
        .map(|t| t["served_bytes"].as_u64().unwrap())
        .sum();
    drop(processes);
    (
        bytes as f64 / ((end - start).max(1) as f64 / 1000.0),
        served,
    )
}

/// `python3 -m http.server` serving the model's folder.
struct PeerServer {
    process: Process,
    url: String,
}

impl PeerServer {
    fn start(dir: &Path, model: &Path) -> PeerServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("http-server.log");
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(model.parent().unwrap())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 starts");
        let url = format!(
            "http://127.0.0.1:{port}/{}",
            model.file_name().unwrap().to_str().unwrap()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PeerServer {
            process: Process { child, log },
            url,
        }
    }

    /// client_count() concurrent curls to files, each followed by a sha256 check and fsync when
    /// `verify` gives the digest; returns bytes/s.
    fn fetch_all(&self, dir: &Path, round: usize, size: u64, verify: Option<&str>) -> f64 {
        let out = dir.join(format!("curl{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let started = Instant::now();
        let children: Vec<_> = (0..client_count())
            .map(|i| {
                let file = out.join(format!("{i}.onnx"));
                let mut command = Command::new("sh");
                command
                    .arg("-c")
                    .arg(match verify {
                        None => r#"exec curl -sS --fail -o "$1" "$2""#,
                        Some(_) => {
                            r#"curl -sS --fail -o "$1" "$2" && exec python3 -c "$3" "$1" "$4""#
                        }
                    })
                    .arg("fetch")
                    .arg(&file)
                    .arg(&self.url)
                    .arg(VERIFY_PY)
                    .arg(verify.unwrap_or(""));
                command.spawn().expect("sh starts curl (install curl)")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "a curl (or its check) failed");
        }
        let elapsed = started.elapsed().as_secs_f64();
        for i in 0..client_count() {
            let got = std::fs::metadata(out.join(format!("{i}.onnx")))
                .unwrap()
                .len();
            assert_eq!(got, size, "curl {i} fetched the whole file");
        }
        let _ = std::fs::remove_dir_all(&out);
        let _ = &self.process;
        (size * client_count() as u64) as f64 / elapsed
    }
}
