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
            tz,
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
                    timezone: tz,
                })
                .await?;
            println!(
                "added schedule {} ({} {}, suite {})\nnext fire {}",
                added.name,
                added.cron,
                added.timezone,
                added.suite,
                next_fire(added.next_fire_unix_ms, &added.timezone)
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
                    let mut last = s
                        .last_fire
                        .as_ref()
                        .map_or_else(|| "never".into(), |f| last_fire(f, now));
                    if s.missed > 0 {
                        last += &format!("; {} missed", s.missed);
                    }
                    vec![
                        s.name.clone(),
                        s.suite.clone(),
                        // The cron, and under it the zone it is read in.
                        format!("{}\n{}", s.cron, s.timezone),
                        next_fire_brief(s.next_fire_unix_ms, &s.timezone, now),
                        if s.select.is_empty() {
                            "(all)".into()
                        } else {
                            s.select.clone()
                        },
                        last,
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "SUITE",
                    "CRON, ZONE",
                    "NEXT FIRE",
                    "SELECT",
                    "LAST FIRE",
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

/// A fire time on the schedule's own clock, without the year when it is this year's:
/// `12-07 03:00 CET`.
fn next_fire_brief(unix_ms: i64, zone: &str, now_ms: i64) -> String {
    let full = next_fire(unix_ms, zone);
    let year = |ms: i64| edgefleet_reports::rfc3339(ms).get(..5).map(str::to_string);
    match (year(unix_ms), year(now_ms)) {
        (Some(fire), Some(now)) if fire == now && full.starts_with(&fire) => full[5..].to_string(),
        _ => full,
    }
}

/// A fire time on the schedule's own clock: `2026-12-07 03:00 CET`.
fn next_fire(unix_ms: i64, zone: &str) -> String {
    let zone = edgefleet_controller::schedule::parse_time_zone(zone).unwrap_or(chrono_tz::Tz::UTC);
    match chrono::DateTime::from_timestamp_millis(unix_ms) {
        Some(at) if unix_ms != 0 => at
            .with_timezone(&zone)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        _ => "never".into(),
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
