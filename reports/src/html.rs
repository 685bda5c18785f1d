//! The self-contained HTML report: a summary per device class on top, a short results table
//! with the full details in a box that scrolls, then the charts (inline SVG) and the tables of
//! generation, energy, trends, rollouts, agents and failures.

use crate::analysis::{self, latest, references};
use crate::charts::{self, Chart};
use crate::figures::{self, Figure, Figures};
use crate::{ReportError, ReportInput, DEFAULT_QUALITY_FLOOR};

mod sections;
mod summary;
#[cfg(test)]
pub(crate) mod tests;

const CSS: &str = "\
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;\
line-height:1.4;max-width:1240px;margin:1.5rem auto;padding:0 1rem}
h1{font-size:1.7rem;margin:0 0 .2rem}
h2{font-size:1.25rem;margin-top:2.2rem;padding-bottom:.2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.meta{color:#555;margin-top:0}
.scroll{overflow-x:auto;width:fit-content;max-width:100%;border:1px solid #e4e4e4;border-radius:4px;margin:.5rem 0}
.scroll.tall{max-height:30rem;overflow:auto}
.scroll.tall thead th{position:sticky;top:0;z-index:1}
.scroll table{margin:0}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top;\
white-space:nowrap;word-break:keep-all;overflow-wrap:normal}
td.text{white-space:normal;min-width:14rem}
th{background:#f2f3f5;font-weight:600}
tbody tr:nth-child(even){background:#fafafa}
.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}
.good{color:#00734f;font-weight:600}
.muted{color:#666}
.nowrap{white-space:nowrap}
figure{margin:1rem 0}
figure svg{display:block;max-width:100%;height:auto}
.empty{color:#666;font-style:italic}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(24rem,1fr));gap:1rem}
.card{border:1px solid #d8dbe0;border-radius:6px;padding:.6rem .9rem;background:#fcfcfd}
.card h3{margin:0 0 .2rem;font-size:1rem}
.card dl{margin:.4rem 0 0;display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem}
.card dt{font-weight:600;color:#444}
.card dd{margin:0}
.card ul{margin:.2rem 0 0;padding-left:1.1rem}
.timeline{border-left:3px solid #0072b2;margin:.6rem 0 1.2rem .4rem;padding:.1rem 0 .1rem 1rem}
.timeline ol{margin:.3rem 0;padding-left:1.2rem}
.badge{display:inline-block;padding:0 .4rem;border-radius:3px;font-size:.8rem;font-weight:600;\
white-space:nowrap}
.passed{background:#d5efe6;color:#00573c}
.breached{background:#fbe0cf;color:#8a3b00}
.unmeasured{background:#eee;color:#555}
footer{margin-top:2.5rem;padding-top:.5rem;border-top:1px solid #ddd;color:#666;font-size:.85rem}
";

/// Renders the whole report as one HTML document.
#[cfg(test)]
pub(crate) fn render(input: &ReportInput) -> Result<String, ReportError> {
    render_all(input).map(|(html, _)| html)
}

/// Renders the report and returns it with its charts (for the PNG files).
pub(crate) fn render_all(input: &ReportInput) -> Result<(String, Figures), ReportError> {
    let title = match input.title.trim() {
        "" => "Benchmark report",
        title => title,
    };
    let floor = input.quality_floor.unwrap_or(DEFAULT_QUALITY_FLOOR);
    let refs = references(&input.records);
    let newest = latest(&input.records);
    let agents = agent_names(input);
    let figures = figures::build(input, &newest, &refs, floor, &agents);
    let mut out = String::with_capacity(256 * 1024);
    out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
    out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
    out += &format!(
        "<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        esc(title)
    );
    out += &format!("<h1>{}</h1>\n", esc(title));
    let runs: std::collections::BTreeSet<&str> =
        input.records.iter().map(|r| r.run_id.as_str()).collect();
    out += &format!(
        "<p class=\"meta\">Generated at {} · {} from {} in {} · {}</p>\n",
        esc(&input.generated_at),
        count(input.records.len(), "result", "results"),
        count(agents.len(), "agent", "agents"),
        count(runs.len(), "run", "runs"),
        crate::failed_jobs_in_words(
            input.failures.len(),
            input
                .failures
                .iter()
                .map(|f| f.run_id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        ),
    );
    let summaries = analysis::class_summaries(&newest, &refs, floor);
    summary::summary_section(&mut out, &summaries, &refs, floor);
    summary::results_section(&mut out, &input.records, &newest, &refs);
    chart_section(
        &mut out,
        "Size against latency",
        "Per device class: each model's size against its p90; the line joins the models no \
         other model beats on both.",
        &figures.pareto,
        "No results to chart.",
    )?;
    chart_section(
        &mut out,
        "p90 by model and device class",
        "",
        &figures.heatmap,
        "No results to chart.",
    )?;
    chart_section(
        &mut out,
        "Latency",
        "",
        &figures.latency,
        "No latency results to chart.",
    )?;
    if !figures.threads.is_empty() {
        chart_section(
            &mut out,
            "Throughput against threads",
            "",
            &figures.threads,
            "",
        )?;
    }
    sections::generate_section(&mut out, &newest, &figures.generation)?;
    sections::energy_section(&mut out, &newest, &figures.energy)?;
    sections::trends_section(&mut out, input, &figures.trends)?;
    sections::rollouts_section(&mut out, &input.rollouts, &figures.rollouts)?;
    sections::agents_section(&mut out, &input.agents);
    sections::server_section(&mut out, &newest);
    sections::failures_section(&mut out, &input.failures);
    out += "<footer>Latency percentiles are nearest-rank over the warm queries of a run; \
        model load and the first inference are timed separately. MB = 10<sup>6</sup> bytes. \
        Charts and summaries use the newest result of each setting; every result, including \
        fields not shown here, is in <code>results.json</code> and <code>results.csv</code> \
        next to this file, each chart as a PNG in <code>charts/</code>.</footer>\n\
        </body>\n</html>\n";
    Ok((out, figures))
}

/// A section of charts under a heading, or `none` when there are none.
fn chart_section(
    out: &mut String,
    heading: &str,
    intro: &str,
    figures: &[Figure],
    none: &str,
) -> Result<(), ReportError> {
    *out += &format!("<h2>{}</h2>\n", esc(heading));
    if !intro.is_empty() {
        *out += &format!("<p>{}</p>\n", esc(intro));
    }
    if figures.is_empty() && !none.is_empty() {
        *out += &format!("<p class=\"empty\">{}</p>\n", esc(none));
    }
    figures_html(out, figures)
}

/// Every chart of the report on `input`, drawn as inline SVG with its accessible name, and its
/// numbers as a table: what the controller's web console shows beside each chart.
pub(crate) fn chart_views(input: &ReportInput) -> Result<Vec<crate::ChartView>, ReportError> {
    let refs = references(&input.records);
    let newest = latest(&input.records);
    let agents = agent_names(input);
    let floor = input.quality_floor.unwrap_or(DEFAULT_QUALITY_FLOOR);
    let figures = figures::build(input, &newest, &refs, floor, &agents);
    figures
        .all()
        .map(|f| {
            let svg = charts::to_svg(&f.chart)?;
            let label = format!("<svg role=\"img\" aria-label=\"{}\" ", esc(f.chart.name()));
            let (columns, rows) = f.chart.table();
            Ok(crate::ChartView {
                slug: f.slug.clone(),
                kind: f.kind,
                name: f.chart.name().to_string(),
                svg: svg.replacen("<svg ", &label, 1),
                columns,
                rows,
            })
        })
        .collect()
}

/// Appends each figure as an inline SVG.
fn figures_html(out: &mut String, figures: &[Figure]) -> Result<(), ReportError> {
    for f in figures {
        let svg = charts::to_svg(&f.chart)?;
        let label = format!("<svg role=\"img\" aria-label=\"{}\" ", esc(f.chart.name()));
        *out += &format!(
            "<figure class=\"chart\" id=\"{}\" data-chart=\"{}\">\n{}</figure>\n",
            esc(&f.slug),
            f.kind,
            svg.replacen("<svg ", &label, 1)
        );
    }
    Ok(())
}

/// Appends a table; `head` names the columns and says which are numeric (right-aligned), and
/// each row holds its cells as HTML, already escaped. Columns named in `text` wrap at spaces.
fn table(out: &mut String, head: &[(&str, bool)], rows: impl Iterator<Item = Vec<String>>) {
    table_with(out, head, &[], rows);
}

fn table_with(
    out: &mut String,
    head: &[(&str, bool)],
    text: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    table_in(out, "scroll", head, text, rows);
}

/// A table in a `div` of class `class` (`scroll`, or `scroll tall` for a box that also scrolls
/// down, its header staying in view).
fn table_in(
    out: &mut String,
    class: &str,
    head: &[(&str, bool)],
    text: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) {
    let cell_class = |name: &str, numeric: bool| match (numeric, text.contains(&name)) {
        (true, _) => " class=\"num\"",
        (false, true) => " class=\"text\"",
        _ => "",
    };
    *out += &format!("<div class=\"{class}\"><table>\n<thead><tr>");
    for (name, numeric) in head {
        *out += &format!(
            "<th{}>{name}</th>",
            if *numeric { " class=\"num\"" } else { "" }
        );
    }
    *out += "</tr></thead>\n<tbody>\n";
    for row in rows {
        *out += "<tr>";
        for (cell, (name, numeric)) in row.iter().zip(head) {
            *out += &format!("<td{}>{cell}</td>", cell_class(name, *numeric));
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
