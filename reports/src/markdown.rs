//! `summary.md`: the newest result of each setting as markdown tables in llama-bench's style
//! (`| model | size | ... |`, numbers right-aligned), one table per device class, then the
//! generative runs.

use std::collections::BTreeSet;

use crate::analysis::quality_cell;
use crate::charts::{fmt_mb, fmt_num};
use crate::ResultRecord;

/// The summary as markdown; says so when there are no results.
pub(crate) fn summary(title: &str, latest: &[&ResultRecord], refs: &BTreeSet<String>) -> String {
    let mut out = format!("# {}\n\n", cell(title));
    if latest.is_empty() {
        out += "No results: the store holds no benchmark result for this selection yet.\n";
        return out;
    }
    let mut classes: Vec<String> = Vec::new();
    for r in latest {
        if !classes.contains(&r.device_class()) {
            classes.push(r.device_class());
        }
    }
    for class in &classes {
        out += &format!("## {}\n\n", cell(class));
        let head = [
            ("model", false),
            ("quant", false),
            ("size", true),
            ("suite", false),
            ("scenario", false),
            ("threads", true),
            ("p50 ms", true),
            ("p90 ms", true),
            ("throughput/s", true),
            ("peak MB", true),
            ("quality", true),
        ];
        let rows: Vec<Vec<String>> = (latest.iter())
            .filter(|r| r.device_class() == *class)
            .map(|r| {
                vec![
                    r.model_ref(),
                    r.quantization.clone(),
                    format!("{} MB", fmt_mb(r.model_bytes as f64 / 1e6)),
                    r.workload(),
                    r.scenario.clone(),
                    r.threads.to_string(),
                    fmt_num(r.latency_ms.p50),
                    fmt_num(r.latency_ms.p90),
                    fmt_num(r.throughput_per_s),
                    fmt_mb(r.peak_rss_bytes as f64 / 1e6),
                    quality_cell(r, refs).replace('–', "-"),
                ]
            })
            .collect();
        out += &table(&head, &rows);
        out += "\n";
    }
    let generative: Vec<Vec<String>> = (latest.iter())
        .filter(|r| r.ttft_ms.is_some() || r.generate.is_some())
        .map(|r| {
            let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), fmt_num);
            vec![
                r.model_ref(),
                r.agent.clone(),
                r.threads.to_string(),
                opt(r.ttft_ms),
                opt(r.tpot_ms),
                opt(r.decode_tokens_per_s),
            ]
        })
        .collect();
    if !generative.is_empty() {
        out += "## Generation\n\n";
        let head = [
            ("model", false),
            ("agent", false),
            ("threads", true),
            ("TTFT ms", true),
            ("TPOT ms", true),
            ("decode t/s", true),
        ];
        out += &table(&head, &generative);
    }
    out
}

/// A markdown table padded to aligned columns, numeric columns right-aligned (`---:`).
fn table(head: &[(&str, bool)], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            let cells = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| cell(c).chars().count());
            cells
                .chain([head[i].0.chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = (cells.iter().zip(head).zip(&widths))
            .map(|((c, (_, numeric)), w)| {
                if *numeric {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(head.iter().map(|(h, _)| h.to_string()).collect());
    let rule: Vec<String> = (head.iter().zip(&widths))
        .map(|((_, numeric), w)| {
            if *numeric {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(*w)
            }
        })
        .collect();
    out += &format!("| {} |\n", rule.join(" | "));
    for row in rows {
        out += &line(row.iter().map(|c| cell(c)).collect());
    }
    out
}

/// A cell's text with `|` escaped and line breaks as spaces.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_like_llama_bench() {
        let t = super::table(
            &[("model", false), ("t/s", true)],
            &[vec!["a|b".into(), "12.5".into()]],
        );
        assert_eq!(t, "| model |  t/s |\n| ----- | ---: |\n| a\\|b  | 12.5 |\n");
    }
}
