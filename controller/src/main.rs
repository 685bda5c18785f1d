//! `edgefleet`: parses the command line and runs the controller or one of its client commands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use edgefleet_controller::cli::{ago, print_results, print_table, read_inputs, Client};
use edgefleet_controller::{demo, now_ms, Controller, Settings};
use tokio_util::sync::CancellationToken;

/// edgefleet: roll out ONNX models to a fleet of edge devices, benchmark them there, and compare
/// them in reports.
#[derive(Parser)]
#[command(name = "edgefleet", version, about)]
struct Cli {
    /// The controller to talk to.
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_CONTROLLER",
        default_value = "http://127.0.0.1:7070"
    )]
    controller: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: the server agents dial and the CLI talks to.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "EDGEFLEET_LISTEN", default_value = "0.0.0.0:7070")]
        listen: String,
        /// Where the database and artifacts live.
        #[arg(long, env = "EDGEFLEET_DATA", default_value = "/var/lib/edgefleet")]
        data_dir: PathBuf,
        /// The enrollment token agents must present.
        #[arg(long, env = "EDGEFLEET_TOKEN", hide_env_values = true)]
        token: String,
        /// Seconds between agent heartbeats.
        #[arg(long, default_value_t = 5)]
        heartbeat_s: u64,
    },
    /// List agents, online or not.
    Agents {
        #[arg(long)]
        json: bool,
    },
    /// Register and list model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Benchmark runs.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Roll a model version out to agents in waves, with health checks, performance gates and
    /// rollback.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Write DIR/report.html and DIR/results.json from stored results.
    Report {
        #[arg(long)]
        out: PathBuf,
        /// Only this run (default: every run).
        #[arg(long)]
        run: Option<String>,
    },
    /// Start a controller and two agents here, benchmark MiniLM-L6 fp32 vs int8, write a report.
    Demo {
        #[arg(long)]
        out: PathBuf,
        /// The prepared models (default: the set-up cache .cache/edgefleet/models).
        #[arg(long, env = "EDGEFLEET_MODELS")]
        models_dir: Option<PathBuf>,
        /// libonnxruntime for the agents (default: they look in the set-up cache).
        #[arg(long)]
        onnxruntime_library: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Upload an ONNX model (and companions such as tokenizer.json) as NAME@VERSION.
    Add {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// Quantization label, e.g. fp32, int8, q4.
        #[arg(long, default_value = "unknown")]
        quant: String,
        /// Companion files stored with the model (tokenizer.json, external data).
        #[arg(long = "with", value_name = "FILE")]
        with: Vec<PathBuf>,
    },
    /// List registered model versions.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a version's signed manifest and the agents that hold it.
    Show {
        /// NAME@VERSION
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a version and the artifact bytes no other version uses. Refused while the version
    /// is active on an agent, kept there for rollback, or being rolled out.
    Rm {
        /// NAME@VERSION
        model: String,
        /// Remove it even so.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum RolloutCommand {
    /// Start rolling NAME@VERSION out to the selected agents.
    Start {
        /// NAME@VERSION
        model: String,
        /// Which agents: key=value / key!=value on labels or hardware fields, comma-separated,
        /// all must hold (e.g. hw=rpi5,site!=lab). Default: every agent.
        #[arg(long, default_value = "")]
        select: String,
        /// Cumulative wave sizes, percentages or counts, ending at 100%.
        #[arg(long, default_value = "100%")]
        waves: String,
        /// Share of a wave that must install and pass its health check before the next starts.
        #[arg(long, default_value = "100%")]
        success: String,
        /// Stop and roll back the wave after this many failed installs (N or N%).
        #[arg(long)]
        abort_after: Option<String>,
        /// Performance gate: candidate vs the active version on each wave's devices, e.g.
        /// "p90<=1.10x,energy<=1.10x,quality>=0.99" (metrics p50 p90 p99 energy memory quality).
        #[arg(long)]
        gate: Option<String>,
        /// The gate's workload from a suite instead of built-in sentences (needed for models
        /// without a tokenizer: audio or image input): the group naming this model (or the
        /// only one) gives the input and quality metric, its first scenario the run.
        #[arg(long, value_name = "SUITE.toml", requires = "gate")]
        gate_suite: Option<PathBuf>,
        /// Health check after install: smoke (load and run a few queries), bench (the quick
        /// suite's single-stream run: at least 200 queries and 3 s; a failure rolls back like a
        /// failed smoke test) or none.
        #[arg(long, default_value = "smoke")]
        health: String,
        /// Follow the rollout until it settles.
        #[arg(long)]
        watch: bool,
    },
    /// Show one rollout (or all of them, newest first).
    Status {
        id: Option<String>,
        /// Redraw until the rollout settles.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop starting new installs (in-flight ones finish).
    Pause { id: String },
    /// Continue a paused rollout.
    Resume { id: String },
    /// Stop the rollout where it is; installed agents keep the new version.
    Abort { id: String },
    /// Switch every agent the rollout reached back to the version it had before.
    Rollback { id: String },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Run a suite on the selected online agents.
    Run {
        suite: PathBuf,
        /// key=value or key!=value on labels or hardware fields (repeatable; all must hold).
        #[arg(long = "select", value_name = "KEY=VALUE")]
        select: Vec<String>,
        /// Wait for the results and print them.
        #[arg(long)]
        wait: bool,
        /// Print results as JSON (with --wait).
        #[arg(long)]
        json: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout_s: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEFLEET_LOG").unwrap_or_else(|_| {
                match cli.command {
                    Command::Serve { .. } => "info".into(),
                    _ => "warn".into(),
                }
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let address = cli.controller;
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            token,
            heartbeat_s,
        } => {
            anyhow::ensure!(!token.is_empty(), "the enrollment token must not be empty");
            let controller = Controller::open(
                &data_dir,
                Settings {
                    enrollment_token: token,
                    heartbeat_interval: Duration::from_secs(heartbeat_s.max(1)),
                },
            )?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            // One plain line on stdout, for people and for scripts that asked for port 0.
            println!(
                "edgefleet controller listening on {}",
                listener.local_addr()?
            );
            tracing::info!(data = %data_dir.display(), "controller ready");
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            edgefleet_controller::serve(listener, controller, shutdown.cancelled_owned()).await?;
            Ok(())
        }
        Command::Agents { json } => {
            let agents = Client::connect(&address).await?.agents().await?;
            if json {
                let list: Vec<_> = agents
                    .iter()
                    .map(|a| {
                        let hw = a.hardware.clone().unwrap_or_default();
                        serde_json::json!({
                            "id": a.agent_id, "name": a.name, "online": a.online,
                            "labels": a.labels, "agent_version": a.agent_version, "target": a.target,
                            "last_seen": edgefleet_controller::records::rfc3339(a.last_seen_unix_ms),
                            "first_seen": edgefleet_controller::records::rfc3339(a.first_seen_unix_ms),
                            "hardware": {
                                "arch": hw.arch, "cpu_model": hw.cpu_model, "cpu_cores": hw.cpu_cores,
                                "memory_bytes": hw.memory_bytes, "os": hw.os, "kernel": hw.kernel,
                                "cpu_governor": hw.cpu_governor, "hostname": hw.hostname,
                                "onnxruntime_version": hw.onnxruntime_version,
                                "execution_providers": hw.execution_providers,
                                "runtime_error": hw.runtime_error,
                            },
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let now = now_ms();
                let rows: Vec<Vec<String>> = agents
                    .iter()
                    .map(|a| {
                        let mut labels: Vec<String> =
                            a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        labels.sort();
                        vec![
                            a.name.clone(),
                            if a.online {
                                "online".into()
                            } else {
                                "offline".into()
                            },
                            ago(a.last_seen_unix_ms, now),
                            a.target.clone(),
                            labels.join(","),
                            a.agent_id.chars().take(8).collect(),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "STATUS", "LAST SEEN", "TARGET", "LABELS", "ID"],
                    &rows,
                );
            }
            Ok(())
        }
        Command::Models(ModelsCommand::Add {
            file,
            name,
            version,
            quant,
            with,
        }) => {
            let mut client = Client::connect(&address).await?;
            let info = client
                .add_model(&file, &with, &name, &version, &quant)
                .await?;
            println!(
                "registered {}@{} ({}, opset {})",
                info.name, info.version, info.quantization, info.opset
            );
            for f in &info.files {
                println!(
                    "  {}  {:>10} bytes  sha256 {}",
                    f.file_name, f.size_bytes, f.sha256
                );
            }
            Ok(())
        }
        Command::Models(ModelsCommand::Ls { json }) => {
            let models = Client::connect(&address).await?.models().await?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| serde_json::json!({
                        "name": m.name, "version": m.version, "quantization": m.quantization, "opset": m.opset,
                        "created_at": edgefleet_controller::records::rfc3339(m.created_unix_ms),
                        "files": m.files.iter().map(|f| serde_json::json!({"file_name": f.file_name, "sha256": f.sha256, "size_bytes": f.size_bytes})).collect::<Vec<_>>(),
                        "inputs": m.inputs.iter().map(|s| serde_json::json!({"name": s.name, "element_type": s.element_type, "shape": s.shape})).collect::<Vec<_>>(),
                        "outputs": m.outputs.iter().map(|s| serde_json::json!({"name": s.name, "element_type": s.element_type, "shape": s.shape})).collect::<Vec<_>>(),
                    }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = models
                    .iter()
                    .map(|m| {
                        let size: u64 = m.files.iter().map(|f| f.size_bytes).sum();
                        vec![
                            format!("{}@{}", m.name, m.version),
                            m.quantization.clone(),
                            format!("{:.1}", size as f64 / 1e6),
                            m.opset.to_string(),
                            m.inputs
                                .iter()
                                .map(|i| format!("{}[{}]", i.name, i.shape.join(",")))
                                .collect::<Vec<_>>()
                                .join(" "),
                            m.files
                                .first()
                                .map(|f| f.sha256[..12].to_string())
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(
                    &["MODEL", "QUANT", "MB", "OPSET", "INPUTS", "SHA256"],
                    &rows,
                );
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Run {
            suite,
            select,
            wait,
            json,
            timeout_s,
        }) => {
            // Validate locally first: errors then name the user's file and line.
            let parsed = edgefleet_suites::Suite::load(&suite)?;
            let text = std::fs::read_to_string(&suite)?;
            let inputs = read_inputs(&parsed, &suite)?;
            let mut client = Client::connect(&address).await?;
            let run = client
                .start_bench(&text, &suite.display().to_string(), &select, inputs)
                .await?;
            eprintln!(
                "started {} ({}: {} jobs on {} agents)",
                run.run_id, parsed.name, run.jobs, run.agents
            );
            if !wait {
                println!("{}", run.run_id);
                return Ok(());
            }
            let status = client
                .wait_for_run(&run.run_id, Duration::from_secs(timeout_s), json)
                .await?;
            let (records, failures) = client.results(Some(&run.run_id)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_results(&records, &failures);
            }
            anyhow::ensure!(
                status.jobs_failed == 0,
                "{} of {} jobs failed",
                status.jobs_failed,
                status.jobs_total
            );
            Ok(())
        }
        Command::Models(ModelsCommand::Show { model, json }) => {
            let (name, version) = split_model(&model)?;
            let detail = Client::connect(&address)
                .await?
                .show_model(&name, &version)
                .await?;
            let m = detail.model.unwrap_or_default();
            if json {
                let value = serde_json::json!({
                    "name": m.name, "version": m.version, "quantization": m.quantization,
                    "opset": m.opset, "created_at": edgefleet_controller::records::rfc3339(m.created_unix_ms),
                    "signed_by": detail.signed_by,
                    "manifest_sha256": sha256_hex(&m.manifest),
                    "signature": hex::encode(&m.signature),
                    "files": m.files.iter().map(|f| serde_json::json!({"file_name": f.file_name, "sha256": f.sha256, "size_bytes": f.size_bytes})).collect::<Vec<_>>(),
                    "inputs": m.inputs.iter().map(|s| serde_json::json!({"name": s.name, "element_type": s.element_type, "shape": s.shape})).collect::<Vec<_>>(),
                    "outputs": m.outputs.iter().map(|s| serde_json::json!({"name": s.name, "element_type": s.element_type, "shape": s.shape})).collect::<Vec<_>>(),
                    "placements": detail.placements.iter().map(|p| serde_json::json!({"agent": p.agent_name, "agent_id": p.agent_id, "role": p.role})).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            println!(
                "{}@{}  {}  opset {}",
                m.name, m.version, m.quantization, m.opset
            );
            println!(
                "manifest sha256 {}  signed by controller key {}",
                sha256_hex(&m.manifest),
                detail.signed_by
            );
            for f in &m.files {
                println!(
                    "  {:<24} {:>12} bytes  sha256 {}",
                    f.file_name, f.size_bytes, f.sha256
                );
            }
            for (kind, list) in [("input ", &m.inputs), ("output", &m.outputs)] {
                for s in list.iter() {
                    println!(
                        "  {kind} {} {}[{}]",
                        s.name,
                        s.element_type,
                        s.shape.join(",")
                    );
                }
            }
            if detail.placements.is_empty() {
                println!("installed on no agent");
            }
            for p in &detail.placements {
                println!("  on {} ({})", p.agent_name, p.role);
            }
            Ok(())
        }
        Command::Models(ModelsCommand::Rm { model, force }) => {
            let (name, version) = split_model(&model)?;
            let reply = Client::connect(&address)
                .await?
                .remove_model(&name, &version, force)
                .await?;
            println!(
                "removed {model} ({} artifact file(s), {:.1} MB freed)",
                reply.artifacts_deleted,
                reply.bytes_freed as f64 / 1e6
            );
            Ok(())
        }
        Command::Rollout(command) => rollout(&address, command).await,
        Command::Report { out, run } => {
            let mut client = Client::connect(&address).await?;
            let (files, records, failures) = client.write_report(&out, run.as_deref()).await?;
            println!("{} results, {} failed runs", records.len(), failures.len());
            println!("report   {}", files.html.display());
            println!("results  {}", files.json.display());
            Ok(())
        }
        Command::Demo {
            out,
            models_dir,
            onnxruntime_library,
        } => {
            demo::run(demo::DemoOptions {
                out,
                models_dir,
                onnxruntime_library,
            })
            .await
        }
    }
}

/// `name@version` → (name, version), or a one-line reason.
fn split_model(s: &str) -> anyhow::Result<(String, String)> {
    let r: edgefleet_suites::ModelRef = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    Ok((r.name, r.version))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn rollout(address: &str, command: RolloutCommand) -> anyhow::Result<()> {
    use edgefleet_controller::rollout_view;
    let mut client = Client::connect(address).await?;
    let (status, watch, json) = match command {
        RolloutCommand::Start {
            model,
            select,
            waves,
            success,
            abort_after,
            gate,
            gate_suite,
            health,
            watch,
        } => {
            let (name, version) = split_model(&model)?;
            let (gate_suite_toml, gate_suite_origin, gate_inputs) = match &gate_suite {
                None => (String::new(), String::new(), Vec::new()),
                Some(path) => {
                    let parsed = edgefleet_suites::Suite::load(path)?;
                    let text = std::fs::read_to_string(path)?;
                    (
                        text,
                        path.display().to_string(),
                        read_inputs(&parsed, path)?,
                    )
                }
            };
            let status = client
                .start_rollout(edgefleet_proto::v1::StartRolloutRequest {
                    name,
                    version,
                    select,
                    waves,
                    success,
                    abort_after: abort_after.unwrap_or_default(),
                    gate: gate.unwrap_or_default(),
                    health_check: health,
                    gate_suite_toml,
                    gate_suite_origin,
                    gate_inputs,
                })
                .await?;
            eprintln!(
                "started {} ({} to {} agent(s))",
                status.rollout_id,
                status.model,
                status.targets.len()
            );
            if !watch {
                println!("{}", status.rollout_id);
                return Ok(());
            }
            (status, true, false)
        }
        RolloutCommand::Status { id, watch, json } => {
            let all = client.rollouts(id.as_deref().unwrap_or("")).await?;
            if id.is_none() {
                if json {
                    let list: Vec<_> = all.iter().map(rollout_view::to_json).collect();
                    println!("{}", serde_json::to_string_pretty(&list)?);
                } else if all.is_empty() {
                    println!("no rollouts yet");
                } else {
                    let now = now_ms();
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|r| {
                            let done = r.targets.iter().filter(|t| t.state == "done").count();
                            vec![
                                r.rollout_id.clone(),
                                r.model.clone(),
                                r.state.clone(),
                                format!("{done}/{}", r.targets.len()),
                                ago(r.created_unix_ms, now),
                                r.reason.clone(),
                            ]
                        })
                        .collect();
                    print_table(
                        &["ROLLOUT", "MODEL", "STATE", "DONE", "STARTED", "REASON"],
                        &rows,
                    );
                }
                return Ok(());
            }
            let status = all.into_iter().next().expect("one rollout asked for");
            (status, watch, json)
        }
        RolloutCommand::Pause { id } => (client.control_rollout(&id, "pause").await?, false, false),
        RolloutCommand::Resume { id } => {
            (client.control_rollout(&id, "resume").await?, false, false)
        }
        RolloutCommand::Abort { id } => (client.control_rollout(&id, "abort").await?, false, false),
        RolloutCommand::Rollback { id } => {
            (client.control_rollout(&id, "rollback").await?, true, false)
        }
    };
    // What a watched rollout should end as for the command to succeed.
    let expected = if status.state == "rolled_back" {
        "rolled_back"
    } else {
        "succeeded"
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rollout_view::to_json(&status))?
        );
        return Ok(());
    }
    if !watch {
        print!("{}", rollout_view::render(&status));
        return Ok(());
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut status = status;
    let mut drawn = 0;
    let mut last = String::new();
    loop {
        let text = rollout_view::render(&status);
        if terminal {
            if drawn > 0 {
                print!("\x1b[{drawn}A");
            }
            for line in text.lines() {
                println!("\x1b[2K{line}");
            }
            drawn = text.lines().count();
        } else if text != last {
            print!("{text}");
        }
        last = text;
        if rollout_view::settled(&status) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        status = client
            .rollouts(&status.rollout_id)
            .await?
            .into_iter()
            .next()
            .expect("the rollout exists");
    }
    let failed_rollbacks = status
        .targets
        .iter()
        .filter(|t| t.error.starts_with("rollback failed"))
        .count();
    anyhow::ensure!(
        failed_rollbacks == 0,
        "{failed_rollbacks} agent(s) could not roll back"
    );
    anyhow::ensure!(
        status.state == expected,
        "rollout {} {}{}",
        status.rollout_id,
        status.state,
        if status.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", status.reason)
        }
    );
    Ok(())
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
