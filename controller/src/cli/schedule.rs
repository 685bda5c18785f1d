//! `edgefleet schedule`: add, list, remove and fire scheduled benchmark runs. The suite is
//! checked here first (errors name the user's file and line) and sent with its input files; the
//! controller checks the cron expression and everything else again and stores nothing on a
//! refusal.

use anyhow::bail;
use edgefleet_proto::v1::{AddScheduleRequest, ScheduleFire};

use super::bench::read_inputs;
use super::client::Client;
use super::output::{ago, print_json, print_table};
use super::target::Target;
use super::ScheduleCommand;

pub(crate) async fn run(target: &Target, command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Add {
            name,
            cron,
            suite,
            select,
            jitter,
            when_idle,
            max_start_temp,
        } => {
            let parsed = edgefleet_suites::Suite::load(&suite)?;
            let text = std::fs::read_to_string(&suite)?;
            let inputs = read_inputs(&parsed, &suite)?;
            let mut client = Client::connect(target).await?;
            let added = client
                .add_schedule(AddScheduleRequest {
                    name,
                    cron,
                    suite_toml: text,
                    suite_origin: suite.display().to_string(),
                    inputs,
                    select: select.join(","),
                    jitter_ms: jitter.map_or(0, |j| j.as_millis() as u64),
                    when_idle,
                    max_start_temp_c: max_start_temp,
                })
                .await?;
            println!(
                "added schedule {} ({}, suite {}); next fire {}",
                added.name,
                added.cron,
                added.suite,
                next_fire(added.next_fire_unix_ms)
            );
        }
        ScheduleCommand::Ls { json } => {
            let schedules = Client::connect(target).await?.schedules().await?;
            if json {
                return print_json(&schedules);
            }
            let now = edgefleet_controller::now_ms();
            let rows: Vec<Vec<String>> = schedules
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.cron.clone(),
                        s.suite.clone(),
                        if s.select.is_empty() {
                            "(all)".into()
                        } else {
                            s.select.clone()
                        },
                        next_fire(s.next_fire_unix_ms),
                        s.last_fire
                            .as_ref()
                            .map_or_else(|| "never".into(), |f| last_fire(f, now)),
                        s.missed.to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "CRON",
                    "SUITE",
                    "SELECT",
                    "NEXT FIRE",
                    "LAST FIRE",
                    "MISSED",
                ],
                &rows,
            );
        }
        ScheduleCommand::Rm { name } => {
            Client::connect(target)
                .await?
                .remove_schedule(&name)
                .await?;
            println!("removed schedule {name}");
        }
        ScheduleCommand::Run { name } => {
            let fired = Client::connect(target).await?.run_schedule(&name).await?;
            match fired.outcome.as_str() {
                "started" => {
                    println!("{}", fired.run_id);
                    eprintln!(
                        "schedule {name} started {}{}",
                        fired.run_id,
                        left_out(&fired)
                    );
                }
                "skipped-still-running" => {
                    bail!("schedule {name}: its previous run is still going; not started twice")
                }
                _ => bail!("schedule {name} did not start: {}", fired.reason),
            }
        }
    }
    Ok(())
}

fn next_fire(unix_ms: i64) -> String {
    match unix_ms {
        0 => "never".into(),
        at => edgefleet_reports::rfc3339(at),
    }
}

/// "started run-… 12 s ago", "failed 3 min ago: no agent is online".
fn last_fire(f: &ScheduleFire, now: i64) -> String {
    let when = ago(f.planned_unix_ms, now);
    let manual = if f.manual { " (manual)" } else { "" };
    match f.outcome.as_str() {
        "started" => format!("started {} {when}{manual}{}", f.run_id, left_out(f)),
        "failed" => format!("failed {when}{manual}: {}", f.reason),
        other => format!("{other} {when}{manual}"),
    }
}

fn left_out(f: &ScheduleFire) -> String {
    if f.left_out.is_empty() {
        String::new()
    } else {
        format!(" (busy, left out: {})", f.left_out.join(", "))
    }
}
