//! How the CLI shows a rollout: a summary, one line per agent (a transfer bar while it fetches),
//! the performance gate's measured ratios, and JSON for scripts.

use edgefleet_proto::v1::RolloutStatus;

use crate::cli::transfer_bar;

/// Whether nothing more will happen to the rollout (offline agents aside, which get their
/// commands when they reconnect).
pub fn settled(status: &RolloutStatus) -> bool {
    let busy = status
        .targets
        .iter()
        .any(|t| t.online && matches!(t.state.as_str(), "installing" | "rolling_back" | "gating"));
    !matches!(status.state.as_str(), "running" | "paused") && !busy
}

/// The rollout as text, for people.
pub fn render(status: &RolloutStatus) -> String {
    let waves = status.waves.split(',').count().max(1);
    let mut out = format!(
        "{}  {}  {}{}\n",
        status.rollout_id,
        status.model,
        status.state,
        if status.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", status.reason)
        }
    );
    let wave_now = (status.current_wave as usize + 1).min(waves);
    out +=
        &format!(
        "  select `{}`  waves {} (at {wave_now}/{waves})  success {}  abort-after {}  gate {}\n",
        if status.select.is_empty() { "all" } else { &status.select },
        status.waves,
        status.success,
        if status.abort_after.is_empty() { "-" } else { &status.abort_after },
        if status.gate.is_empty() { "-" } else { &status.gate },
    );
    for t in &status.targets {
        let detail = match t.state.as_str() {
            "installing" if !t.online => "offline; installs when it reconnects".to_string(),
            "installing" => transfer_bar("fetching", t.served_bytes, status.model_bytes),
            "failed" => t.error.clone(),
            _ if !t.health.is_empty() => format!(
                "was {}; {}",
                if t.previous_version.is_empty() {
                    "none"
                } else {
                    &t.previous_version
                },
                t.health
            ),
            _ => String::new(),
        };
        out += &format!(
            "  wave {}  {:<16} {:<12} {}\n",
            t.wave + 1,
            t.agent_name,
            t.state,
            detail
        );
    }
    for g in &status.gates {
        out += &format!(
            "  gate wave {} on {}: {}{}\n",
            g.wave + 1,
            g.agent_name,
            if g.passed {
                "passed"
            } else {
                "stopped the rollout"
            },
            if g.error.is_empty() {
                String::new()
            } else {
                format!(" ({})", g.error)
            }
        );
        for m in &g.measurements {
            let unit = if m.metric == "quality" { "" } else { "x" };
            let value = m
                .value
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}{unit}"));
            out += &format!(
                "    {:<8} {:>8}  (limit {}{:.2}{unit})  {:<10} {}\n",
                m.metric, value, m.comparison, m.limit, m.outcome, m.detail
            );
        }
    }
    out
}

/// The rollout as the HTML report shows it.
pub fn summary(status: &RolloutStatus) -> edgefleet_reports::RolloutSummary {
    edgefleet_reports::RolloutSummary {
        id: status.rollout_id.clone(),
        model: status.model.clone(),
        state: status.state.clone(),
        reason: status.reason.clone(),
        gate: status.gate.clone(),
        started_at: crate::records::rfc3339(status.created_unix_ms),
        agents: status.targets.len(),
        agents_done: status.targets.iter().filter(|t| t.state == "done").count(),
        gates: status
            .gates
            .iter()
            .flat_map(|g| {
                g.measurements
                    .iter()
                    .map(|m| edgefleet_reports::GateDecision {
                        wave: g.wave + 1,
                        agent: g.agent_name.clone(),
                        metric: m.metric.clone(),
                        value: m.value,
                        comparison: m.comparison.clone(),
                        limit: m.limit,
                        outcome: m.outcome.clone(),
                        detail: m.detail.clone(),
                    })
            })
            .collect(),
    }
}

/// The rollout as JSON, for scripts.
pub fn to_json(status: &RolloutStatus) -> serde_json::Value {
    serde_json::json!({
        "id": status.rollout_id,
        "model": status.model,
        "state": status.state,
        "reason": status.reason,
        "select": status.select,
        "waves": status.waves,
        "success": status.success,
        "abort_after": status.abort_after,
        "gate": status.gate,
        "current_wave": status.current_wave,
        "created_at": crate::records::rfc3339(status.created_unix_ms),
        "updated_at": crate::records::rfc3339(status.updated_unix_ms),
        "model_bytes": status.model_bytes,
        "targets": status.targets.iter().map(|t| serde_json::json!({
            "agent": t.agent_name, "agent_id": t.agent_id, "wave": t.wave + 1, "state": t.state,
            "online": t.online, "error": t.error, "previous_version": t.previous_version,
            "health": t.health, "served_bytes": t.served_bytes,
            "fetched_bytes": t.fetched_bytes, "fetch_started_unix_ms": t.fetch_started_unix_ms,
            "fetch_finished_unix_ms": t.fetch_finished_unix_ms,
        })).collect::<Vec<_>>(),
        "gates": status.gates.iter().map(|g| serde_json::json!({
            "wave": g.wave + 1, "agent": g.agent_name, "passed": g.passed, "run_id": g.run_id,
            "error": g.error,
            "measurements": g.measurements.iter().map(|m| serde_json::json!({
                "metric": m.metric, "value": m.value, "comparison": m.comparison,
                "limit": m.limit, "outcome": m.outcome, "detail": m.detail,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_proto::v1::{GateMeasurement, GateVerdict, RolloutTarget};

    #[test]
    fn a_stopped_rollout_shows_the_ratio_that_stopped_it() {
        let status = RolloutStatus {
            rollout_id: "ro-1".into(),
            model: "minilm@fp32".into(),
            state: "aborted".into(),
            reason: "performance gate breached".into(),
            waves: "100%".into(),
            success: "100%".into(),
            gate: "p90<=1.10x".into(),
            targets: vec![RolloutTarget {
                agent_name: "edge-a".into(),
                state: "rolled_back".into(),
                health: "3 smoke queries ok".into(),
                previous_version: "int8".into(),
                ..RolloutTarget::default()
            }],
            gates: vec![GateVerdict {
                agent_name: "edge-a".into(),
                measurements: vec![GateMeasurement {
                    metric: "p90".into(),
                    value: Some(2.5),
                    comparison: "<=".into(),
                    limit: 1.1,
                    outcome: "breached".into(),
                    detail: "5.000 ms vs 2.000 ms".into(),
                }],
                ..GateVerdict::default()
            }],
            ..RolloutStatus::default()
        };
        let text = render(&status);
        assert!(
            text.contains("aborted: performance gate breached"),
            "{text}"
        );
        assert!(
            text.contains("p90        2.500x  (limit <=1.10x)  breached"),
            "{text}"
        );
        assert!(text.contains("was int8; 3 smoke queries ok"), "{text}");
        assert!(settled(&status));
        assert_eq!(
            to_json(&status)["gates"][0]["measurements"][0]["value"],
            2.5
        );
    }
}
