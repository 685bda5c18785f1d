//! Benchmark result records in; a report out: a self-contained HTML page with charts
//! (plotters, inline SVG), each chart as a PNG, a markdown summary, CSV and JSON exports. The [`ResultRecord`] here is the schema of `results.json` and of the admin API's
//! result listing: its field names are DESIGN.md's "Result record".

pub mod analysis;
mod charts;
mod csv;
mod figures;
mod html;
mod markdown;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One agent × model × scenario × setting measurement. Fields not measured yet are `None` and
/// serialize as `null`, never as zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The agent's name.
    pub agent: String,
    pub agent_id: String,
    /// The hardware target key: arch, CPU model, cores, memory.
    pub target: String,
    pub labels: BTreeMap<String, String>,
    pub model: String,
    pub model_version: String,
    pub quantization: String,
    pub model_sha256: String,
    pub model_bytes: u64,
    pub engine: String,
    pub engine_version: String,
    pub execution_provider: String,
    pub threads: u32,
    pub scenario: String,
    pub samples: u64,
    pub duration_s: f64,
    /// Whether the run met its minimum duration and query count.
    pub valid: bool,
    pub load_ms: f64,
    pub first_inference_ms: f64,
    pub latency_ms: LatencyMs,
    pub throughput_per_s: f64,
    pub peak_rss_bytes: u64,
    pub cpu_percent: Option<f64>,
    pub energy_j_per_inference: Option<f64>,
    pub energy_method: Option<String>,
    pub temperature_c: Option<TemperatureC>,
    pub throttled: Option<bool>,
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub prefill_tokens_per_s: Option<f64>,
    pub decode_tokens_per_s: Option<f64>,
    pub quality: Option<BTreeMap<String, f64>>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub run_id: String,
    pub suite: String,
    pub suite_sha256: String,
    pub agent_version: String,
    /// Nearest-rank latency percentiles 0, 1, …, 100 in milliseconds (for distribution charts).
    pub latency_percentiles_ms: Vec<f64>,
    /// Exact bootstrap 95% intervals of p50 and p90, in milliseconds.
    pub latency_ci95_ms: LatencyCi,
    /// The median latency of each repetition of the measured phase.
    pub repetition_medians_ms: Vec<f64>,
    /// Coefficient of variation of those medians (`null` with one repetition).
    pub repetition_cv: Option<f64>,
    /// Every warm latency as a base64 HdrHistogram (V2, deflate; nanoseconds), the format
    /// HdrHistogram's tools read: percentiles can be recomputed and runs merged.
    pub latency_histogram_hdr: String,
    /// Samples per inference call (N for multi-stream, the batch for offline, else 1);
    /// `samples` counts calls and `throughput_per_s` counts samples.
    pub samples_per_query: u32,
    /// How a server-scenario run fared (`null` for other scenarios).
    pub server: Option<ServerOutcome>,
    /// LoadGen-style early stopping for the scenario's target percentile (`null` for offline).
    pub early_stopping: Option<EarlyStopping>,
    /// How often the energy source was read during the run (`null` without a source).
    pub energy_sample_hz: Option<f64>,
    /// Power measured idle before the run (subtracted from the run's energy).
    pub idle_power_w: Option<f64>,
    /// Mean power during the run.
    pub active_power_w: Option<f64>,
    /// Why an energy source that exists gave no number, or a caveat on it.
    pub energy_note: Option<String>,
    /// Seconds the cool-down guard waited before the run.
    pub cool_down_wait_s: f64,
    /// The model `quality` compares against (`name@version`).
    pub quality_reference: Option<String>,
    /// Why a quality check that was asked for gave no numbers.
    pub quality_error: Option<String>,
    /// Provenance: the device's kernel, CPU frequency governor and CPU model at the time.
    pub kernel: String,
    pub cpu_governor: String,
    pub cpu_model: String,
    /// Generate scenario details beyond `ttft_ms`/`tpot_ms` (their p50s): `null` otherwise.
    pub generate: Option<GenerateDetail>,
}

/// A generate run: prompt and generated lengths, tail latencies, and tokenization (excluded
/// from every timing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateDetail {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub ttft_p90_ms: f64,
    pub tpot_p90_ms: f64,
    pub tokenize_ms: f64,
    /// The key/value cache was written in place (one past/present buffer) rather than grown by
    /// a copy every step.
    #[serde(default)]
    pub kv_cache_in_place: bool,
}

/// An upper estimate of the target percentile that holds with the stated confidence given the
/// number of queries run; `estimate_ms` is `null` when there were too few queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub percentile: f64,
    pub confidence: f64,
    pub estimate_ms: Option<f64>,
}

/// A server-scenario run against its p99 bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerOutcome {
    pub target_qps: f64,
    pub achieved_qps: f64,
    pub p99_bound_ms: f64,
    pub bound_met: bool,
    /// The highest rate found that met the bound, when a peak search ran.
    pub peak_qps: Option<f64>,
}

impl ResultRecord {
    /// The quality numbers in one line, e.g. `cosine_mean 0.9938` (minimums left out), or why
    /// the check failed; `None` when none was asked for.
    pub fn quality_summary(&self) -> Option<String> {
        match (&self.quality, &self.quality_error) {
            (Some(q), _) => Some(
                q.iter()
                    .filter(|(k, _)| !k.ends_with("_min"))
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (None, Some(e)) => Some(format!("failed: {e}")),
            (None, None) => None,
        }
    }
}

impl ResultRecord {
    /// The device class the record was measured on, the unit every comparison is made within:
    /// the hardware target (arch, CPU model, cores, memory), the engine and its version, the
    /// execution provider and the thread count, e.g.
    /// `x86_64/Intel Xeon/2c/24GiB · onnxruntime 1.31.1 CPU · 1 thread`.
    pub fn device_class(&self) -> String {
        let threads = if self.threads == 1 {
            "1 thread".to_string()
        } else {
            format!("{} threads", self.threads)
        };
        format!(
            "{} · {} {} {} · {threads}",
            self.target, self.engine, self.engine_version, self.execution_provider
        )
    }

    /// `name@version`.
    pub fn model_ref(&self) -> String {
        format!("{}@{}", self.model, self.model_version)
    }

    /// What was asked of the model: the suite, and for a generative run its prompt length
    /// (`slm-generate · 32-token prompt`). Results of different workloads are never one setting.
    pub fn workload(&self) -> String {
        match &self.generate {
            Some(g) => format!("{} · {}-token prompt", self.suite, g.prompt_tokens),
            None => self.suite.clone(),
        }
    }
}

/// Failed jobs counted as what they are: `no failed job`, `1 failed job`, `2 failed jobs in 1
/// run` (a run is a suite on the selected agents; each job one model, scenario and thread count).
pub fn failed_jobs_in_words(jobs: usize, runs: usize) -> String {
    match (jobs, runs) {
        (0, _) => "no failed job".to_string(),
        (1, _) => "1 failed job".to_string(),
        (jobs, 1) => format!("{jobs} failed jobs in 1 run"),
        (jobs, runs) => format!("{jobs} failed jobs in {runs} runs"),
    }
}

/// 95% confidence intervals, each `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyCi {
    pub p50: [f64; 2],
    pub p90: [f64; 2],
}

/// Warm-latency statistics in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub stddev: f64,
}

/// Temperatures seen during a run, in degrees Celsius.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TemperatureC {
    pub start: f64,
    pub max: f64,
}

/// A benchmark run that produced no measurement, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRun {
    pub agent: String,
    pub model: String,
    pub model_version: String,
    pub scenario: String,
    pub threads: u32,
    pub error: String,
    pub run_id: String,
}

/// An agent as the report describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub name: String,
    pub target: String,
    pub labels: BTreeMap<String, String>,
    /// One line: CPU model, cores, memory, OS, kernel, ONNX Runtime version.
    pub hardware: String,
}

/// Everything a report is drawn from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportInput {
    pub title: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub agents: Vec<AgentSummary>,
    pub records: Vec<ResultRecord>,
    pub failures: Vec<FailedRun>,
    /// Rollouts, newest first, with the gate measurements that decided them.
    pub rollouts: Vec<RolloutSummary>,
    /// Regressions found against baselines or recent history (newest first).
    pub regressions: Vec<RegressionMark>,
    /// The baseline run of each (suite, device class).
    pub baselines: Vec<BaselineMark>,
    /// The quality floor for "best within a quality floor" (e.g. 0.99 = keeps ≥ 99% of the
    /// reference's score, MLPerf's rule); `None` → [`DEFAULT_QUALITY_FLOOR`].
    pub quality_floor: Option<f64>,
}

/// The quality floor when [`ReportInput::quality_floor`] is `None`: 99% of the reference.
pub const DEFAULT_QUALITY_FLOOR: f64 = 0.99;

/// A regression found against a baseline or the recent history of a (model, device class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMark {
    pub id: i64,
    pub run_id: String,
    pub suite: String,
    /// `name@version`.
    pub model: String,
    pub scenario: String,
    /// [`ResultRecord::device_class`].
    pub device_class: String,
    /// p50 | p90 | throughput | ...
    pub metric: String,
    /// new / baseline.
    pub ratio: f64,
    /// The ratio's 95% interval (`None` for drift, judged by `robust_z`).
    pub ci95: Option<[f64; 2]>,
    /// Against the recent history window.
    pub robust_z: Option<f64>,
    /// "baseline" | "drift"
    pub kind: String,
    pub acknowledged: bool,
    /// RFC 3339.
    pub detected_at: String,
}

/// The baseline run of a (suite, device class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineMark {
    pub suite: String,
    /// [`ResultRecord::device_class`].
    pub device_class: String,
    pub run_id: String,
    /// RFC 3339.
    pub set_at: String,
}

/// A rollout as the report shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    pub id: String,
    pub model: String,
    pub state: String,
    pub reason: String,
    pub gate: String,
    pub started_at: String,
    pub agents: usize,
    /// Agents on the rollout's version now (installed, being gated or done).
    pub agents_done: usize,
    pub gates: Vec<GateDecision>,
}

/// One gated metric on one agent: candidate vs the version it would replace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub wave: u32,
    pub agent: String,
    pub metric: String,
    /// The ratio (candidate / active), or the quality; `None` when it could not be measured.
    pub value: Option<f64>,
    pub comparison: String,
    pub limit: f64,
    /// passed | breached | unmeasured
    pub outcome: String,
    pub detail: String,
}

/// The files a report wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub html: PathBuf,
    pub json: PathBuf,
    /// `results.csv`: one row per record, nested fields as dotted columns.
    pub csv: PathBuf,
    /// `summary.md`: llama-bench-style markdown tables per device class.
    pub markdown: PathBuf,
    /// `charts/`, holding each chart of the HTML as `<slug>.png`.
    pub charts_dir: PathBuf,
    pub charts: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw the {chart} chart: {message}")]
    Chart { chart: String, message: String },
}

/// One chart of a report as a page shows it: an `<svg>` element with `role="img"` and its
/// name as `aria-label`, and the numbers it draws as a table.
#[derive(Debug, Clone)]
pub struct ChartView {
    /// Unique among the report's charts (`pareto-1`), for an element id.
    pub slug: String,
    /// `pareto`, `heatmap`, `cdf`, ...
    pub kind: &'static str,
    pub name: String,
    pub svg: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Every chart the report on `input` would have, for a page of the controller's console.
pub fn chart_views(input: &ReportInput) -> Result<Vec<ChartView>, ReportError> {
    html::chart_views(input)
}

/// Writes into `DIR` (created if needed): `report.html` (self-contained, charts as inline SVG),
/// `charts/<slug>.png` (each chart as an image), `summary.md`, `results.csv` and `results.json`
/// (the records as a JSON array). Files are written under a temporary name and renamed, so a
/// reader never sees half a file; PNGs left in `charts/` by an earlier report are removed.
pub fn write_report(dir: &Path, input: &ReportInput) -> Result<ReportFiles, ReportError> {
    let charts_dir = dir.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|source| ReportError::Write {
        path: charts_dir.clone(),
        source,
    })?;
    // The data files are written on a second thread while the charts are drawn: on a store of
    // a hundred thousand results each side takes about as long as the other.
    std::thread::scope(|scope| {
        let data = scope.spawn(|| -> Result<(), ReportError> {
            write_json(&dir.join("results.json"), &input.records)?;
            write_atomically(
                &dir.join("results.csv"),
                csv::to_csv(&input.records).as_bytes(),
            )
        });
        let pages = write_pages(dir, charts_dir, input);
        let data = data
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let files = pages?;
        data?;
        Ok(files)
    })
}

/// The report's pages: charts (PNG), summary.md and report.html.
fn write_pages(
    dir: &Path,
    charts_dir: PathBuf,
    input: &ReportInput,
) -> Result<ReportFiles, ReportError> {
    let (html, figures) = html::render_all(input)?;
    let refs = analysis::references(&input.records);
    let latest = analysis::latest(&input.records);
    let title = match input.title.trim() {
        "" => "Benchmark report",
        t => t,
    };
    let files = ReportFiles {
        html: dir.join("report.html"),
        json: dir.join("results.json"),
        csv: dir.join("results.csv"),
        markdown: dir.join("summary.md"),
        charts: figures
            .all()
            .map(|f| charts_dir.join(format!("{}.png", f.slug)))
            .collect(),
        charts_dir,
    };
    remove_old_pngs(&files.charts_dir)?;
    for (figure, path) in figures.all().zip(&files.charts) {
        let tmp = path.with_extension("tmp.png");
        charts::to_png(&figure.chart, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    }
    let md = markdown::summary(title, &latest, &refs);
    write_atomically(&files.markdown, md.as_bytes())?;
    write_atomically(&files.html, html.as_bytes())?;
    Ok(files)
}

fn remove_old_pngs(dir: &Path) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        if path.extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(&path).map_err(|source| ReportError::Write { path, source })?;
        }
    }
    Ok(())
}

/// `results.json`, streamed (a store's worth of records never sits in memory as one string):
/// pretty-printed up to a thousand records, compact beyond (a third smaller, as fast to read).
fn write_json(path: &Path, records: &[ResultRecord]) -> Result<(), ReportError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(&tmp).map_err(err)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = if records.len() <= 1000 {
        serde_json::to_writer_pretty(&mut out, records)
    } else {
        serde_json::to_writer(&mut out, records)
    };
    written.map_err(|e| err(e.into()))?;
    out.flush().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let tmp = path.with_extension("tmp");
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-21T05:40:33.123Z` (an instant
/// outside the years -9999..=9999 reads as the epoch's nearest end).
pub fn rfc3339(unix_ms: i64) -> String {
    let at = jiff::Timestamp::from_millisecond(unix_ms).unwrap_or(if unix_ms < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    });
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        for (ms, want) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_795_239_633_123, "2026-11-21T05:40:33.123Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(super::rfc3339(ms), want);
        }
    }
}
