//! The top of the report: a card per device class (fastest, smallest, best within the quality
//! floor, what each quantization gives up), the short results table and every field of every
//! result in a box that scrolls sideways.

use std::collections::BTreeSet;

use super::{esc, table, table_in};
use crate::analysis::{quality_cell, quality_score, quality_score_label, ClassSummary};
use crate::charts::{fmt_mb, fmt_num};
use crate::ResultRecord;

/// Rows of the every-result table at most (the newest): a page of a hundred thousand rows is
/// unreadable and too heavy to open; the files beside the report hold every result.
pub(crate) const DETAIL_ROWS: usize = 1000;

/// One card per device class.
pub(super) fn summary_section(
    out: &mut String,
    summaries: &[ClassSummary],
    refs: &BTreeSet<String>,
    floor: f64,
) {
    *out += "<h2>Summary</h2>\n";
    if summaries.is_empty() {
        *out += "<p class=\"empty\">No results: the store holds no benchmark result for this \
                 selection yet, so there is nothing to summarize or chart.</p>\n";
        return;
    }
    let pct = format!("{:.0}%", floor * 100.0);
    *out += &format!(
        "<p>Per device class (hardware, engine, execution provider, threads), in the scenario \
         most of its results ran. Quality is the share of the reference model's answers kept, \
         named by what the suite measured (top-1 agreement, mean cosine, decisions alike, text \
         lines read alike); the floor is {pct}.</p>\n<div class=\"cards\">\n"
    );
    for s in summaries {
        *out += "<div class=\"card\">\n<h3>";
        let parts: Vec<String> = (s.class.split(" · "))
            .map(|p| format!("<span class=\"nowrap\">{}</span>", esc(p)))
            .collect();
        *out += &parts.join(" · ");
        *out += &format!(
            "</h3>\n<div class=\"muted\">scenario {}</div>\n<dl>\n",
            esc(&s.scenario)
        );
        let line = |r: &ResultRecord, extra: String| {
            format!(
                "<span class=\"nowrap\">{}</span> {} · p90 {} ms{extra}",
                esc(&r.model_ref()),
                esc(&format!("({})", r.quantization)),
                fmt_num(r.latency_ms.p90)
            )
        };
        let dd = |v: Option<String>| v.unwrap_or_else(|| "<span class=\"muted\">–</span>".into());
        *out += &format!(
            "<dt>Fastest</dt><dd>{}</dd>\n",
            dd(s.fastest.map(|r| line(r, String::new())))
        );
        *out += &format!(
            "<dt>Smallest</dt><dd>{}</dd>\n",
            dd(s.smallest
                .map(|r| line(r, format!(" · {} MB", fmt_mb(r.model_bytes as f64 / 1e6)))))
        );
        let best = match s.best_within_floor {
            Some((r, q)) => line(
                r,
                match quality_score_label(r, refs) {
                    Some(words) => format!(" · quality {q:.3} ({words})"),
                    None => format!(" · quality {q:.3}"),
                },
            ),
            None if s.fastest.is_some_and(|_| summaries_have_quality(s, refs)) => {
                format!("<span class=\"muted\">no model keeps {pct}</span>")
            }
            None => "<span class=\"muted\">quality not measured</span>".into(),
        };
        *out += &format!("<dt>Best ≥ {pct}</dt><dd>{best}</dd>\n");
        if !s.tradeoffs.is_empty() {
            *out += "<dt>Quantization</dt><dd><ul>\n";
            for t in &s.tradeoffs {
                let quality = match t.quality {
                    Some(q) => format!(
                        ", quality {q:.3} ({:+.1}%{})",
                        (q - 1.0) * 100.0,
                        quality_score_label(t.variant, refs)
                            .map_or_else(String::new, |w| format!(", {w}"))
                    ),
                    None => ", quality not measured".into(),
                };
                *out += &format!(
                    "<li><span class=\"nowrap\">{} {}</span> vs {}: {}× smaller, {}× {} (p90){}</li>\n",
                    esc(&t.variant.model),
                    esc(&t.variant.quantization),
                    esc(&t.reference.quantization),
                    fmt_num(t.smaller),
                    fmt_num(if t.faster >= 1.0 { t.faster } else { 1.0 / t.faster }),
                    if t.faster >= 1.0 { "faster" } else { "slower" },
                    esc(&quality),
                );
            }
            *out += "</ul></dd>\n";
        }
        *out += "</dl>\n</div>\n";
    }
    *out += "</div>\n";
}

/// Whether any record of the class's scenario has a quality score.
fn summaries_have_quality(s: &ClassSummary, refs: &BTreeSet<String>) -> bool {
    [s.fastest, s.smallest]
        .into_iter()
        .flatten()
        .chain(s.tradeoffs.iter().map(|t| t.variant))
        .any(|r| quality_score(r, refs).is_some())
}

/// The short table (newest result of each setting), then every result with every column.
pub(super) fn results_section(
    out: &mut String,
    records: &[ResultRecord],
    newest: &[&ResultRecord],
    refs: &BTreeSet<String>,
) {
    *out += "<h2>Results</h2>\n";
    if records.is_empty() {
        *out += "<p class=\"empty\">No results: no benchmark run has finished yet.</p>\n";
        return;
    }
    let head = [
        ("agent", false),
        ("model", false),
        ("quant", false),
        ("suite", false),
        ("scenario", false),
        ("threads", true),
        ("p50 ms", true),
        ("p90 ms", true),
        ("throughput /s", true),
        ("peak MB", true),
        ("quality", true),
    ];
    let rows = newest.iter().map(|r| {
        vec![
            esc(&r.agent),
            esc(&r.model_ref()),
            esc(&r.quantization),
            esc(&r.workload()),
            esc(&r.scenario),
            r.threads.to_string(),
            fmt_num(r.latency_ms.p50),
            fmt_num(r.latency_ms.p90),
            fmt_num(r.throughput_per_s),
            fmt_mb(r.peak_rss_bytes as f64 / 1e6),
            esc(&quality_cell(r, refs)),
        ]
    });
    table(out, &head, rows);
    let shown = &records[records.len().saturating_sub(DETAIL_ROWS)..];
    let note = if shown.len() < records.len() {
        format!(
            "The newest {} of {} results; every one is in results.csv and results.json beside this file. The box scrolls sideways and down.",
            shown.len(),
            records.len()
        )
    } else {
        "The box scrolls sideways and down.".to_string()
    };
    *out += &format!(
        "<h3>Every result, every measurement ({})</h3>\n<p class=\"muted\">{note}</p>\n",
        records.len()
    );
    let head = [
        ("agent", false),
        ("model", false),
        ("quant", false),
        ("scenario", false),
        ("threads", true),
        ("run", false),
        ("started", false),
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
        ("model MB", true),
        ("load ms", true),
        ("first inference ms", true),
        ("energy J/inference", true),
        ("quality", false),
        ("device class", false),
    ];
    let rows = shown.iter().map(|r| {
        let valid = if r.valid {
            "yes"
        } else {
            "<span class=\"bad\">no</span>"
        };
        vec![
            esc(&r.agent),
            esc(&r.model_ref()),
            esc(&r.quantization),
            esc(&r.scenario),
            r.threads.to_string(),
            esc(&r.run_id),
            esc(&r.started_at),
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
            fmt_mb(r.model_bytes as f64 / 1e6),
            fmt_num(r.load_ms),
            fmt_num(r.first_inference_ms),
            r.energy_j_per_inference.map_or_else(
                || {
                    format!(
                        "not measured ({})",
                        esc(r.energy_method.as_deref().unwrap_or("none"))
                    )
                },
                fmt_num,
            ),
            quality_text(r),
            esc(&r.device_class()),
        ]
    });
    table_in(out, "scroll tall", &head, &[], rows);
}

/// "cosine_mean 0.9938 vs minilm-l6@fp32", escaped, or "–".
pub(super) fn quality_text(r: &ResultRecord) -> String {
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
pub(super) fn fmt_interval([low, high]: [f64; 2]) -> String {
    format!("{}–{}", fmt_num(low), fmt_num(high))
}
