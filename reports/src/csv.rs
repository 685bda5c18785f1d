//! `results.csv`: one row per record under a header row, nested values flattened into dotted
//! columns (`latency_ms.p90`, `quality.cosine_mean`), lists joined with `;`, `null` as an empty
//! cell, quoted as RFC 4180 says. The percentile arrays and histograms stay in `results.json`.

use std::collections::BTreeSet;

use crate::ResultRecord;

/// Fields left to `results.json`: per-record arrays of a hundred numbers and the encoded
/// histogram, which no spreadsheet reads and which would make the file several times larger.
#[cfg(test)]
const LEFT_TO_JSON: [&str; 2] = ["latency_percentiles_ms", "latency_histogram_hdr"];

/// A column: its header and how a record's cell reads.
type Column = (String, Box<dyn Fn(&ResultRecord) -> String>);

fn num(v: f64) -> String {
    v.to_string()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

fn joined(values: &[f64]) -> String {
    values
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(";")
}

/// Every column but the quality ones, in the record's field order; nested values are dotted.
fn fixed_columns() -> (Vec<Column>, Vec<Column>) {
    fn col(name: &str, cell: impl Fn(&ResultRecord) -> String + 'static) -> Column {
        (name.to_string(), Box::new(cell))
    }
    let before_quality = vec![
        col("agent", |r| r.agent.clone()),
        col("agent_id", |r| r.agent_id.clone()),
        col("target", |r| r.target.clone()),
        col("labels", |r| {
            (r.labels.iter())
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        }),
        col("model", |r| r.model.clone()),
        col("model_version", |r| r.model_version.clone()),
        col("quantization", |r| r.quantization.clone()),
        col("model_sha256", |r| r.model_sha256.clone()),
        col("model_bytes", |r| r.model_bytes.to_string()),
        col("engine", |r| r.engine.clone()),
        col("engine_version", |r| r.engine_version.clone()),
        col("execution_provider", |r| r.execution_provider.clone()),
        col("threads", |r| r.threads.to_string()),
        col("scenario", |r| r.scenario.clone()),
        col("samples", |r| r.samples.to_string()),
        col("duration_s", |r| num(r.duration_s)),
        col("valid", |r| r.valid.to_string()),
        col("load_ms", |r| num(r.load_ms)),
        col("first_inference_ms", |r| num(r.first_inference_ms)),
        col("latency_ms.p50", |r| num(r.latency_ms.p50)),
        col("latency_ms.p90", |r| num(r.latency_ms.p90)),
        col("latency_ms.p95", |r| num(r.latency_ms.p95)),
        col("latency_ms.p99", |r| num(r.latency_ms.p99)),
        col("latency_ms.p999", |r| num(r.latency_ms.p999)),
        col("latency_ms.max", |r| num(r.latency_ms.max)),
        col("latency_ms.mean", |r| num(r.latency_ms.mean)),
        col("latency_ms.stddev", |r| num(r.latency_ms.stddev)),
        col("throughput_per_s", |r| num(r.throughput_per_s)),
        col("peak_rss_bytes", |r| r.peak_rss_bytes.to_string()),
        col("cpu_percent", |r| opt(r.cpu_percent)),
        col("energy_j_per_inference", |r| opt(r.energy_j_per_inference)),
        col("energy_method", |r| opt(r.energy_method.as_ref())),
        col("temperature_c.start", |r| {
            opt(r.temperature_c.map(|t| t.start))
        }),
        col("temperature_c.max", |r| opt(r.temperature_c.map(|t| t.max))),
        col("throttled", |r| opt(r.throttled)),
        col("ttft_ms", |r| opt(r.ttft_ms)),
        col("tpot_ms", |r| opt(r.tpot_ms)),
        col("prefill_tokens_per_s", |r| opt(r.prefill_tokens_per_s)),
        col("decode_tokens_per_s", |r| opt(r.decode_tokens_per_s)),
    ];
    let after_quality = vec![
        col("started_at", |r| r.started_at.clone()),
        col("run_id", |r| r.run_id.clone()),
        col("suite", |r| r.suite.clone()),
        col("suite_sha256", |r| r.suite_sha256.clone()),
        col("agent_version", |r| r.agent_version.clone()),
        col("latency_ci95_ms.p50", |r| joined(&r.latency_ci95_ms.p50)),
        col("latency_ci95_ms.p90", |r| joined(&r.latency_ci95_ms.p90)),
        col("repetition_medians_ms", |r| {
            joined(&r.repetition_medians_ms)
        }),
        col("repetition_cv", |r| opt(r.repetition_cv)),
        col("samples_per_query", |r| r.samples_per_query.to_string()),
        col("server.target_qps", |r| opt(r.server.map(|s| s.target_qps))),
        col("server.achieved_qps", |r| {
            opt(r.server.map(|s| s.achieved_qps))
        }),
        col("server.p99_bound_ms", |r| {
            opt(r.server.map(|s| s.p99_bound_ms))
        }),
        col("server.bound_met", |r| opt(r.server.map(|s| s.bound_met))),
        col("server.peak_qps", |r| {
            opt(r.server.and_then(|s| s.peak_qps))
        }),
        col("early_stopping.percentile", |r| {
            opt(r.early_stopping.map(|e| e.percentile))
        }),
        col("early_stopping.confidence", |r| {
            opt(r.early_stopping.map(|e| e.confidence))
        }),
        col("early_stopping.estimate_ms", |r| {
            opt(r.early_stopping.and_then(|e| e.estimate_ms))
        }),
        col("energy_sample_hz", |r| opt(r.energy_sample_hz)),
        col("idle_power_w", |r| opt(r.idle_power_w)),
        col("active_power_w", |r| opt(r.active_power_w)),
        col("energy_note", |r| opt(r.energy_note.as_ref())),
        col("cool_down_wait_s", |r| num(r.cool_down_wait_s)),
        col("quality_reference", |r| opt(r.quality_reference.as_ref())),
        col("quality_error", |r| opt(r.quality_error.as_ref())),
        col("kernel", |r| r.kernel.clone()),
        col("cpu_governor", |r| r.cpu_governor.clone()),
        col("cpu_model", |r| r.cpu_model.clone()),
        col("generate.prompt_tokens", |r| {
            opt(r.generate.map(|g| g.prompt_tokens))
        }),
        col("generate.generated_tokens", |r| {
            opt(r.generate.map(|g| g.generated_tokens))
        }),
        col("generate.ttft_p90_ms", |r| {
            opt(r.generate.map(|g| g.ttft_p90_ms))
        }),
        col("generate.tpot_p90_ms", |r| {
            opt(r.generate.map(|g| g.tpot_p90_ms))
        }),
        col("generate.tokenize_ms", |r| {
            opt(r.generate.map(|g| g.tokenize_ms))
        }),
        col("generate.kv_cache_in_place", |r| {
            opt(r.generate.map(|g| g.kv_cache_in_place))
        }),
    ];
    (before_quality, after_quality)
}

/// The records as CSV text (CRLF line ends, a header row even without records): one column per
/// field, nested values as dotted columns (`latency_ms.p90`), one `quality.KEY` column per
/// quality key any record has, lists joined with `;`, `null` as an empty cell.
pub(crate) fn to_csv(records: &[ResultRecord]) -> String {
    let (before, after) = fixed_columns();
    let quality_keys: BTreeSet<&String> = records
        .iter()
        .filter_map(|r| r.quality.as_ref())
        .flat_map(|q| q.keys())
        .collect();
    let quality: Vec<Column> = quality_keys
        .into_iter()
        .map(|key| {
            let k = key.clone();
            let cell: Box<dyn Fn(&ResultRecord) -> String> =
                Box::new(move |r| opt(r.quality.as_ref().and_then(|q| q.get(&k))));
            (format!("quality.{key}"), cell)
        })
        .collect();
    let columns: Vec<&Column> = before.iter().chain(&quality).chain(&after).collect();
    let mut out = String::with_capacity(records.len() * 700 + 2048);
    for (i, (name, _)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_cell(&mut out, name);
    }
    out.push_str("\r\n");
    for r in records {
        for (i, (_, cell)) in columns.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_cell(&mut out, &cell(r));
        }
        out.push_str("\r\n");
    }
    out
}

/// Appends a cell, quoted when it holds a comma, a quote or a line break (quotes doubled).
fn push_cell(out: &mut String, cell: &str) {
    if cell.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&cell.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

/// The top-level field names of a record, in declaration order: a test checks them against
/// what serde writes and that each has its columns.
#[cfg(test)]
const RECORD_FIELDS: [&str; 56] = [
    "agent",
    "agent_id",
    "target",
    "labels",
    "model",
    "model_version",
    "quantization",
    "model_sha256",
    "model_bytes",
    "engine",
    "engine_version",
    "execution_provider",
    "threads",
    "scenario",
    "samples",
    "duration_s",
    "valid",
    "load_ms",
    "first_inference_ms",
    "latency_ms",
    "throughput_per_s",
    "peak_rss_bytes",
    "cpu_percent",
    "energy_j_per_inference",
    "energy_method",
    "temperature_c",
    "throttled",
    "ttft_ms",
    "tpot_ms",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "quality",
    "started_at",
    "run_id",
    "suite",
    "suite_sha256",
    "agent_version",
    "latency_percentiles_ms",
    "latency_ci95_ms",
    "repetition_medians_ms",
    "repetition_cv",
    "latency_histogram_hdr",
    "samples_per_query",
    "server",
    "early_stopping",
    "energy_sample_hz",
    "idle_power_w",
    "active_power_w",
    "energy_note",
    "cool_down_wait_s",
    "quality_reference",
    "quality_error",
    "kernel",
    "cpu_governor",
    "cpu_model",
    "generate",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_as_rfc_4180_says() {
        let quote = |cell: &str| {
            let mut out = String::new();
            push_cell(&mut out, cell);
            out
        };
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn every_field_has_its_columns() {
        let mut record = crate::html::tests::record("a", "m", 1.0, 1);
        record.quality = Some([("cosine_mean".to_string(), 0.99)].into());
        let value = serde_json::to_value(&record).unwrap();
        let mut written: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = RECORD_FIELDS.to_vec();
        written.sort_unstable();
        listed.sort_unstable();
        assert_eq!(written, listed, "RECORD_FIELDS is what serde writes");
        let csv = to_csv(&[record]);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        for field in RECORD_FIELDS.iter().filter(|f| !LEFT_TO_JSON.contains(f)) {
            assert!(
                header
                    .iter()
                    .any(|h| h == field || h.starts_with(&format!("{field}."))),
                "no column for {field}"
            );
        }
        assert!(header.contains(&"quality.cosine_mean"));
        assert_eq!(csv.lines().count(), 2);
    }

    #[test]
    fn an_empty_file_still_has_the_header() {
        let csv = to_csv(&[]);
        assert!(csv.starts_with("agent,agent_id,target,labels,"), "{csv}");
        assert!(csv.ends_with("generate.kv_cache_in_place\r\n"), "{csv}");
        assert_eq!(csv.matches("\r\n").count(), 1);
    }
}
