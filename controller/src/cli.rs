//! The `edgefleet` command line: [`args`] is its shape (every command and flag), [`client`] the
//! connection to a controller's admin service, and one module per command family carries a
//! command out ([`serve`], [`agents`], [`models`], [`bench`], [`rollout`], [`report`], [`demo`]).
//! [`output`] prints tables and JSON, [`progress`] draws bars and redraws, [`rollout_view`]
//! renders a rollout as text.

mod agents;
mod args;
mod bench;
mod client;
mod demo;
mod models;
mod output;
mod progress;
mod report;
mod rollout;
mod rollout_view;
mod serve;

use std::time::Duration;

pub(crate) use args::{BenchCommand, Cli, Command, ModelsCommand, RolloutCommand};

/// Carries out one parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let address = cli.controller;
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            token,
            heartbeat_s,
        } => serve::run(listen, data_dir, token, heartbeat_s).await,
        Command::Agents { json } => agents::list(&address, json).await,
        Command::Models(command) => models::run(&address, command).await,
        Command::Bench(BenchCommand::Run {
            suite,
            select,
            wait,
            json,
            timeout_s,
        }) => {
            bench::run(
                &address,
                suite,
                select,
                wait,
                json,
                Duration::from_secs(timeout_s),
            )
            .await
        }
        Command::Rollout(command) => rollout::run(&address, command).await,
        Command::Report { out, run } => report::run(&address, &out, run.as_deref()).await,
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
