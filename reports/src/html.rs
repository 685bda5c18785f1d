//! The self-contained HTML report: agent and result tables, inline SVG charts, failed runs.

use crate::charts::{self, fmt_mb, fmt_num, Chart};
use crate::{AgentSummary, FailedRun, ReportError, ReportInput, ResultRecord};

#[cfg(test)]
mod tests;

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;\
line-height:1.4;max-width:1200px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.7rem;margin:0 0 .2rem}
h2{font-size:1.25rem;margin-top:2.2rem;padding-bottom:.2rem;border-bottom:1px solid #ddd}
.meta{color:#555;margin-top:0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top;\
overflow-wrap:anywhere}
th{background:#f2f3f5;font-weight:600}
tbody tr:nth-child(even){background:#fafafa}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bad{color:#b00020;font-weight:600}
figure{margin:1rem 0}
figure svg{display:block;max-width:100%;height:auto}
.empty{color:#666;font-style:italic}
footer{margin-top:2.5rem;padding-top:.5rem;border-top:1px solid #ddd;color:#666;font-size:.85rem}
";

/// Renders the whole report as one HTML document.
pub(crate) fn render(input: &ReportInput) -> Result<String, ReportError> {
    let title = match input.title.trim() {
        "" => "Benchmark report",
        title => title,
    };
    let mut out = String::with_capacity(64 * 1024);
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    out += &format!(
        "<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        esc(title)
    );
    out += &format!("<h1>{}</h1>\n", esc(title));
    let agents = agent_names(input);
    out += &format!(
        "<p class=\"meta\">Generated at {} · {} from {} · {}</p>\n",
        esc(&input.generated_at),
        count(input.records.len(), "result", "results"),
        count(agents.len(), "agent", "agents"),
        count(input.failures.len(), "failed run", "failed runs"),
    );
    agents_section(&mut out, &input.agents);
    results_section(&mut out, &input.records);
    generate_section(&mut out, &input.records);
    server_section(&mut out, &input.records);
    conditions_section(&mut out, &input.records);
    charts_section(&mut out, &input.records, &agents)?;
    failures_section(&mut out, &input.failures);
    rollouts_section(&mut out, &input.rollouts);
    out += "<footer>Latency percentiles are nearest-rank over the warm queries of a run; \
        model load and the first inference are timed separately. MB = 10<sup>6</sup> bytes. \
        All fields of every result, including those not shown here, are in \
        <code>results.json</code> next to this file.</footer>\n</body>\n</html>\n";
    Ok(out)
}

/// Decoder runs: time to first token, time per output token, tokens per second.
fn generate_section(out: &mut String, records: &[ResultRecord]) {
    let runs: Vec<&ResultRecord> = records.iter().filter(|r| r.generate.is_some()).collect();
    if runs.is_empty() {
        return;
    }
    *out += "<h2>Generation</h2>\n";
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
        ]
    });
    table(out, &head, rows);
}

/// Server runs: the rate asked for, the rate achieved, and whether p99 stayed in bounds.
fn server_section(out: &mut String, records: &[ResultRecord]) {
    let runs: Vec<&ResultRecord> = records.iter().filter(|r| r.server.is_some()).collect();
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
fn conditions_section(out: &mut String, records: &[ResultRecord]) {
    let measured = records.iter().any(|r| {
        r.energy_j_per_inference.is_some() || r.temperature_c.is_some() || r.energy_note.is_some()
    });
    if !measured {
        return;
    }
    *out += "<h2>Energy and temperature</h2>\n";
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
            opt(r.energy_j_per_inference),
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
    table(out, &head, rows);
}

fn agents_section(out: &mut String, agents: &[AgentSummary]) {
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
    table(out, &head, rows);
}

fn results_section(out: &mut String, records: &[ResultRecord]) {
    *out += "<h2>Results</h2>\n";
    if records.is_empty() {
        *out += "<p class=\"empty\">No results: no benchmark run has finished yet.</p>\n";
        return;
    }
    let head = [
        ("agent", false),
        ("model", false),
        ("quantization", false),
        ("scenario", false),
        ("threads", true),
        ("samples", true),
        ("valid", false),
        ("p50 ms", true),
        ("p50 95% CI", true),
        ("p90 ms", true),
        ("p90 95% CI", true),
        ("p99 ms", true),
        ("repetition CV", true),
        ("throughput /s", true),
        ("peak RSS MB", true),
        ("load ms", true),
        ("first inference ms", true),
        ("quality", false),
        ("energy J/inference", true),
    ];
    let rows = records.iter().map(|r| {
        let valid = if r.valid {
            "yes"
        } else {
            "<span class=\"bad\">no</span>"
        };
        vec![
            esc(&r.agent),
            esc(&format!("{}@{}", r.model, r.model_version)),
            esc(&r.quantization),
            esc(&r.scenario),
            r.threads.to_string(),
            r.samples.to_string(),
            valid.to_string(),
            fmt_num(r.latency_ms.p50),
            fmt_interval(r.latency_ci95_ms.p50),
            fmt_num(r.latency_ms.p90),
            fmt_interval(r.latency_ci95_ms.p90),
            fmt_num(r.latency_ms.p99),
            r.repetition_cv
                .map_or_else(|| "–".to_string(), |cv| format!("{:.1}%", cv * 100.0)),
            fmt_num(r.throughput_per_s),
            fmt_mb(r.peak_rss_bytes as f64 / 1e6),
            fmt_num(r.load_ms),
            fmt_num(r.first_inference_ms),
            quality_text(r),
            r.energy_j_per_inference.map_or_else(
                || esc(r.energy_method.as_deref().unwrap_or("none")),
                fmt_num,
            ),
        ]
    });
    table(out, &head, rows);
}

/// "cosine_mean 0.9938 vs minilm-l6@fp32", escaped, or "–".
fn quality_text(r: &ResultRecord) -> String {
    match (r.quality_summary(), r.quality.is_some()) {
        (Some(q), true) => esc(&format!(
            "{q} vs {}",
            r.quality_reference.as_deref().unwrap_or("reference")
        )),
        (Some(failed), false) => esc(&failed),
        (None, _) => "–".to_string(),
    }
}

/// `[low, high]` as "low–high".
fn fmt_interval([low, high]: [f64; 2]) -> String {
    format!("{}–{}", fmt_num(low), fmt_num(high))
}

fn charts_section(
    out: &mut String,
    records: &[ResultRecord],
    agents: &[String],
) -> Result<(), ReportError> {
    *out += "<h2>Latency overview</h2>\n";
    figure(
        out,
        charts::latency_overview(records),
        "No latency results to chart.",
    )?;
    *out += "<h2>Latency distribution</h2>\n";
    if records.is_empty() {
        *out += "<p class=\"empty\">No latency distributions to chart.</p>\n";
    }
    for agent in agents
        .iter()
        .filter(|a| records.iter().any(|r| r.agent == **a))
    {
        let none = format!("{}: no latency distribution was recorded.", esc(agent));
        figure(out, charts::latency_cdf(agent, records), &none)?;
    }
    *out += "<h2>Peak memory</h2>\n";
    figure(
        out,
        charts::peak_memory(records),
        "No memory results to chart.",
    )
}

/// Appends `chart` as an inline SVG figure, or `none` (HTML) when there is nothing to draw.
fn figure<C: Chart>(out: &mut String, chart: Option<C>, none: &str) -> Result<(), ReportError> {
    let Some(chart) = chart else {
        *out += &format!("<p class=\"empty\">{none}</p>\n");
        return Ok(());
    };
    let svg = charts::to_svg(&chart)?;
    let label = format!("<svg role=\"img\" aria-label=\"{}\" ", esc(chart.name()));
    *out += &format!("<figure>\n{}</figure>\n", svg.replacen("<svg ", &label, 1));
    Ok(())
}

fn failures_section(out: &mut String, failures: &[FailedRun]) {
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
    table(out, &head, rows);
}

/// Rollouts and the performance-gate measurements that decided them.
fn rollouts_section(out: &mut String, rollouts: &[crate::RolloutSummary]) {
    if rollouts.is_empty() {
        return;
    }
    *out += "<h2>Rollouts</h2>\n";
    let head = [
        ("rollout", false),
        ("model", false),
        ("started", false),
        ("state", false),
        ("agents done", true),
        ("gate", false),
        ("reason", false),
    ];
    let rows = rollouts.iter().map(|r| {
        vec![
            esc(&r.id),
            esc(&r.model),
            esc(&r.started_at),
            esc(&r.state),
            format!("{}/{}", r.agents_done, r.agents),
            esc(if r.gate.is_empty() { "none" } else { &r.gate }),
            esc(&r.reason),
        ]
    });
    table(out, &head, rows);
    let decisions: Vec<(&crate::RolloutSummary, &crate::GateDecision)> = rollouts
        .iter()
        .flat_map(|r| r.gates.iter().map(move |g| (r, g)))
        .collect();
    if decisions.is_empty() {
        return;
    }
    *out += "<h3>Performance gates: candidate vs the active version, same device</h3>\n";
    let head = [
        ("rollout", false),
        ("wave", true),
        ("agent", false),
        ("metric", false),
        ("measured", true),
        ("limit", true),
        ("outcome", false),
        ("detail", false),
    ];
    let rows = decisions.into_iter().map(|(r, g)| {
        let unit = if g.metric == "quality" { "" } else { "×" };
        vec![
            esc(&r.id),
            g.wave.to_string(),
            esc(&g.agent),
            esc(&g.metric),
            g.value
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}{unit}")),
            format!("{}{:.2}{unit}", esc(&g.comparison), g.limit),
            esc(&g.outcome),
            esc(&g.detail),
        ]
    });
    table(out, &head, rows);
}

/// Appends a table; `head` names the columns and says which are numeric (right-aligned), and
/// each row holds its cells as HTML, already escaped.
fn table(out: &mut String, head: &[(&str, bool)], rows: impl Iterator<Item = Vec<String>>) {
    let class = |numeric: bool| if numeric { " class=\"num\"" } else { "" };
    *out += "<div class=\"scroll\"><table>\n<thead><tr>";
    for (name, numeric) in head {
        *out += &format!("<th{}>{name}</th>", class(*numeric));
    }
    *out += "</tr></thead>\n<tbody>\n";
    for row in rows {
        *out += "<tr>";
        for (cell, (_, numeric)) in row.iter().zip(head) {
            *out += &format!("<td{}>{cell}</td>", class(*numeric));
        }
        *out += "</tr>\n";
    }
    *out += "</tbody>\n</table></div>\n";
}

/// The agents in the report: those described, then any others that have records.
fn agent_names(input: &ReportInput) -> Vec<String> {
    let mut names: Vec<String> = input.agents.iter().map(|a| a.name.clone()).collect();
    for r in &input.records {
        if !names.contains(&r.agent) {
            names.push(r.agent.clone());
        }
    }
    names
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
