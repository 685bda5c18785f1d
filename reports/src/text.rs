//! Results as plain-text tables for a terminal: the summary the CLI and `edgefleet-agent bench`
//! print, with generation and server-scenario tables when there are such runs.

use crate::{FailedRun, ResultRecord};

/// The width tables fit: `COLUMNS` when set (an override; tests set it), else the width of the
/// terminal standard output is, else unlimited (a pipe or a file keeps whole rows; `--json` is
/// there for scripts).
pub fn terminal_width() -> Option<usize> {
    let from_env = std::env::var("COLUMNS")
        .ok()
        .and_then(|w| w.trim().parse::<usize>().ok());
    let from_terminal =
        || terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0));
    from_env.or_else(from_terminal).filter(|&w| w >= 20)
}

/// Aligned columns under a header, one line per row, trailing spaces trimmed. A row may have
/// more (or fewer) cells than the header: the table grows a column rather than losing a cell.
/// Within [`terminal_width`], the widest cells wrap onto more lines of their column.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_within(header, rows, terminal_width())
}

/// [`table`] within `width` columns (`None`: as wide as its cells). When the cells are wider,
/// only the widest columns are capped, at the one width that makes the table fit, and their
/// cells wrap; narrow columns keep their width.
pub fn table_within(header: &[&str], rows: &[Vec<String>], width: Option<usize>) -> String {
    use comfy_table::{
        presets::NOTHING, ColumnConstraint, ContentArrangement, Table, Width as ColumnWidth,
    };
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    let cap = width.and_then(|width| column_cap(header, rows, width));
    // No left margin, two spaces between columns.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        if let Some(cap) = cap {
            // comfy-table counts the padding in a column's width.
            column.set_constraint(ColumnConstraint::UpperBoundary(ColumnWidth::Fixed(
                (cap + 2).min(u16::MAX as usize) as u16,
            )));
        }
    }
    if let (Some(_), Some(width)) = (cap, width) {
        // The last column's two trailing spaces are trimmed below.
        table
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_width((width + 2).min(u16::MAX as usize) as u16);
    }
    let mut out = String::new();
    for line in table.lines() {
        out += line.trim_end();
        out += "\n";
    }
    out
}

/// Short labels (`D1`, `D2`, …) for device classes, which run to 80 characters, so that a
/// table keeps to a terminal's width; the legend under it names each (as the report's heatmap
/// does).
#[derive(Debug, Default)]
pub struct ClassLegend {
    classes: Vec<String>,
}

impl ClassLegend {
    /// The classes in the order they first appear.
    pub fn new<'a>(classes: impl IntoIterator<Item = &'a str>) -> ClassLegend {
        let mut legend = ClassLegend::default();
        for class in classes {
            if !legend.classes.iter().any(|c| c == class) {
                legend.classes.push(class.to_string());
            }
        }
        legend
    }

    /// `D1` for the first class, and so on.
    pub fn label(&self, class: &str) -> String {
        match self.classes.iter().position(|c| c == class) {
            Some(i) => format!("D{}", i + 1),
            None => class.to_string(),
        }
    }

    /// One line per class: `D1  x86_64/Intel Xeon/2c/24GiB · onnxruntime 1.31.1 CPU · 1 thread`.
    pub fn text(&self) -> String {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("D{}  {c}\n", i + 1))
            .collect()
    }
}

/// The widest a column may be for the table to fit `width` (two spaces between columns), or
/// `None` when it fits as it is. Columns narrower than the cap keep their width.
fn column_cap(header: &[&str], rows: &[Vec<String>], width: usize) -> Option<usize> {
    let columns = rows.iter().map(Vec::len).chain([header.len()]).max()?;
    let mut natural = vec![0usize; columns];
    let cells = rows
        .iter()
        .flat_map(|row| row.iter().map(String::as_str).enumerate())
        .chain(header.iter().copied().enumerate());
    for (i, cell) in cells {
        let widest_line = cell.lines().map(|l| l.chars().count()).max().unwrap_or(0);
        natural[i] = natural[i].max(widest_line);
    }
    let spacing = 2 * columns.saturating_sub(1);
    let total = |cap: usize| natural.iter().map(|&w| w.min(cap)).sum::<usize>() + spacing;
    let widest = natural.iter().copied().max().unwrap_or(0);
    if total(widest) <= width {
        return None;
    }
    // The largest cap that fits; never below a few characters a column.
    Some(
        (4..widest)
            .rev()
            .find(|&cap| total(cap) <= width)
            .unwrap_or(4),
    )
}

/// The results summary: one row per result, then generation and server details, then failures.
pub fn summary(records: &[ResultRecord], failures: &[FailedRun]) -> String {
    let model = |r: &ResultRecord| {
        if r.model_version.is_empty() {
            r.model.clone()
        } else {
            format!("{}@{}", r.model, r.model_version)
        }
    };
    // One engine for every row (the usual case) is said once under the table, not per row.
    let engines: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| {
            format!("{} {}", r.engine, r.engine_version)
                .trim()
                .to_string()
        })
        .collect();
    let engine_column = engines.len() > 1;
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![model(r), r.agent.clone()];
            if engine_column {
                row.push(r.engine.clone());
            }
            row.extend([
                short_scenario(&r.scenario).to_string(),
                r.threads.to_string(),
                format!("{:.2}{}", r.latency_ms.p50, if r.valid { "" } else { "*" }),
                format!("{:.2}", r.latency_ms.p90),
                format!("{:.2}", r.latency_ms.p99),
                format!("{:.1}", r.throughput_per_s),
                format!("{:.1}", r.peak_rss_bytes as f64 / 1e6),
                quality_brief(r),
            ]);
            row
        })
        .collect();
    let mut header = vec!["MODEL", "AGENT"];
    if engine_column {
        header.push("ENGINE");
    }
    header.extend([
        "SCENARIO", "THR", "P50", "P90", "P99", "PER S", "MB", "QUALITY",
    ]);
    if records.is_empty() {
        let mut out = String::from("no results\n");
        for f in failures {
            out += &failure_line(f);
        }
        return out;
    }
    let mut out = table(&header, &rows);
    let mut legend = Vec::new();
    if !engine_column {
        if let Some(engine) = engines.first() {
            legend.push(format!("engine {engine}"));
        }
    }
    legend
        .push("THR threads · P50/P90/P99 ms · PER S samples a second · MB peak memory".to_string());
    if records.iter().any(|r| !r.valid) {
        legend.push("* too few queries or too short to be valid".to_string());
    }
    for line in legend {
        out += &format!("({line})\n");
    }
    for r in records {
        if let (None, Some(e)) = (&r.quality, &r.quality_error) {
            out += &format!("QUALITY FAILED  {} on {}: {e}\n", model(r), r.agent);
        }
    }
    let generation: Vec<Vec<String>> = records
        .iter()
        .filter_map(|r| {
            let g = r.generate?;
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
            Some(vec![
                model(r),
                r.agent.clone(),
                g.prompt_tokens.to_string(),
                g.generated_tokens.to_string(),
                f(r.ttft_ms),
                f(r.tpot_ms),
                format!("{:.2}", g.tpot_p90_ms),
                f(r.prefill_tokens_per_s),
                f(r.decode_tokens_per_s),
            ])
        })
        .collect();
    if !generation.is_empty() {
        out += "\n";
        out += &table(
            &[
                "MODEL",
                "AGENT",
                "PROMPT",
                "NEW",
                "TTFT MS",
                "TPOT MS",
                "TPOT P90",
                "PREFILL TOK/S",
                "DECODE TOK/S",
            ],
            &generation,
        );
    }
    let server: Vec<Vec<String>> = records
        .iter()
        .filter_map(|r| {
            let s = r.server?;
            Some(vec![
                model(r),
                r.agent.clone(),
                format!("{:.1}", s.target_qps),
                format!("{:.1}", s.achieved_qps),
                format!("{:.2}", r.latency_ms.p99),
                format!("{:.2}", s.p99_bound_ms),
                if s.bound_met {
                    "yes".into()
                } else {
                    "no".into()
                },
                s.peak_qps.map_or_else(|| "-".into(), |p| format!("{p:.1}")),
            ])
        })
        .collect();
    if !server.is_empty() {
        out += "\n";
        out += &table(
            &[
                "MODEL",
                "AGENT",
                "TARGET/S",
                "ACHIEVED/S",
                "P99 MS",
                "BOUND MS",
                "MET",
                "PEAK/S",
            ],
            &server,
        );
    }
    for f in failures {
        out += &failure_line(f);
    }
    out
}

/// `FAILED  model@1 single-stream on edge-a: why`.
fn failure_line(f: &FailedRun) -> String {
    let model = if f.model_version.is_empty() {
        f.model.clone()
    } else {
        format!("{}@{}", f.model, f.model_version)
    };
    format!(
        "FAILED  {model} {} on {}: {}\n",
        f.scenario, f.agent, f.error
    )
}

/// A scenario's name as a narrow table shows it (`single-stream` → `single`).
pub fn short_scenario(scenario: &str) -> &str {
    scenario.strip_suffix("-stream").unwrap_or(scenario)
}

/// The quality score and what it measured (`0.994 mean cosine`), `failed`, or `-`.
fn quality_brief(r: &ResultRecord) -> String {
    match (&r.quality, &r.quality_error) {
        (Some(q), _) => match crate::analysis::score_metric(q) {
            Some((key, v)) => format!("{v:.3} {}", crate::analysis::quality_label(key)),
            None => r.quality_summary().unwrap_or_default(),
        },
        (None, Some(_)) => "failed".into(),
        (None, None) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_and_trailing_space_goes() {
        let t = super::table(&["A", "LONG"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONG\nwide cell  x\n");
    }

    #[test]
    fn a_table_wider_than_the_terminal_wraps_its_widest_cells() {
        let long = "input_ids, attention_mask, position_ids, past_key_values.0.key, \
                    past_key_values.0.value, past_key_values.1.key, past_key_values.1.value";
        let rows = vec![
            vec!["smollm2-135m@q4".into(), "112.0 MB".into(), long.into()],
            vec![
                "minilm-l6@int8".into(),
                "22.8 MB".into(),
                "input_ids".into(),
            ],
        ];
        let wide = super::table_within(&["MODEL", "SIZE", "INPUTS"], &rows, None);
        assert!(wide.lines().any(|l| l.chars().count() > 100), "{wide}");
        let fitted = super::table_within(&["MODEL", "SIZE", "INPUTS"], &rows, Some(60));
        for line in fitted.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{fitted}");
        }
        // Nothing is lost: every name is still there, some on a line of its own.
        assert!(fitted.contains("past_key_values.1.value"), "{fitted}");
        assert!(fitted.starts_with("MODEL"), "{fitted}");
    }

    #[test]
    fn a_row_wider_than_its_header_keeps_every_cell() {
        let t = super::table(&["A"], &[vec!["1".into(), "extra".into()], vec![]]);
        assert_eq!(t, "A\n1  extra\n\n");
    }
}
