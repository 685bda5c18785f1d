//! The report's detail sections: generation, energy and temperature, trends with regressions
//! and baselines, rollout timelines with the gate's decisions, agents, server runs, failures.

use super::{esc, figures_html, table, table_with};
use crate::charts::fmt_num;
use crate::figures::Figure;
use crate::{AgentSummary, FailedRun, ReportError, ReportInput, ResultRecord, RolloutSummary};

/// Decoder runs: time to first token, time per output token, tokens per second.
pub(super) fn generate_section(
    out: &mut String,
    records: &[&ResultRecord],
    figures: &[Figure],
) -> Result<(), ReportError> {
    let runs: Vec<&ResultRecord> = records
        .iter()
        .copied()
        .filter(|r| r.generate.is_some())
        .collect();
    if runs.is_empty() {
        return Ok(());
    }
    *out += "<h2>Generation</h2>\n";
    figures_html(out, figures)?;
    let head = [
        ("agent", false),
        ("model", false),
        ("prompt tokens", true),
        ("generated", true),
        ("TTFT p50 ms", true),
        ("TTFT p90 ms", true),
        ("TPOT p50 ms", true),
        ("TPOT p90 ms", true),
        ("prefill tokens/s", true),
        ("decode tokens/s", true),
        ("tokenize ms", true),
        ("KV cache", false),
    ];
    let rows = runs.into_iter().map(|r| {
        let g = r.generate.expect("filtered");
        let opt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), fmt_num);
        vec![
            esc(&r.agent),
            esc(&format!("{}@{}", r.model, r.model_version)),
            g.prompt_tokens.to_string(),
            g.generated_tokens.to_string(),
            opt(r.ttft_ms),
            fmt_num(g.ttft_p90_ms),
            opt(r.tpot_ms),
            fmt_num(g.tpot_p90_ms),
            opt(r.prefill_tokens_per_s),
            opt(r.decode_tokens_per_s),
            fmt_num(g.tokenize_ms),
            if g.kv_cache_in_place {
                "in place"
            } else {
                "growing"
            }
            .to_string(),
        ]
    });
    table(out, &head, rows);
    Ok(())
}

/// Server runs: the rate asked for, the rate achieved, and whether p99 stayed in bounds.
pub(super) fn server_section(out: &mut String, records: &[&ResultRecord]) {
    let runs: Vec<&ResultRecord> = records
        .iter()
        .copied()
        .filter(|r| r.server.is_some())
        .collect();
    if runs.is_empty() {
        return;
    }
    *out += "<h2>Server scenario</h2>\n";
    let head = [
        ("agent", false),
        ("model", false),
        ("target /s", true),
        ("achieved /s", true),
        ("p99 ms", true),
        ("p99 bound ms", true),
        ("bound met", false),
        ("peak /s", true),
    ];
    let rows = runs.into_iter().map(|r| {
        let s = r.server.expect("filtered");
        vec![
            esc(&r.agent),
            esc(&format!("{}@{}", r.model, r.model_version)),
            fmt_num(s.target_qps),
            fmt_num(s.achieved_qps),
            fmt_num(r.latency_ms.p99),
            fmt_num(s.p99_bound_ms),
            if s.bound_met {
                "yes".into()
            } else {
                "<span class=\"bad\">no</span>".into()
            },
            s.peak_qps.map_or_else(|| "–".to_string(), fmt_num),
        ]
    });
    table(out, &head, rows);
}

/// Energy, temperature and throttling, where any run has them.
pub(super) fn energy_section(
    out: &mut String,
    records: &[&ResultRecord],
    figures: &[Figure],
) -> Result<(), ReportError> {
    let measured = records.iter().any(|r| {
        r.energy_j_per_inference.is_some() || r.temperature_c.is_some() || r.energy_note.is_some()
    });
    if !measured && figures.is_empty() {
        return Ok(());
    }
    *out += "<h2>Energy and temperature</h2>\n";
    if figures.is_empty() {
        *out += "<p class=\"empty\">Energy was not measured on any target.</p>\n";
    }
    figures_html(out, figures)?;
    let head = [
        ("agent", false),
        ("model", false),
        ("scenario", false),
        ("method", false),
        ("J/inference", true),
        ("idle W", true),
        ("active W", true),
        ("sample Hz", true),
        ("start °C", true),
        ("max °C", true),
        ("throttled", false),
        ("note", false),
    ];
    let rows = records.iter().map(|r| {
        let opt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), fmt_num);
        vec![
            esc(&r.agent),
            esc(&format!("{}@{}", r.model, r.model_version)),
            esc(&r.scenario),
            esc(r.energy_method.as_deref().unwrap_or("none")),
            r.energy_j_per_inference
                .map_or_else(|| "not measured".to_string(), fmt_num),
            opt(r.idle_power_w),
            opt(r.active_power_w),
            opt(r.energy_sample_hz),
            opt(r.temperature_c.map(|t| t.start)),
            opt(r.temperature_c.map(|t| t.max)),
            match r.throttled {
                Some(true) => "<span class=\"bad\">yes</span>".into(),
                Some(false) => "no".into(),
                None => "–".into(),
            },
            esc(r.energy_note.as_deref().unwrap_or("")),
        ]
    });
    table_with(out, &head, &["note"], rows);
    Ok(())
}

pub(super) fn agents_section(out: &mut String, agents: &[AgentSummary]) {
    *out += "<h2>Agents</h2>\n";
    if agents.is_empty() {
        *out += "<p class=\"empty\">No agents are described.</p>\n";
        return;
    }
    let head = [
        ("name", false),
        ("target", false),
        ("labels", false),
        ("hardware", false),
    ];
    let rows = agents.iter().map(|a| {
        let labels: Vec<_> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        vec![
            esc(&a.name),
            esc(&a.target),
            esc(&labels.join(", ")),
            esc(&a.hardware),
        ]
    });
    table_with(out, &head, &["labels", "hardware"], rows);
}

pub(super) fn failures_section(out: &mut String, failures: &[FailedRun]) {
    if failures.is_empty() {
        return;
    }
    *out += "<h2>Failed runs</h2>\n";
    let head = [
        ("agent", false),
        ("model", false),
        ("scenario", false),
        ("threads", true),
        ("error", false),
    ];
    let rows = failures.iter().map(|f| {
        vec![
            esc(&f.agent),
            esc(&format!("{}@{}", f.model, f.model_version)),
            esc(&f.scenario),
            f.threads.to_string(),
            esc(&f.error),
        ]
    });
    table_with(out, &head, &["error"], rows);
}

/// p90 over time per (model, device class), then the regressions and baselines as tables.
pub(super) fn trends_section(
    out: &mut String,
    input: &ReportInput,
    figures: &[Figure],
) -> Result<(), ReportError> {
    if figures.is_empty() && input.regressions.is_empty() && input.baselines.is_empty() {
        return Ok(());
    }
    *out += "<h2>Trends, regressions and baselines</h2>\n";
    if figures.is_empty() {
        *out += "<p class=\"empty\">No device class has results from more than one run yet.</p>\n";
    }
    figures_html(out, figures)?;
    if !input.regressions.is_empty() {
        *out += "<h3>Regressions (newest first)</h3>\n";
        let head = [
            ("detected", false),
            ("kind", false),
            ("model", false),
            ("scenario", false),
            ("metric", false),
            ("new / baseline", true),
            ("95% CI", true),
            ("robust z", true),
            ("acknowledged", false),
            ("run", false),
            ("suite", false),
            ("device class", false),
        ];
        let rows = input.regressions.iter().map(|g| {
            vec![
                esc(&g.detected_at),
                esc(&g.kind),
                esc(&g.model),
                esc(&g.scenario),
                esc(&g.metric),
                format!("{}×", fmt_num(g.ratio)),
                g.ci95.map_or("-".to_string(), |[lo, hi]| {
                    format!("{}–{}", fmt_num(lo), fmt_num(hi))
                }),
                g.robust_z.map_or_else(|| "–".into(), fmt_num),
                if g.acknowledged {
                    "yes".into()
                } else {
                    "<span class=\"bad\">no</span>".into()
                },
                esc(&g.run_id),
                esc(&g.suite),
                esc(&g.device_class),
            ]
        });
        table(out, &head, rows);
    }
    if !input.baselines.is_empty() {
        *out += "<h3>Baselines</h3>\n";
        let head = [
            ("suite", false),
            ("device class", false),
            ("run", false),
            ("set at", false),
        ];
        let rows = input.baselines.iter().map(|b| {
            vec![
                esc(&b.suite),
                esc(&b.device_class),
                esc(&b.run_id),
                esc(&b.set_at),
            ]
        });
        table(out, &head, rows);
    }
    Ok(())
}

/// Each rollout as a timeline: its waves in order with every gate decision, its ratio against
/// the limit and the outcome; then a chart of the measured ratios by wave.
pub(super) fn rollouts_section(
    out: &mut String,
    rollouts: &[RolloutSummary],
    figures: &[Figure],
) -> Result<(), ReportError> {
    if rollouts.is_empty() {
        return Ok(());
    }
    *out += "<h2>Rollouts</h2>\n<p>Newest first. Each gate compares the candidate with the \
             version it would replace, on the same device.</p>\n";
    for r in rollouts {
        let gate = if r.gate.is_empty() { "none" } else { &r.gate };
        *out += &format!(
            "<div class=\"timeline\"><h3>{} <span class=\"nowrap\">{}</span></h3>\n\
             <div>started {} · <b>{}</b> · {}/{} agents on this version · gate: {}</div>\n",
            esc(&r.id),
            esc(&r.model),
            esc(&r.started_at),
            esc(&r.state),
            r.agents_done,
            r.agents,
            esc(gate),
        );
        if !r.reason.is_empty() {
            *out += &format!("<div class=\"muted\">{}</div>\n", esc(&r.reason));
        }
        let mut waves: Vec<u32> = r.gates.iter().map(|g| g.wave).collect();
        waves.sort_unstable();
        waves.dedup();
        if !waves.is_empty() {
            *out += "<ol>\n";
        }
        for wave in waves {
            *out += &format!("<li value=\"{wave}\">wave {wave}: ");
            let decisions: Vec<String> = (r.gates.iter().filter(|g| g.wave == wave))
                .map(|g| {
                    let unit = if g.metric == "quality" { "" } else { "×" };
                    let value = g
                        .value
                        .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}{unit}"));
                    let class = match g.outcome.as_str() {
                        "passed" | "breached" => g.outcome.as_str(),
                        _ => "unmeasured",
                    };
                    let detail = if g.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" <span class=\"muted\">{}</span>", esc(&g.detail))
                    };
                    format!(
                        "<span class=\"nowrap\">{} {} {} (limit {}{:.2}{unit})</span> \
                         <span class=\"badge {class}\">{}</span>{detail}",
                        esc(&g.agent),
                        esc(&g.metric),
                        value,
                        esc(&g.comparison),
                        g.limit,
                        esc(&g.outcome),
                    )
                })
                .collect();
            *out += &decisions.join("; ");
            *out += "</li>\n";
        }
        if !r.gates.is_empty() {
            *out += "</ol>\n";
        }
        *out += "</div>\n";
    }
    figures_html(out, figures)
}
