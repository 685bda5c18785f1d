//! How the CLI shows a rollout: a summary, one line per agent (a transfer bar while it fetches),
//! the performance gate's measured ratios, and the summary the HTML report shows.

use edgefleet_proto::v1::RolloutStatus;

/// Whether nothing more will happen to the rollout (offline agents aside, which get their
/// commands when they reconnect).
pub(super) fn settled(status: &RolloutStatus) -> bool {
    let busy = status
        .targets
        .iter()
        .any(|t| t.online && matches!(t.state.as_str(), "installing" | "rolling_back" | "gating"));
    !matches!(status.state.as_str(), "running" | "paused") && !busy
}

/// How many targets run the rollout's version now: installed, being gated or done. An aborted
/// rollout can leave some on it (an abort without rollback), which a count of "done" hid.
pub(super) fn on_new_version(status: &RolloutStatus) -> usize {
    status
        .targets
        .iter()
        .filter(|t| matches!(t.state.as_str(), "installed" | "gating" | "done"))
        .count()
}

/// The rollout as text, for people.
pub(super) fn render(status: &RolloutStatus) -> String {
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
    out += &format!(
        "  select {}  waves {} (at {wave_now}/{waves})  success {}  abort-after {}\n",
        if status.select.is_empty() {
            "all"
        } else {
            &status.select
        },
        status.waves,
        status.success,
        if status.abort_after.is_empty() {
            "-"
        } else {
            &status.abort_after
        },
    );
    out += &format!(
        "  gate {}\n",
        if status.gate.is_empty() {
            "-"
        } else {
            &status.gate
        }
    );
    let rows: Vec<Vec<String>> = status
        .targets
        .iter()
        .map(|t| {
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
            vec![
                (t.wave + 1).to_string(),
                t.agent_name.clone(),
                t.state.clone(),
                detail,
            ]
        })
        .collect();
    out += &edgefleet_reports::text::table(&["WAVE", "AGENT", "STATE", "DETAIL"], &rows);
    for note in &status.gate_notes {
        out += &format!("gate not run: {note}\n");
    }
    for g in &status.gates {
        out += &format!(
            "gate wave {} on {}: {}{}\n",
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
        let rows: Vec<Vec<String>> = g
            .measurements
            .iter()
            .map(|m| {
                let unit = if m.metric == "quality" { "" } else { "x" };
                vec![
                    format!("  {}", m.metric),
                    m.value
                        .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}{unit}")),
                    format!("{}{:.2}{unit}", m.comparison, m.limit),
                    m.outcome.clone(),
                    m.detail.clone(),
                ]
            })
            .collect();
        out += &edgefleet_reports::text::table(
            &["  METRIC", "VALUE", "LIMIT", "OUTCOME", "DETAIL"],
            &rows,
        );
    }
    out
}

/// The rollout as the HTML report shows it.
pub(super) fn summary(status: &RolloutStatus) -> edgefleet_reports::RolloutSummary {
    edgefleet_reports::RolloutSummary {
        id: status.rollout_id.clone(),
        model: status.model.clone(),
        state: status.state.clone(),
        reason: status.reason.clone(),
        gate: status.gate.clone(),
        started_at: edgefleet_reports::rfc3339(status.created_unix_ms),
        agents: status.targets.len(),
        agents_done: on_new_version(status),
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

/// `fetching [######------] 12.0/23.1 MB`: one line of the rendered status, not a live bar
/// (the text is redrawn whole; indicatif draws bars, it does not render one into a string).
fn transfer_bar(label: &str, done: u64, total: u64) -> String {
    const WIDTH: usize = 24;
    let filled = ((done.min(total) as u128 * WIDTH as u128)
        .checked_div(total as u128)
        .unwrap_or(WIDTH as u128)) as usize;
    format!(
        "{label} [{}{}] {:.1}/{:.1} MB",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        done as f64 / 1e6,
        total as f64 / 1e6
    )
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
            text.contains("  p90     2.500x  <=1.10x  breached  5.000 ms vs 2.000 ms"),
            "{text}"
        );
        assert!(text.contains("was int8; 3 smoke queries ok"), "{text}");
        assert!(settled(&status));
        assert_eq!(
            serde_json::to_value(&status).unwrap()["gates"][0]["measurements"][0]["value"],
            2.5
        );
    }

    #[test]
    fn transfer_bars_fill_with_bytes() {
        assert_eq!(
            super::transfer_bar("up", 5_000_000, 10_000_000),
            "up [############------------] 5.0/10.0 MB"
        );
        assert!(super::transfer_bar("up", 0, 0).contains("[########################]"));
    }
}
