//! Results as plain-text tables for a terminal: the summary the CLI and `edgefleet-agent bench`
//! print, with generation and server-scenario tables when there are such runs.

use crate::{FailedRun, ResultRecord};

/// Aligned columns under a header, one line per row, trailing spaces trimmed. A row may have
/// more (or fewer) cells than the header: the table grows a column rather than losing a cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    use comfy_table::{presets::NOTHING, ContentArrangement, Table};
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    // No left margin, two spaces between columns.
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        out += line.trim_end();
        out += "\n";
    }
    out
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
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                model(r),
                r.agent.clone(),
                r.engine.clone(),
                r.scenario.clone(),
                r.threads.to_string(),
                r.samples.to_string(),
                format!("{:.2}", r.latency_ms.p50),
                format!("{:.2}", r.latency_ms.p90),
                format!("{:.2}", r.latency_ms.p99),
                format!("{:.1}", r.throughput_per_s),
                format!("{:.1}", r.peak_rss_bytes as f64 / 1e6),
                if r.valid { "yes".into() } else { "no".into() },
                r.quality_summary().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "MODEL",
            "AGENT",
            "ENGINE",
            "SCENARIO",
            "THREADS",
            "SAMPLES",
            "P50 MS",
            "P90 MS",
            "P99 MS",
            "THROUGHPUT/S",
            "PEAK MB",
            "VALID",
            "QUALITY",
        ],
        &rows,
    );
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
        let model = if f.model_version.is_empty() {
            f.model.clone()
        } else {
            format!("{}@{}", f.model, f.model_version)
        };
        out += &format!(
            "FAILED  {model} {} on {}: {}\n",
            f.scenario, f.agent, f.error
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_and_trailing_space_goes() {
        let t = super::table(&["A", "LONG"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(t, "A          LONG\nwide cell  x\n");
    }

    #[test]
    fn a_row_wider_than_its_header_keeps_every_cell() {
        let t = super::table(&["A"], &[vec!["1".into(), "extra".into()], vec![]]);
        assert_eq!(t, "A\n1  extra\n\n");
    }
}
