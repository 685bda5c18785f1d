//! `edgefleet rollout`: start a rollout (its gate suite checked and read here), show one or all,
//! follow one until it settles, pause, resume, abort, roll back.

use std::time::Duration;

use super::bench::read_inputs;
use super::client::Client;
use super::models::split_model;
use super::output::{ago, print_json, print_table};
use super::progress::Redraw;
use super::target::Target;
use super::{rollout_view, RolloutCommand};

pub(super) async fn run(target: &Target, command: RolloutCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(target).await?;
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
                    select: select.join(","),
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
                    print_json(&all)?;
                } else if all.is_empty() {
                    println!("no rollouts yet");
                } else {
                    let now = edgefleet_controller::now_ms();
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|r| {
                            let done = rollout_view::on_new_version(r);
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
                        &["ROLLOUT", "MODEL", "STATE", "ON IT", "STARTED", "REASON"],
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
        return print_json(&status);
    }
    if !watch {
        print!("{}", rollout_view::render(&status));
        return Ok(());
    }
    let mut status = status;
    let mut redraw = Redraw::new();
    loop {
        redraw.show(&rollout_view::render(&status));
        if rollout_view::settled(&status) {
            redraw.finish();
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
