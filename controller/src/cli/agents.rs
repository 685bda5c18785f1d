//! `edgefleet agents`: every agent that ever connected, online or not; enrollment tokens for new
//! devices; revoking and forgetting agents.

use std::time::Duration;

use edgefleet_proto::v1::CreateEnrollmentTokenRequest;

use super::client::Client;
use super::output::{ago, print_json, print_table};
use super::target::{ConfigError, Target};
use super::AgentsCommand;

pub(crate) async fn run(
    target: &Target,
    command: Option<AgentsCommand>,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        None => list(target, json).await,
        Some(AgentsCommand::Enroll {
            name,
            labels,
            ttl,
            json,
        }) => enroll(target, name, labels, &ttl, json).await,
        Some(AgentsCommand::Revoke { agent }) => {
            let info = Client::connect(target).await?.revoke_agent(&agent).await?;
            println!("revoked {} ({})", info.name, info.agent_id);
            Ok(())
        }
        Some(AgentsCommand::Rm { agent }) => {
            let reply = Client::connect(target).await?.remove_agent(&agent).await?;
            println!("removed {agent} ({})", reply.agent_id);
            Ok(())
        }
    }
}

/// `controllers [--json]`.
pub(crate) async fn controllers(target: &Target, json: bool) -> anyhow::Result<()> {
    let reply = Client::connect(target).await?.controllers().await?;
    if json {
        return print_json(&reply.controllers);
    }
    let rows: Vec<Vec<String>> = reply
        .controllers
        .iter()
        .map(|c| {
            let mut role = if c.leader { "leader" } else { "replica" }.to_string();
            if c.id == reply.answered_by {
                role.push_str(" (answered)");
            }
            vec![
                c.id.clone(),
                c.address.clone(),
                role,
                c.agents.to_string(),
                format!("{:.1} s ago", c.heard_ago_ms as f64 / 1000.0),
            ]
        })
        .collect();
    print_table(&["ID", "ADDRESS", "ROLE", "AGENTS", "HEARD"], &rows);
    Ok(())
}

/// `agents [--json]`.
async fn list(target: &Target, json: bool) -> anyhow::Result<()> {
    let agents = Client::connect(target).await?.agents().await?;
    if json {
        return print_json(&agents);
    }
    let now = edgefleet_controller::now_ms();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let mut labels: Vec<String> =
                a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let status = agent_status(a, now);
            vec![
                a.name.clone(),
                status.into(),
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
    Ok(())
}

/// An agent's state as `agents` shows it: revoked, online, and for an offline one whether its
/// certificate expired while it was away (it recovers by itself on its next connection) or
/// expired longer ago than the recovery window (locked out until enrolled again).
fn agent_status(agent: &edgefleet_proto::v1::AgentInfo, now_ms: i64) -> &'static str {
    let expired = agent.cert_not_after_unix_ms != 0 && agent.cert_not_after_unix_ms <= now_ms;
    match (agent.revoked_unix_ms, agent.online) {
        (0, true) => "online",
        (0, false) if expired && now_ms > agent.recoverable_until_unix_ms => "locked out",
        (0, false) if expired => "cert expired",
        (0, false) => "offline",
        _ => "revoked",
    }
}

/// `agents enroll`: prints the token (only), or the whole reply with `--json`.
async fn enroll(
    target: &Target,
    name: Option<String>,
    labels: Vec<String>,
    ttl: &str,
    json: bool,
) -> anyhow::Result<()> {
    let labels = labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(ConfigError(format!("label `{l}` is not KEY=VALUE"))),
        })
        .collect::<Result<_, _>>()?;
    let ttl = parse_duration(ttl)?;
    let reply = Client::connect(target)
        .await?
        .create_enrollment_token(CreateEnrollmentTokenRequest {
            name: name.unwrap_or_default(),
            labels,
            ttl_s: ttl.as_secs(),
        })
        .await?;
    if json {
        return print_json(&reply);
    }
    println!("{}", reply.token);
    eprintln!(
        "one use, valid until {}; on the device: edgefleet-agent enroll --controller {} --enroll-token TOKEN",
        edgefleet_reports::rfc3339(reply.expires_unix_ms),
        target.address
    );
    Ok(())
}

/// `90s`, `30m`, `1h`, `2d` (a bare number is seconds).
pub(super) fn parse_duration(text: &str) -> Result<Duration, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
    {
        Some(s) if s > 0 => Ok(Duration::from_secs(s)),
        _ => Err(ConfigError(format!(
            "`{text}` is not a duration such as 90s, 30m, 1h or 2d"
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them() {
        use std::time::Duration;
        assert_eq!(
            super::parse_duration("90s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            super::parse_duration("1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            super::parse_duration("2d").unwrap(),
            Duration::from_secs(172_800)
        );
        assert_eq!(
            super::parse_duration("30").unwrap(),
            Duration::from_secs(30)
        );
        for bad in [
            "",
            "0s",
            "1w",
            "h",
            "-1h",
            "99999999999999999999d",
            "9999999999999999d",
        ] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
