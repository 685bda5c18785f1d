//! The `edgefleet` command line: [`args`] is its shape (every command and flag), [`client`] the
//! connection to a controller's admin service, and one module per command family carries a
//! command out ([`serve`], [`agents`], [`models`], [`bench`], [`rollout`], [`schedule`],
//! [`report`], [`demo`]).
//! [`output`] prints tables and JSON, [`progress`] draws bars and redraws, [`rollout_view`]
//! renders a rollout as text.

mod admin;
mod agents;
mod args;
mod bench;
mod client;
mod demo;
mod metrics_endpoint;
mod models;
mod output;
mod progress;
mod report;
mod rollout;
mod rollout_view;
mod schedule;
mod serve;
mod target;

use std::time::Duration;

use anyhow::Context;

pub(crate) use args::{
    AdminCommand, AgentsCommand, BenchCommand, Cli, Command, ModelsCommand, RolloutCommand,
    ScheduleCommand, TokensCommand,
};
pub(crate) use target::ConfigError;
use target::Target;

/// Carries out one parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = || {
        Target::resolve(
            cli.controller.clone(),
            cli.credentials.clone(),
            cli.insecure,
        )
    };
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            sans,
            agent_cert_lifetime_s,
            token,
            heartbeat_s,
            metrics_listen,
        } => {
            serve::run(serve::ServeOptions {
                listen,
                data_dir,
                sans,
                agent_cert_lifetime: Duration::from_secs(agent_cert_lifetime_s.max(1)),
                insecure_token: cli.insecure.then_some(token).flatten(),
                insecure: cli.insecure,
                heartbeat: Duration::from_secs(heartbeat_s.max(1)),
                metrics_listen,
            })
            .await
        }
        Command::Agents { command, json } => agents::run(&target()?, command, json).await,
        Command::Admin(command) => admin::run(&target()?, command).await,
        Command::Models(command) => models::run(&target()?, command).await,
        Command::Bench(BenchCommand::Run {
            suite,
            select,
            wait,
            json,
            timeout_s,
        }) => {
            bench::run(
                &target()?,
                suite,
                select,
                wait,
                json,
                Duration::from_secs(timeout_s),
            )
            .await
        }
        Command::Rollout(command) => rollout::run(&target()?, command).await,
        Command::Schedule(command) => schedule::run(&target()?, command).await,
        Command::Report { out, run } => report::run(&target()?, &out, run.as_deref()).await,
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
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "edgefleet", &mut std::io::stdout());
            Ok(())
        }
        Command::ManPages { out } => std::fs::create_dir_all(&out)
            .and_then(|()| clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &out))
            .with_context(|| format!("cannot write man pages into {}", out.display())),
    }
}
