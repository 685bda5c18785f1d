//! The `edgefleet` command line: [`args`] is its shape (every command and flag), [`client`] the
//! connection to a controller's admin service, and one module per command family carries a
//! command out ([`serve`], [`agents`], [`models`], [`bench`], [`rollout`], [`schedule`],
//! [`compare`] (with baselines and regressions), [`report`], [`demo`]).
//! [`output`] prints tables and JSON, [`progress`] draws bars and redraws, [`rollout_view`]
//! renders a rollout as text.

mod admin;
mod agents;
mod args;
mod bench;
mod client;
mod compare;
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
mod store;
mod target;

use std::time::Duration;

use anyhow::Context;

pub(crate) use args::{
    AdminCommand, AgentsCommand, BaselineCommand, BenchCommand, Cli, Command, ModelsCommand,
    RolloutCommand, ScheduleCommand, StoreCommand, TokensCommand,
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
            database,
            object_store,
            artifact_delivery,
            presigned_url_lifetime_s,
            artifact_cache_mib,
            retention_days,
            replica_id,
            leader_lease_s,
            max_stream_age_s,
            sans,
            agent_cert_lifetime_s,
            agent_recovery_window_s,
            handshake_timeout_s,
            unauthenticated_idle_s,
            max_unauthenticated,
            max_unauthenticated_per_source,
            descriptor_reserve,
            token,
            heartbeat_s,
            metrics_listen,
            console_listen,
            console_plain_http,
            console_origin,
        } => {
            serve::run(serve::ServeOptions {
                listen,
                data_dir,
                database,
                artifacts: object_store.config(
                    artifact_delivery,
                    Duration::from_secs(presigned_url_lifetime_s),
                    artifact_cache_mib.saturating_mul(1 << 20),
                ),
                retention: retention_days.map(|d| Duration::from_secs(d.saturating_mul(86_400))),
                replica_id,
                leader_lease: Duration::from_secs(leader_lease_s),
                max_stream_age: max_stream_age_s.map(Duration::from_secs),
                sans,
                agent_cert_lifetime: Duration::from_secs(agent_cert_lifetime_s.max(1)),
                recovery_window: Duration::from_secs(agent_recovery_window_s),
                limits: edgefleet_controller::server::admission::ConnectionLimits {
                    handshake_timeout: Duration::from_secs(handshake_timeout_s.max(1)),
                    unauthenticated_idle: Duration::from_secs(unauthenticated_idle_s.max(1)),
                    max_unauthenticated: max_unauthenticated.max(1),
                    max_unauthenticated_per_source: max_unauthenticated_per_source.max(1),
                    descriptor_reserve,
                },
                insecure_token: cli.insecure.then_some(token).flatten(),
                insecure: cli.insecure,
                heartbeat: Duration::from_secs(heartbeat_s.max(1)),
                metrics_listen,
                console: console_listen.map(|listen| {
                    edgefleet_controller::console::ConsoleConfig::new(
                        listen,
                        console_plain_http,
                        console_origin,
                    )
                }),
            })
            .await
        }
        Command::Agents { command, json } => agents::run(&target()?, command, json).await,
        Command::Controllers { json } => agents::controllers(&target()?, json).await,
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
        Command::Report {
            out,
            run,
            suite,
            since,
            select,
        } => {
            let scope = report::Scope {
                run,
                suite,
                since_ms: since.as_deref().map(compare::parse_since).transpose()?,
                select,
            };
            report::run(&target()?, &out, &scope).await
        }
        Command::Compare {
            a,
            b,
            suite,
            select,
            metric,
            threshold,
            json,
        } => {
            let request = edgefleet_proto::v1::CompareRequest {
                a,
                b,
                suite: suite.unwrap_or_default(),
                select,
                metric,
                threshold: Some(threshold / 100.0),
            };
            compare::compare(&target()?, request, json).await
        }
        Command::Baseline(command) => compare::baseline(&target()?, command).await,
        Command::Regressions { since, ack, json } => {
            let since_ms = since.as_deref().map(compare::parse_since).transpose()?;
            compare::regressions(&target()?, since_ms, ack, json).await
        }
        Command::Schedule(command) => schedule::run(&target()?, command).await,
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
        Command::Store(StoreCommand::Migrate {
            from,
            to,
            object_store,
        }) => {
            use edgefleet_controller::registry::artifacts::{Delivery, DEFAULT_URL_LIFETIME};
            let object_store = object_store.config(Delivery::Presigned, DEFAULT_URL_LIFETIME, 0);
            tokio::task::spawn_blocking(move || store::migrate(&from, &to, object_store.as_ref()))
                .await?
        }
        Command::Store(StoreCommand::Stats {
            data_dir,
            database,
            json,
        }) => {
            tokio::task::spawn_blocking(move || store::stats(&data_dir, database.as_deref(), json))
                .await?
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
