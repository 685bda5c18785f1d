//! `edgefleet demo`: an embedded controller, two real agent processes on loopback, the MiniLM-L6
//! fp32 and int8 models, the `quick` suite, a report, and a clean stop of everything.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use edgefleet_controller::server::Security;
use edgefleet_controller::trust::tokens::{new_admin_token, new_enrollment_token, Role};
use edgefleet_controller::{now_ms, Controller, Settings};

use super::bench::wait_for_run;
use super::client::Client;
use super::output::print_results;
use super::report::write_report;
use super::target::Target;

/// Where the demo's pieces come from.
#[derive(Debug, Clone)]
pub(super) struct DemoOptions {
    pub(crate) out: PathBuf,
    /// The prepared models (`minilm-l6/…`); default: the set-up cache of this checkout.
    pub(crate) models_dir: Option<PathBuf>,
    /// Passed to the agents; by default they find the set-up cache themselves.
    pub(crate) onnxruntime_library: Option<PathBuf>,
}

/// The demo's agents: (name, labels).
const AGENTS: [(&str, &[&str]); 2] = [
    ("edge-a", &["site=lab-a", "hw=x86-gateway"]),
    ("edge-b", &["site=lab-b", "hw=x86-gateway"]),
];
/// Marks a state folder as the demo's own, so a re-run may replace it.
const STATE_MARKER: &str = ".edgefleet-demo";

pub(super) async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let models = locate_models(options.models_dir.as_deref())?;
    let agent_binary = sibling_binary("edgefleet-agent")?;
    let state = prepare_state_dir(&options.out)?;

    // The secure path, as on a real network: TLS, an admin token for the CLI calls, a one-time
    // enrollment token per agent.
    let controller = Controller::open(
        &state.join("controller"),
        Settings {
            security: Security::Tls {
                sans: vec!["127.0.0.1".into(), "localhost".into()],
                agent_cert_lifetime: Duration::from_secs(24 * 3600),
                recovery_window: edgefleet_controller::server::DEFAULT_RECOVERY_WINDOW,
            },
            heartbeat_interval: Duration::from_secs(2),
            limits: Default::default(),
            retention: None,
            max_stream_age: None,
        },
    )?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a loopback port")?;
    let address = format!("https://{}", listener.local_addr()?);
    let authority = controller
        .authority
        .clone()
        .expect("a TLS controller has its CA");
    let (admin_token, hash) = new_admin_token();
    controller
        .store
        .insert_admin_token("demo", Role::Operator, &hash, now_ms())?;
    let target = Target {
        address: address.clone(),
        ca_pem: Some(authority.ca_pem().to_string()),
        token: Some(admin_token),
    };
    let stop_server = CancellationToken::new();
    let server = tokio::spawn(edgefleet_controller::serve(
        listener,
        controller.clone(),
        stop_server.clone().cancelled_owned(),
    ));
    println!(
        "controller   {address} (data in {})",
        state.join("controller").display()
    );

    let mut agents = Vec::new();
    for (name, labels) in AGENTS {
        let (token, hash) = new_enrollment_token(authority.ca_sha256());
        let now = now_ms();
        controller.store.insert_enrollment_token(
            &hash,
            name,
            &Default::default(),
            now,
            now + 600_000,
        )?;
        let child = spawn_agent(
            &agent_binary,
            &address,
            &token,
            name,
            labels,
            &state,
            options.onnxruntime_library.as_deref(),
        )?;
        println!(
            "agent        {name} (pid {}, log {})",
            child.id().unwrap_or(0),
            state.join(format!("{name}.log")).display()
        );
        agents.push((name, child));
    }

    let outcome = drive(
        &target,
        &controller,
        &models,
        &options.out,
        &mut agents,
        &state,
    )
    .await;

    for (name, child) in &mut agents {
        stop_agent(name, child).await;
    }
    stop_server.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    outcome?;
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Everything between starting the processes and stopping them.
async fn drive(
    target: &Target,
    controller: &Controller,
    models: &Path,
    out: &Path,
    agents: &mut [(&str, Child)],
    state: &Path,
) -> anyhow::Result<()> {
    wait_for_agents(controller, agents, state).await?;
    let mut client = Client::connect(target).await?;
    let minilm = models.join("minilm-l6");
    let tokenizer = [minilm.join("tokenizer.json")];
    for quant in ["fp32", "int8"] {
        let info = client
            .add_model(
                &minilm.join(format!("model.{quant}.onnx")),
                &tokenizer,
                "minilm-l6",
                quant,
                quant,
            )
            .await?;
        println!(
            "model        minilm-l6@{quant} ({:.1} MB, opset {})",
            info.files[0].size_bytes as f64 / 1e6,
            info.opset
        );
    }
    let (_, suite) = edgefleet_suites::SHIPPED
        .iter()
        .find(|(name, _)| *name == "quick")
        .expect("the quick suite is shipped");
    let run = client
        .start_bench(suite, "bench-suites/suites/quick.toml", &[], Vec::new())
        .await?;
    println!(
        "benchmark    {} ({} jobs on {} agents)",
        run.run_id, run.jobs, run.agents
    );
    let status = wait_for_run(&mut client, &run.run_id, Duration::from_secs(600), false).await?;
    let (files, records, failures) =
        write_report(&mut client, out, &super::report::Scope::run(&run.run_id)).await?;
    println!();
    print_results(&records, &failures);
    println!();
    println!("report       {}", files.html.display());
    println!("results      {}", files.json.display());
    if status.jobs_failed > 0 {
        bail!(
            "{} of {} benchmark jobs failed (see above)",
            status.jobs_failed,
            status.jobs_total
        );
    }
    Ok(())
}

fn spawn_agent(
    binary: &Path,
    address: &str,
    token: &str,
    name: &str,
    labels: &[&str],
    state: &Path,
    library: Option<&Path>,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(state.join(format!("{name}.log")))?;
    let mut cmd = Command::new(binary);
    cmd.arg("run")
        .arg("--controller")
        .arg(address)
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(state.join("agents").join(name))
        .env("EDGEFLEET_ENROLL_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    for label in labels {
        cmd.arg("--label").arg(label);
    }
    if let Some(library) = library {
        cmd.arg("--onnxruntime-library").arg(library);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

async fn wait_for_agents(
    controller: &Controller,
    agents: &mut [(&str, Child)],
    state: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let online = controller
            .store
            .agents()?
            .iter()
            .filter(|a| controller.fleet.is_online(&a.id))
            .count();
        if online >= agents.len() {
            return Ok(());
        }
        for (name, child) in agents.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "agent {name} exited ({status}) before connecting; last log line: {}",
                    last_log_line(&state.join(format!("{name}.log")))
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the agents did not connect within 60 s; see the logs in {}",
                state.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then up to 10 s to drain, then SIGKILL.
async fn stop_agent(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => eprintln!("agent {name} exited with {status}"),
        _ => {
            eprintln!("agent {name} did not stop within 10 s; killing it");
            let _ = child.kill().await;
        }
    }
}

fn last_log_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_string))
        .unwrap_or_else(|| "(empty)".into())
}

/// `DIR/state`, emptied if a previous demo left it.
fn prepare_state_dir(out: &Path) -> anyhow::Result<PathBuf> {
    let state = out.join("state");
    if state.exists() {
        if !state.join(STATE_MARKER).exists() {
            bail!(
                "{} exists and was not made by `edgefleet demo`; choose another --out",
                state.display()
            );
        }
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot clear {}", state.display()))?;
    }
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    std::fs::write(
        state.join(STATE_MARKER),
        b"state of the last `edgefleet demo`; safe to delete\n",
    )?;
    Ok(state)
}

/// The set-up cache's model folder: `--models-dir`, `EDGEFLEET_MODELS`, or `.cache/edgefleet/models`
/// in the checkout this binary was built in (or the current directory).
pub(crate) fn locate_models(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = explicit {
        candidates.push(dir.to_path_buf());
    } else if let Some(env) = std::env::var_os("EDGEFLEET_MODELS") {
        candidates.push(PathBuf::from(env));
    } else {
        if let Ok(exe) = std::env::current_exe() {
            candidates.extend(
                exe.ancestors()
                    .skip(1)
                    .take(4)
                    .map(|a| a.join(".cache/edgefleet/models")),
            );
        }
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd.join(".cache/edgefleet/models"));
        }
    }
    let needed = [
        "minilm-l6/model.fp32.onnx",
        "minilm-l6/model.int8.onnx",
        "minilm-l6/tokenizer.json",
    ];
    for dir in &candidates {
        if needed.iter().all(|f| dir.join(f).is_file()) {
            return Ok(dir.clone());
        }
    }
    bail!(
        "the demo models are missing (needed {}); looked in {}; run scripts/setup.sh first",
        needed.join(", "),
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Another binary installed next to this one.
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found next to {} (build it: cargo build --release --bins)",
            name,
            exe.display()
        );
    }
    Ok(path)
}
