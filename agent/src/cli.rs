//! The `edgefleet-agent` command line: its shape (clap derive) and each command: `run` (the
//! daemon, until SIGTERM), `check` (the device profile and whether ONNX Runtime loads), `bench`
//! (a suite on this device alone), `enroll` (from nothing to enrolled), and the completions and
//! man pages the packages carry.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgefleet_agent::config::{AgentConfig, ConfigFile, Overrides};
use tokio_util::sync::CancellationToken;

/// The edgefleet agent: runs on an edge device, dials the controller, and benchmarks the ONNX
/// models it is sent.
#[derive(Parser)]
#[command(name = "edgefleet-agent", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: connect to the controller and carry out its jobs.
    Run(DaemonArgs),
    /// Print this device's hardware profile, its energy source and whether ONNX Runtime loads,
    /// then exit.
    Check(CheckArgs),
    /// Run a suite on this device alone and print a table, or result records with --json.
    ///
    /// Models are .onnx files named in the suite, or name@version found in --models. Failed
    /// runs are rows of the table with their reasons; the exit status is 1 when any run failed.
    Bench {
        suite: PathBuf,
        /// Print a JSON array of result records instead of a table.
        #[arg(long)]
        json: bool,
        /// Where name@version models are, as DIR/NAME/model.VERSION.onnx with tokenizer.json
        /// beside (default: the set-up cache .cache/edgefleet/models of this checkout).
        #[arg(long = "models", value_name = "DIR", env = "EDGEFLEET_MODELS")]
        models_dir: Option<PathBuf>,
        /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then next to this binary).
        #[arg(long, env = "EDGEFLEET_ONNXRUNTIME")]
        onnxruntime_library: Option<PathBuf>,
        #[arg(long, hide = true, env = "EDGEFLEET_SENSORS_ROOT", default_value = "/")]
        sensors_root: PathBuf,
    },
    /// Enroll this device with a controller and write its config.
    ///
    /// Checks what it will write, enrolls with the one-time token, keeps the certificate in the
    /// data folder, writes the config file (without the token), and starts the edgefleet-agent
    /// service where systemd runs. Exit status 64: something to fix first; 69: the controller did
    /// not answer. Nothing is written unless it all succeeds.
    Enroll(EnrollArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (edgefleet-agent.1 and one per command) into a folder.
    #[command(hide = true)]
    ManPages { out: PathBuf },
}

#[derive(clap::Args)]
pub(crate) struct EnrollArgs {
    /// The controller's address, e.g. https://controller:7070; repeat it (or separate with
    /// commas) for several replicas, tried in turn.
    #[arg(
        long,
        env = "EDGEFLEET_CONTROLLER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    controller: Vec<String>,
    /// The one-time token from `edgefleet agents enroll` on the controller.
    #[arg(long, env = "EDGEFLEET_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// A label key=value, e.g. site=store-42 (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The name this device shows under (default: its hostname).
    #[arg(long)]
    name: Option<String>,
    /// The config file to write; settings already in it are kept.
    #[arg(long, default_value = edgefleet_agent::provisioning::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Where the agent keeps its certificate and models (default /var/lib/edgefleet-agent).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Enroll again as a new agent although this device already holds a certificate.
    #[arg(long)]
    force: bool,
    /// Do not start the edgefleet-agent service afterwards.
    #[arg(long)]
    no_start: bool,
}

/// What `check` reads: where the runtime library is (from the config or the flag), and the
/// sensors; none of the daemon's link settings.
#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Config file (TOML) whose onnxruntime_library to check.
    #[arg(long, env = "EDGEFLEET_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then next to this binary).
    #[arg(long, env = "EDGEFLEET_ONNXRUNTIME")]
    onnxruntime_library: Option<PathBuf>,
    /// Read sensors under this root instead of / (for tests and containers).
    #[arg(long, hide = true, env = "EDGEFLEET_SENSORS_ROOT")]
    sensors_root: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct DaemonArgs {
    /// Config file (TOML); flags given here win over it.
    #[arg(long, env = "EDGEFLEET_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The controller's address, e.g. https://controller:7070; repeat it (or separate with
    /// commas) for several replicas, tried in turn.
    #[arg(
        long,
        env = "EDGEFLEET_CONTROLLER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    controller: Vec<String>,
    /// The one-time token from `edgefleet agents enroll`; needed once, until the agent holds its
    /// certificate (kept in the data directory).
    #[arg(long, env = "EDGEFLEET_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
    /// Plaintext (http://) to a controller started with --insecure; no certificates.
    #[arg(long)]
    insecure: bool,
    /// With --insecure only: the shared token that controller expects.
    #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The name this device shows under (default: its hostname).
    #[arg(long, env = "EDGEFLEET_AGENT_NAME")]
    name: Option<String>,
    /// A label key=value, e.g. site=store-42 (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Where the agent keeps its id and models (default /var/lib/edgefleet-agent).
    #[arg(long, env = "EDGEFLEET_AGENT_DATA")]
    data_dir: Option<PathBuf>,
    /// Path to libonnxruntime.so (default: ORT_DYLIB_PATH, then next to this binary).
    #[arg(long, env = "EDGEFLEET_ONNXRUNTIME")]
    onnxruntime_library: Option<PathBuf>,
    /// Read sensors under this root instead of / (for tests and containers).
    #[arg(long, hide = true, env = "EDGEFLEET_SENSORS_ROOT")]
    sensors_root: Option<PathBuf>,
    /// Cap model downloads at this many megabytes per second.
    #[arg(long, value_name = "MB_PER_S")]
    download_limit: Option<f64>,
    /// Refuse installs that would leave less free disk than this many megabytes (default 100).
    #[arg(long, value_name = "MB")]
    min_free_disk_mb: Option<u64>,
    /// Stop a benchmark worker whose resident memory passes this many MiB; its job fails with
    /// the reason (default: no cap).
    #[arg(long, value_name = "MB")]
    worker_memory_limit: Option<u64>,
}

impl DaemonArgs {
    /// The config, or the exit code for a bad one after saying why.
    fn resolve(self) -> Result<AgentConfig, ExitCode> {
        self.try_resolve().map_err(|e| {
            eprintln!("edgefleet-agent: {}", one_line(&e));
            ExitCode::from(EXIT_BAD_CONFIG)
        })
    }

    fn try_resolve(self) -> anyhow::Result<AgentConfig> {
        let file = match &self.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        let config = AgentConfig::resolve(
            file,
            Overrides {
                controller: self.controller,
                insecure: self.insecure,
                enrollment_token: self.token,
                enroll_token: self.enroll_token,
                name: self.name,
                labels: self.labels,
                data_dir: self.data_dir,
                onnxruntime_library: self.onnxruntime_library,
                sensors_root: self.sensors_root,
                download_limit_mb_per_s: self.download_limit,
                min_free_disk_mb: self.min_free_disk_mb,
                worker_memory_limit_mb: self.worker_memory_limit,
            },
        )?;
        Ok(config)
    }
}

/// The exit code for a configuration that cannot be used (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

pub(crate) fn enroll(args: EnrollArgs) -> ExitCode {
    use edgefleet_agent::provisioning;
    let request = provisioning::EnrollRequest {
        config_path: args.config,
        controller: args.controller,
        enroll_token: args.enroll_token,
        name: args.name,
        labels: args.labels,
        data_dir: args.data_dir,
        force: args.force,
    };
    let enrolled = match small_runtime().block_on(provisioning::enroll(request)) {
        Ok(enrolled) => enrolled,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("edgefleet-agent: {}", one_line(&anyhow::Error::from(e)));
            return ExitCode::from(code);
        }
    };
    println!(
        "enrolled as {} (agent {}); certificate in {}, config in {}",
        enrolled.name,
        enrolled.agent_id,
        enrolled.data_dir.display(),
        enrolled.config_path.display()
    );
    let start_by_hand = format!(
        "edgefleet-agent run --config {}",
        enrolled.config_path.display()
    );
    if args.no_start {
        println!("start the agent with: {start_by_hand}");
    } else if provisioning::systemd_running() {
        match provisioning::start_service() {
            Ok(()) => println!("started {}", provisioning::SERVICE),
            Err(why) => {
                eprintln!("edgefleet-agent: enrolled, but the service did not start: {why}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        println!("systemd is not running here; start the agent with: {start_by_hand}");
    }
    ExitCode::SUCCESS
}

/// Prints a completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(
        shell,
        &mut command,
        "edgefleet-agent",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// Writes a man page for the command and each subcommand into `out`.
pub(crate) fn man_pages(out: &std::path::Path) -> ExitCode {
    let written = std::fs::create_dir_all(out)
        .and_then(|()| clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), out));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "edgefleet-agent: cannot write man pages into {}: {e}",
                out.display()
            );
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn bench(
    suite: &std::path::Path,
    json: bool,
    models_dir: Option<PathBuf>,
    library: Option<PathBuf>,
    sensors_root: PathBuf,
) -> ExitCode {
    let library = match edgefleet_agent::runtime_library::locate(library.as_deref()) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("edgefleet-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = edgefleet_agent::local::LocalRun {
        onnxruntime_library: library,
        models_dir: models_dir.or_else(edgefleet_agent::local::default_models_dir),
        sensors_root,
        agent_name: sysinfo::System::host_name().unwrap_or_else(|_| "local".into()),
    };
    // Through anyhow, so that each error's causes are printed after it.
    let outcome = small_runtime()
        .block_on(edgefleet_agent::local::run(suite, &local))
        .map_err(anyhow::Error::from);
    match outcome {
        Ok(outcome) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome.records).expect("records serialize")
                );
            } else {
                edgefleet_agent::local::print_table(&outcome);
            }
            if outcome.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "edgefleet-agent: {} of {} runs failed",
                    outcome.failures.len(),
                    outcome.failures.len() + outcome.records.len()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("edgefleet-agent: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `info`, or as `EDGEFLEET_LOG` says (`debug`, `edgefleet_agent=debug,info`).
/// A target filter rather than tracing's `EnvFilter`, whose regex engine would otherwise sit in
/// the daemon's resident memory.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = std::env::var("EDGEFLEET_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing_subscriber::filter::LevelFilter::INFO)
        });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

pub(crate) fn daemon(args: DaemonArgs) -> ExitCode {
    init_logging();
    let config = match args.resolve() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = small_runtime();
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        edgefleet_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.is_config() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            };
            eprintln!("edgefleet-agent: {}", one_line(&anyhow::Error::from(e)));
            code
        }
    }
}

/// The daemon is mostly idle I/O: one thread is enough and keeps its footprint small.
fn small_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

pub(crate) fn check(args: CheckArgs) -> ExitCode {
    // Which proxy the daemon would use, for the config's controller (if it names one).
    let file = args
        .config
        .as_deref()
        .and_then(|path| edgefleet_agent::config::ConfigFile::load(path).ok())
        .unwrap_or_default();
    let proxy_line = match file.controller.first() {
        Some(controller) => {
            match edgefleet_agent::proxy::route(controller, file.proxy.as_deref(), |name| {
                std::env::var(name).ok()
            }) {
                Ok(route) => format!("{route}, to {controller}"),
                Err(e) => format!("unusable: {e}"),
            }
        }
        None => "(no controller configured)".to_string(),
    };
    // `check` needs no controller: placeholders, so that only the runtime settings matter.
    let args = DaemonArgs {
        config: args.config,
        controller: vec!["https://unused".into()],
        enroll_token: None,
        insecure: false,
        token: Some(String::new()),
        name: None,
        labels: Vec::new(),
        data_dir: None,
        onnxruntime_library: args.onnxruntime_library,
        sensors_root: args.sensors_root,
        download_limit: None,
        min_free_disk_mb: None,
        worker_memory_limit: None,
    };
    let config = match args.resolve() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = small_runtime();
    let profile = runtime.block_on(edgefleet_agent::hardware::probe(&config));
    println!("arch          {}", profile.arch);
    println!(
        "cpu           {} ({} cores)",
        profile.cpu_model, profile.cpu_cores
    );
    println!(
        "memory        {:.1} GiB",
        profile.memory_bytes as f64 / (1u64 << 30) as f64
    );
    println!("os            {}", profile.os);
    println!("kernel        {}", profile.kernel);
    println!(
        "governor      {}",
        if profile.cpu_governor.is_empty() {
            "-"
        } else {
            &profile.cpu_governor
        }
    );
    println!("energy        {}", energy_line(&config.sensors_root));
    println!("proxy         {proxy_line}");
    if let Ok(library) =
        edgefleet_agent::runtime_library::locate(config.onnxruntime_library.as_deref())
    {
        println!("library       {}", library.display());
    }
    if profile.runtime_error.is_empty() {
        println!("onnxruntime   {}", profile.onnxruntime_version);
        println!("providers     {}", profile.execution_providers.join(", "));
        ExitCode::SUCCESS
    } else {
        println!("onnxruntime   unavailable");
        eprintln!("edgefleet-agent: {}", profile.runtime_error);
        ExitCode::FAILURE
    }
}

/// Where this device's energy would be read from, or why none is: a RAPL counter that is there
/// but readable only by root (Linux 5.10 on) is named with the fix.
fn energy_line(sensors_root: &std::path::Path) -> String {
    use edgefleet_agent::sensors::energy;
    let probe = energy::Probe::for_root(sensors_root.to_path_buf());
    if let Some(source) = energy::discover(&probe) {
        return format!("{} ({})", source.method(), source.describe());
    }
    match energy::unreadable_rapl_counter(sensors_root) {
        Some(counter) => format!(
            "none readable: {} is there but this user cannot read it (the package's udev rule \
             lets group edgefleet-agent read it; run `udevadm trigger --subsystem-match=powercap` \
             or reboot after installing)",
            counter.display()
        ),
        None => "none found".to_string(),
    }
}

/// An error and its causes in one line, each cause once: many errors already name their cause in
/// their own message, and printing the chain as well would say it twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line += ": ";
        }
        line += &text;
    }
    line
}
