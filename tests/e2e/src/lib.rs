//! Test support for the end-to-end tests: starts the real `edgefleet` controller and
//! `edgefleet-agent` processes on loopback, runs CLI commands, and cleans up on drop.

pub mod bare_link;
pub mod browser;
pub mod console_probe;
pub mod debian_root;
pub mod fake_clock;
pub mod fault_proxy;
pub mod haproxy;
pub mod http_proxy;
pub mod kill_trials;
pub mod metrics;
pub mod netns;
pub mod replicas;
pub mod sim;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The set-up cache (`EDGEFLEET_CACHE` or `.cache/edgefleet`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("EDGEFLEET_CACHE")
        .map_or_else(|| repo_root().join(".cache/edgefleet"), PathBuf::from)
}

/// A file the set-up step must have produced; panics with what to do when it is missing.
pub fn cached(relative: &str) -> PathBuf {
    let path = cache_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (the test command does) before the end-to-end tests",
        path.display()
    );
    path
}

pub fn onnxruntime_library() -> PathBuf {
    cached("lib/libonnxruntime.so.1.31.1")
}

/// A binary of this workspace, built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// `serve` flags that lift the caps on unauthenticated connections for a simulated fleet: its
/// thousands of agents all dial from one loopback address, where a real fleet has many.
pub const SIMULATED_FLEET_LIMITS: [&str; 4] = [
    "--max-unauthenticated",
    "100000",
    "--max-unauthenticated-per-source",
    "100000",
];

/// Polls `check` every 200 ms until it holds; panics naming `what` it waited for when `timeout`
/// passes first. Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "waited {timeout:?} for {what}; it did not happen"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How many finished results an agent keeps on disk not yet sent (`DATA/outbox/*.unsent`).
pub fn unsent_results(agent_data_dir: &Path) -> usize {
    std::fs::read_dir(agent_data_dir.join("outbox"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "unsent"))
                .count()
        })
        .unwrap_or(0)
}

/// A process that is killed when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`, or panics with the log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "`{needle}` did not appear in {} within {timeout:?}:\n{}",
            self.log.display(),
            self.log_text()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, and the exit status within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The terminal width the CLI runs in, in the tests: tables must fit it.
pub const TERMINAL_COLUMNS: usize = 100;

/// Asserts that no line of `text` is wider than [`TERMINAL_COLUMNS`].
pub fn assert_fits_terminal(what: &str, text: &str) {
    for line in text.lines() {
        assert!(
            line.chars().count() <= TERMINAL_COLUMNS,
            "`{what}` has a line of {} columns, over {TERMINAL_COLUMNS}:\n{line}\n\nall of it:\n{text}",
            line.chars().count()
        );
    }
}

/// Where a test's controller keeps the fleet's state (and its artifacts).
pub enum StateIn {
    /// SQLite in its data directory (`serve`'s default), artifacts beside it.
    Sqlite,
    /// A database of its own in this test process's PostgreSQL cluster (its URL), artifacts in
    /// the data directory.
    Postgres(String),
    /// The artifacts in an S3 server of the test's own, fetched by the agents with presigned
    /// URLs; the state in PostgreSQL (a database URL) or SQLite (`None`).
    WithS3 {
        database: Option<String>,
        s3: edgefleet_test_s3::S3Server,
        flags: Vec<String>,
    },
}

impl StateIn {
    /// A new, empty database in this test process's PostgreSQL cluster.
    pub fn postgres() -> StateIn {
        StateIn::Postgres(edgefleet_test_postgres::cluster().database("e2e"))
    }

    /// A new, empty database, and a new S3 server for the artifacts.
    pub fn postgres_and_s3() -> StateIn {
        StateIn::with_s3(Some(edgefleet_test_postgres::cluster().database("e2e")))
    }

    /// SQLite, and a new S3 server for the artifacts.
    pub fn sqlite_and_s3() -> StateIn {
        StateIn::with_s3(None)
    }

    fn with_s3(database: Option<String>) -> StateIn {
        let s3 = edgefleet_test_s3::S3Server::start();
        let mut flags = Vec::new();
        if let Some(url) = &database {
            flags.extend(["--database".to_string(), url.clone()]);
        }
        flags.extend(s3.serve_flags("fleet"));
        StateIn::WithS3 {
            database,
            s3,
            flags,
        }
    }

    /// The `serve` flags that say so.
    pub fn flags(&self) -> Vec<&str> {
        match self {
            StateIn::Sqlite => Vec::new(),
            StateIn::Postgres(url) => vec!["--database", url],
            StateIn::WithS3 { flags, .. } => flags.iter().map(String::as_str).collect(),
        }
    }

    /// The environment `serve` needs besides (the object store's credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            StateIn::WithS3 { s3, .. } => s3.env(),
            _ => Vec::new(),
        }
    }

    /// The S3 server, when the artifacts are in one.
    pub fn s3(&mut self) -> Option<&mut edgefleet_test_s3::S3Server> {
        match self {
            StateIn::WithS3 { s3, .. } => Some(s3),
            _ => None,
        }
    }
}

/// A controller process with its own data directory.
pub struct Controller {
    pub process: Process,
    /// `https://127.0.0.1:PORT` (or `http://` for an `--insecure` one).
    pub address: String,
    /// `127.0.0.1:PORT`, to start another controller on the same address.
    pub listen: String,
    pub data_dir: PathBuf,
    /// The file `serve` wrote: the address, the CA and an operator token.
    pub credentials: PathBuf,
    /// The shared token of an `--insecure` controller.
    pub insecure_token: Option<String>,
}

impl Controller {
    /// Starts `edgefleet serve` with TLS on `listen` (use `127.0.0.1:0` for a free port).
    pub fn start(dir: &Path, listen: &str) -> Controller {
        Controller::spawn(dir, listen, None, 1, &[])
    }

    /// Starts `edgefleet serve` with TLS and agent heartbeats every `heartbeat_s` seconds (the
    /// other starts use 1 s, to keep tests short; `serve`'s own default is 5 s).
    pub fn start_with_heartbeat(
        dir: &Path,
        listen: &str,
        heartbeat_s: u64,
        extra: &[&str],
    ) -> Controller {
        Controller::spawn(dir, listen, None, heartbeat_s, extra)
    }

    /// Starts `edgefleet serve` with extra flags (e.g. `--agent-cert-lifetime-s 6`).
    pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> Controller {
        Controller::spawn(dir, listen, None, 1, extra)
    }

    /// Starts `edgefleet serve` with TLS, its state where `state` says, and extra flags.
    pub fn start_in(dir: &Path, listen: &str, state: &StateIn, extra: &[&str]) -> Controller {
        let mut flags = state.flags();
        flags.extend_from_slice(extra);
        Controller::spawn_with(dir, listen, None, 1, &flags, None, &state.env())
    }

    /// The same with agent heartbeats every `heartbeat_s` seconds.
    pub fn start_in_beating(
        dir: &Path,
        listen: &str,
        state: &StateIn,
        heartbeat_s: u64,
        extra: &[&str],
    ) -> Controller {
        let mut flags = state.flags();
        flags.extend_from_slice(extra);
        Controller::spawn_with(dir, listen, None, heartbeat_s, &flags, None, &state.env())
    }

    /// Starts `edgefleet serve` with TLS, extra flags and more environment (an object store's
    /// credentials).
    pub fn start_with_env(
        dir: &Path,
        listen: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Controller {
        Controller::spawn_with(dir, listen, None, 1, extra, None, env)
    }

    /// Starts a plaintext `edgefleet serve --insecure --token TOKEN`.
    pub fn start_insecure(dir: &Path, token: &str, listen: &str) -> Controller {
        Controller::spawn(dir, listen, Some(token), 1, &[])
    }

    /// The same, with extra flags.
    pub fn start_insecure_with(
        dir: &Path,
        token: &str,
        listen: &str,
        extra: &[&str],
    ) -> Controller {
        Controller::spawn(dir, listen, Some(token), 1, extra)
    }

    /// Starts `edgefleet serve` with TLS and extra flags, its open-file limit (soft and hard) set
    /// to `open_files`, as a small host or a container would give it.
    pub fn start_with_open_files(
        dir: &Path,
        listen: &str,
        open_files: u64,
        extra: &[&str],
    ) -> Controller {
        Controller::spawn_with(dir, listen, None, 1, extra, Some(open_files), &[])
    }

    fn spawn(
        dir: &Path,
        listen: &str,
        insecure_token: Option<&str>,
        heartbeat_s: u64,
        extra: &[&str],
    ) -> Controller {
        Controller::spawn_with(dir, listen, insecure_token, heartbeat_s, extra, None, &[])
    }

    fn spawn_with(
        dir: &Path,
        listen: &str,
        insecure_token: Option<&str>,
        heartbeat_s: u64,
        extra: &[&str],
        open_files: Option<u64>,
        env: &[(String, String)],
    ) -> Controller {
        let data_dir = dir.join("controller");
        let log = dir.join(format!("controller-{}.log", listen.replace(':', "_")));
        // util-linux's prlimit sets the limit and then becomes `edgefleet` (same process).
        let mut cmd = match open_files {
            Some(limit) => {
                let mut cmd = Command::new("prlimit");
                cmd.arg(format!("--nofile={limit}:{limit}"))
                    .arg("--")
                    .arg(binary("edgefleet"));
                cmd
            }
            None => Command::new(binary("edgefleet")),
        };
        cmd.args([
            "serve",
            "--listen",
            listen,
            "--heartbeat-s",
            &heartbeat_s.to_string(),
            "--data-dir",
        ])
        .arg(&data_dir)
        .args(extra)
        .env("EDGEFLEET_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(token) = insecure_token {
            cmd.args(["--insecure", "--token", token]);
        }
        let child = cmd.spawn().expect("start edgefleet serve");
        Controller::attach(Process { child, log }, &data_dir, insecure_token)
    }

    /// A controller from an `edgefleet serve` already started with its stdout piped (e.g. inside
    /// a Debian root, as the package's user): reads the line that says where it listens.
    /// `data_dir` is where this side finds its files (its `credentials.json`).
    pub fn attach(
        mut process: Process,
        data_dir: &Path,
        insecure_token: Option<&str>,
    ) -> Controller {
        let stdout = process.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("edgefleet controller listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line from the controller: {line:?}\n{}",
                    process.log_text()
                )
            })
            .to_string();
        let scheme = if insecure_token.is_some() {
            "http"
        } else {
            "https"
        };
        // One listening on every interface is dialled on loopback.
        let dial = addr.replace("0.0.0.0:", "127.0.0.1:");
        let ctl = Controller {
            process,
            address: format!("{scheme}://{dial}"),
            listen: addr,
            credentials: data_dir.join("credentials.json"),
            data_dir: data_dir.to_path_buf(),
            insecure_token: insecure_token.map(str::to_string),
        };
        // It prints the line before it accepts (a restart first catches up on unfinished runs):
        // the first command of a test waits until the controller answers.
        wait_until(
            "the controller to answer `edgefleet agents`",
            Duration::from_secs(60),
            || ctl.cli(&["agents", "--json"]).status.success(),
        );
        ctl
    }

    /// Runs `edgefleet ARGS` against this controller with its credentials file, as in a terminal
    /// of [`TERMINAL_COLUMNS`] columns.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(binary("edgefleet"));
        cmd.args(args)
            .env("EDGEFLEET_CONTROLLER", &self.address)
            .env("EDGEFLEET_CREDENTIALS", &self.credentials)
            .env("COLUMNS", TERMINAL_COLUMNS.to_string());
        if self.insecure_token.is_some() {
            cmd.arg("--insecure");
        }
        cmd.output().expect("run edgefleet")
    }

    /// The web console's address (`https://127.0.0.1:PORT`) of a controller started with
    /// `--console-listen`, from its log.
    pub fn console_address(&self) -> String {
        let said = "web console served at ";
        self.process.wait_for_log(said, Duration::from_secs(60));
        let log = self.process.log_text();
        let at = log.find(said).expect("the console's line") + said.len();
        log[at..]
            .split_whitespace()
            .next()
            .expect("an address")
            .trim_end_matches('/')
            .to_string()
    }

    /// The operator token `serve` wrote into its credentials file.
    pub fn operator_token(&self) -> String {
        let text = std::fs::read_to_string(&self.credentials).expect("credentials");
        let value: serde_json::Value = serde_json::from_str(&text).expect("credentials JSON");
        value["token"].as_str().expect("a token").to_string()
    }

    /// A fresh one-time enrollment token for an agent named `name`.
    pub fn enroll_token(&self, name: &str) -> String {
        self.cli_ok(&["agents", "enroll", "--name", name])
            .trim()
            .to_string()
    }

    /// The flags an agent named `name` (data in `agent_dir`) needs to reach this controller: an
    /// enrollment token the first time, nothing more once it holds its certificate.
    pub fn agent_flags(&self, agent_dir: &Path, name: &str) -> Vec<String> {
        let mut flags = vec!["--controller".to_string(), self.address.clone()];
        match &self.insecure_token {
            Some(token) => flags.extend(["--insecure".into(), "--token".into(), token.clone()]),
            None if !agent_dir.join("identity.json").exists() => {
                flags.extend(["--enroll-token".into(), self.enroll_token(name)])
            }
            None => {}
        }
        flags
    }

    /// Runs `edgefleet ARGS`, asserts success, returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "edgefleet {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `edgefleet models add` of a cached model (path under the set-up cache) with the MiniLM
    /// tokenizer as its companion.
    pub fn add_cached_model(&self, model: &str, name: &str, version: &str) {
        let model = cached(model);
        let tokenizer = cached("models/minilm-l6/tokenizer.json");
        let out = self.cli_ok(&[
            "models",
            "add",
            model.to_str().expect("utf-8 path"),
            "--name",
            name,
            "--version",
            version,
            "--quant",
            version,
            "--with",
            tokenizer.to_str().expect("utf-8 path"),
        ]);
        assert!(
            out.contains(&format!("registered {name}@{version}")),
            "{out}"
        );
    }

    /// The result records `edgefleet report --out OUT [--run RUN]` writes to `results.json`;
    /// empty while there are none (or the report cannot be written yet).
    pub fn records(&self, out: &Path, run: Option<&str>) -> Vec<serde_json::Value> {
        let mut args = vec!["report", "--out", out.to_str().expect("utf-8 path")];
        args.extend(run.iter().flat_map(|run| ["--run", *run]));
        if !self.cli(&args).status.success() {
            return Vec::new();
        }
        std::fs::read_to_string(out.join("results.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    /// `edgefleet rollout start ARGS --watch`: whether it succeeded, its stdout and stderr, and
    /// the rollout's id.
    pub fn rollout_watch(&self, args: &[&str]) -> (bool, String, String) {
        let mut full = vec!["rollout", "start"];
        full.extend_from_slice(args);
        full.push("--watch");
        let out = self.cli(&full);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let id = text
            .split_whitespace()
            .find(|w| w.starts_with("ro-"))
            .unwrap_or_else(|| panic!("no rollout id in:\n{text}"))
            .to_string();
        (out.status.success(), text, id)
    }

    /// `edgefleet rollout status ID --json`.
    pub fn rollout(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["rollout", "status", id, "--json"]))
            .expect("rollout JSON")
    }

    /// `edgefleet models show NAME@VERSION --json`.
    pub fn model(&self, model: &str) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["models", "show", model, "--json"]))
            .expect("model JSON")
    }

    /// `edgefleet agents --json`.
    pub fn agents(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["agents", "--json"])).expect("agents JSON")
    }

    /// Waits until `names` are all online.
    pub fn wait_online(&self, names: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let agents = self.agents();
            let online = |n: &&str| {
                agents
                    .iter()
                    .any(|a| a["name"] == *n && a["online"] == true)
            };
            if names.iter().all(online) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agents {names:?} not online within {timeout:?}: {agents:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts an agent process that dials `ctl` (enrolling the first time), reading sensors from an
/// empty tree (so results do not depend on the test machine's hardware).
pub fn start_agent(dir: &Path, ctl: &Controller, name: &str, labels: &[&str]) -> Process {
    let empty = dir.join("no-sensors");
    std::fs::create_dir_all(&empty).expect("sensor root");
    start_agent_with_sensors(dir, ctl, name, labels, &empty)
}

/// Starts an agent process that reads its sensors under `sensors_root` (a fixture tree).
pub fn start_agent_with_sensors(
    dir: &Path,
    ctl: &Controller,
    name: &str,
    labels: &[&str],
    sensors_root: &Path,
) -> Process {
    start_agent_with(dir, ctl, name, labels, sensors_root, &[])
}

/// Starts an agent with extra command-line flags (e.g. `--download-limit 20`). Its log is
/// appended to, so a restarted agent keeps the earlier lines.
pub fn start_agent_with(
    dir: &Path,
    ctl: &Controller,
    name: &str,
    labels: &[&str],
    sensors_root: &Path,
    extra: &[&str],
) -> Process {
    let mut flags = ctl.agent_flags(&dir.join("agents").join(name), name);
    flags.extend(extra.iter().map(|s| s.to_string()));
    for label in labels {
        flags.extend(["--label".to_string(), label.to_string()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_agent_raw(dir, name, sensors_root, &flags)
}

/// Starts `edgefleet-agent run --name NAME --data-dir DIR/agents/NAME` with exactly `flags` (the
/// controller, tokens and the rest), e.g. to try what a refused agent sees.
pub fn start_agent_raw(dir: &Path, name: &str, sensors_root: &Path, flags: &[&str]) -> Process {
    start_agent_in(
        Command::new(binary("edgefleet-agent")),
        dir,
        name,
        sensors_root,
        flags,
    )
}

/// The same from a command the caller made: the agent run through another program (`ip netns
/// exec`), with a fake clock or more environment (an `EDGEFLEET_LOG` set there is kept).
pub fn start_agent_in(
    mut cmd: Command,
    dir: &Path,
    name: &str,
    sensors_root: &Path,
    flags: &[&str],
) -> Process {
    let log = dir.join(format!("{name}.log"));
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    if !cmd.get_envs().any(|(key, _)| key == "EDGEFLEET_LOG") {
        cmd.env("EDGEFLEET_LOG", "info");
    }
    // A proxy in this machine's environment is not the test's: only one the caller set counts.
    for var in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        if !cmd.get_envs().any(|(key, _)| key == var) {
            cmd.env_remove(var);
        }
    }
    cmd.args(["run", "--name", name, "--data-dir"])
        .arg(dir.join("agents").join(name))
        .arg("--onnxruntime-library")
        .arg(onnxruntime_library())
        .env("NO_COLOR", "1")
        .env("EDGEFLEET_SENSORS_ROOT", sensors_root)
        .stdout(Stdio::null())
        .stderr(log_file)
        .args(flags);
    Process {
        child: cmd.spawn().expect("start edgefleet-agent"),
        log,
    }
}
