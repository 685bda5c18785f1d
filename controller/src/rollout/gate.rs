//! The performance gate, as pure decisions: parsing its limits, the workload both versions run,
//! the medians over alternating rounds, and judging the candidate against the version it
//! replaces on each agent. A gate that cannot measure what it was asked to gate fails closed:
//! the agent's verdict is a breach with the reason, never a pass. Only energy on a device
//! without a sensor is `unmeasured` and does not decide (it is shown as such).

use std::collections::{BTreeMap, HashMap};

use edgefleet_proto::v1::{workload, Measurement, TextInput, Workload};

/// Why a gate's limits were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GateError {
    #[error("gate `{0}` is not METRIC<=RATIOx or quality>=VALUE")]
    Syntax(String),
    #[error("unknown gate metric `{0}` (p50, p90, p99, energy, memory, quality)")]
    UnknownMetric(String),
    #[error("gate `{0}`: quality is gated as quality>=VALUE")]
    QualityComparison(String),
    #[error("gate `{0}`: quality must be a number in (0, 1]")]
    QualityRange(String),
    #[error("gate `{part}`: {metric} is gated as a ratio, {metric}<=RATIOx")]
    RatioComparison { part: String, metric: &'static str },
    #[error("gate `{0}`: the limit must be a ratio such as 1.10x")]
    RatioValue(String),
    #[error("gate metric `{0}` is given twice")]
    MetricTwice(&'static str),
}

/// A gate alternates candidate and active version this many times on each device, so that drift
/// (heat, other load) falls on both alike; each metric is the median over the rounds.
pub const GATE_ROUNDS: usize = 3;

/// A metric the performance gate can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    P50,
    P90,
    P99,
    Energy,
    Memory,
    Quality,
}

impl GateMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            GateMetric::P50 => "p50",
            GateMetric::P90 => "p90",
            GateMetric::P99 => "p99",
            GateMetric::Energy => "energy",
            GateMetric::Memory => "memory",
            GateMetric::Quality => "quality",
        }
    }
}

/// One gated limit: a ratio candidate/active at most `limit` (latency, energy, memory), or the
/// candidate's quality against the active version at least `limit`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateLimit {
    pub metric: GateMetric,
    pub limit: f64,
}

impl GateLimit {
    pub fn comparison(&self) -> &'static str {
        if self.metric == GateMetric::Quality {
            ">="
        } else {
            "<="
        }
    }
}

impl std::fmt::Display for GateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.metric == GateMetric::Quality {
            ""
        } else {
            "x"
        };
        write!(
            f,
            "{}{}{:.2}{unit}",
            self.metric.as_str(),
            self.comparison(),
            self.limit
        )
    }
}

/// Parses `p90<=1.10x,energy<=1.10x,quality>=0.99`.
pub fn parse_gate(spec: &str) -> Result<Vec<GateLimit>, GateError> {
    if spec.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut limits = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (name, op, value) = if let Some((n, v)) = part.split_once("<=") {
            (n, "<=", v)
        } else if let Some((n, v)) = part.split_once(">=") {
            (n, ">=", v)
        } else {
            return Err(GateError::Syntax(part.to_string()));
        };
        let metric = match name.trim() {
            "p50" => GateMetric::P50,
            "p90" => GateMetric::P90,
            "p99" => GateMetric::P99,
            "energy" => GateMetric::Energy,
            "memory" => GateMetric::Memory,
            "quality" => GateMetric::Quality,
            other => return Err(GateError::UnknownMetric(other.to_string())),
        };
        let value = value.trim();
        let limit: f64 = if metric == GateMetric::Quality {
            if op != ">=" {
                return Err(GateError::QualityComparison(part.to_string()));
            }
            value
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0 && *v <= 1.0)
                .ok_or_else(|| GateError::QualityRange(part.to_string()))?
        } else {
            if op != "<=" {
                return Err(GateError::RatioComparison {
                    part: part.to_string(),
                    metric: metric.as_str(),
                });
            }
            value
                .strip_suffix('x')
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| *v > 0.0 && v.is_finite())
                .ok_or_else(|| GateError::RatioValue(part.to_string()))?
        };
        if limits.iter().any(|l: &GateLimit| l.metric == metric) {
            return Err(GateError::MetricTwice(metric.as_str()));
        }
        limits.push(GateLimit { metric, limit });
    }
    Ok(limits)
}

/// How a rollout event that says the gate left an agent (or a wave) uncompared begins; the
/// status lists those events as gate notes, so a gate never skips without a word.
pub const GATE_SKIPPED: &str = "gate not run: ";

/// What a gate benchmark measured for one version on one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub energy_j: Option<f64>,
    pub peak_rss_bytes: u64,
    /// Quality against the other version (the candidate's run only).
    pub quality: Option<f64>,
    /// The quality metric that figure is (`exact_match` for a VAD suite's decisions).
    pub quality_metric: Option<String>,
}

impl Measured {
    /// The gate's figures from a stored measurement; a measurement without latencies cannot be
    /// judged and is an error.
    pub fn from_measurement(m: &Measurement) -> Result<Measured, NoLatency> {
        let latency = m.latency_ms.as_ref().ok_or(NoLatency)?;
        Ok(Measured {
            p50_ms: latency.p50,
            p90_ms: latency.p90,
            p99_ms: latency.p99,
            energy_j: m.energy_j_per_sample,
            peak_rss_bytes: m.peak_rss_bytes,
            quality: gate_quality(&m.quality).map(|(_, v)| v),
            quality_metric: gate_quality(&m.quality).map(|(k, _)| k.to_string()),
        })
    }
}

/// A stored gate measurement that carries no latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the gate benchmark measured no latency")]
pub struct NoLatency;

/// How one gated metric came out on one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    Passed,
    Breached,
    /// Energy on a device without a sensor: shown, and does not decide.
    Unmeasured,
}

impl GateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GateOutcome::Passed => "passed",
            GateOutcome::Breached => "breached",
            GateOutcome::Unmeasured => "unmeasured",
        }
    }
}

impl PartialEq<&str> for GateOutcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A gated metric's outcome on one agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judged {
    pub metric: String,
    pub value: Option<f64>,
    pub comparison: String,
    pub limit: f64,
    pub outcome: GateOutcome,
    pub detail: String,
}

/// Judges the candidate against the active version on one agent. Energy without a sensor is
/// `unmeasured` and does not decide; any other metric that cannot be computed is a breach.
pub fn judge(limits: &[GateLimit], candidate: &Measured, active: &Measured) -> Vec<Judged> {
    limits
        .iter()
        .map(|l| {
            let ratio = |c: f64, a: f64| (c > 0.0 && a > 0.0).then(|| c / a);
            let latency = |c: f64, a: f64| (ratio(c, a), format!("{c:.3} ms vs {a:.3} ms"));
            let (value, detail) = match l.metric {
                GateMetric::P50 => latency(candidate.p50_ms, active.p50_ms),
                GateMetric::P90 => latency(candidate.p90_ms, active.p90_ms),
                GateMetric::P99 => latency(candidate.p99_ms, active.p99_ms),
                GateMetric::Memory => (
                    ratio(
                        candidate.peak_rss_bytes as f64,
                        active.peak_rss_bytes as f64,
                    ),
                    format!(
                        "{:.1} MB vs {:.1} MB",
                        candidate.peak_rss_bytes as f64 / 1e6,
                        active.peak_rss_bytes as f64 / 1e6
                    ),
                ),
                GateMetric::Energy => match (candidate.energy_j, active.energy_j) {
                    (Some(c), Some(a)) => (ratio(c, a), format!("{c:.6} J vs {a:.6} J")),
                    _ => (None, "no energy sensor on this device".to_string()),
                },
                GateMetric::Quality => (
                    candidate.quality,
                    match candidate.quality {
                        Some(_) => format!(
                            "candidate vs active output, {}",
                            candidate
                                .quality_metric
                                .as_deref()
                                .map_or("quality", edgefleet_reports::analysis::quality_label)
                        ),
                        None => "quality was not measured".to_string(),
                    },
                ),
            };
            let outcome = match value {
                None if l.metric == GateMetric::Energy => GateOutcome::Unmeasured,
                None => GateOutcome::Breached,
                Some(v) if l.metric == GateMetric::Quality && v >= l.limit => GateOutcome::Passed,
                Some(v) if l.metric != GateMetric::Quality && v <= l.limit => GateOutcome::Passed,
                Some(_) => GateOutcome::Breached,
            };
            Judged {
                metric: l.metric.as_str().to_string(),
                value,
                comparison: l.comparison().to_string(),
                limit: l.limit,
                outcome,
                detail,
            }
        })
        .collect()
}

/// The one quality figure a gate's `quality>=` limit reads, from whichever metric measured it:
/// mean cosine, top-1 agreement of logits, share of decisions alike, or of text lines read alike.
pub fn gate_quality(values: &HashMap<String, f64>) -> Option<(&'static str, f64)> {
    [
        "cosine_mean",
        "top1_agreement",
        "exact_match",
        "text_exact_match",
    ]
    .into_iter()
    .find_map(|key| values.get(key).map(|v| (key, *v)))
}

/// Each metric's median over the rounds (quality: from the round that measured it).
pub fn median_of(rounds: &[Measured]) -> Option<Measured> {
    if rounds.is_empty() {
        return None;
    }
    let median = |f: &dyn Fn(&Measured) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let energies: Vec<f64> = rounds.iter().filter_map(|m| m.energy_j).collect();
    Some(Measured {
        p50_ms: median(&|m| m.p50_ms),
        p90_ms: median(&|m| m.p90_ms),
        p99_ms: median(&|m| m.p99_ms),
        energy_j: (energies.len() == rounds.len()).then(|| median(&|m| m.energy_j.unwrap_or(0.0))),
        peak_rss_bytes: median(&|m| m.peak_rss_bytes as f64) as u64,
        quality: rounds.iter().find_map(|m| m.quality),
        quality_metric: rounds.iter().find_map(|m| m.quality_metric.clone()),
    })
}

/// One agent's gate rounds as they came back: the candidate's, the active version's, and the
/// errors of rounds that failed or could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentRounds {
    pub candidate: Vec<Measured>,
    pub active: Vec<Measured>,
    pub errors: Vec<String>,
}

/// One agent's gate outcome, as stored (JSON in `rollout_gates.verdicts`) and shown.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentVerdict {
    pub agent_id: String,
    pub passed: bool,
    pub error: String,
    pub judged: Vec<Judged>,
}

/// A wave's gate: every agent's verdict, and the breaches that stop the rollout (empty: passed).
#[derive(Debug, Clone, PartialEq)]
pub struct WaveVerdict {
    pub verdicts: Vec<AgentVerdict>,
    pub breaches: Vec<String>,
}

/// Judges a wave's gate from each agent's rounds (`names` shows agent ids to people). An agent
/// whose rounds are incomplete, or whose quality could not be measured when it was gated, fails.
pub fn judge_wave(
    limits: &[GateLimit],
    rounds: BTreeMap<String, AgentRounds>,
    names: &BTreeMap<String, String>,
) -> WaveVerdict {
    let mut verdicts = Vec::new();
    let mut breaches = Vec::new();
    for (agent_id, r) in rounds {
        let name = names.get(&agent_id).cloned().unwrap_or(agent_id.clone());
        let complete = r.candidate.len() == GATE_ROUNDS && r.active.len() == GATE_ROUNDS;
        let verdict = match (complete, median_of(&r.candidate), median_of(&r.active)) {
            (true, Some(c), Some(a)) => {
                let judged = judge(limits, &c, &a);
                let breached: Vec<String> = judged
                    .iter()
                    .filter(|j| j.outcome == GateOutcome::Breached)
                    .map(|j| match j.value {
                        Some(value) => {
                            let unit = if j.metric == "quality" { "" } else { "x" };
                            format!(
                                "{} {value:.3}{unit} (limit {}{:.2}{unit})",
                                j.metric, j.comparison, j.limit
                            )
                        }
                        None => format!("{} not measured ({})", j.metric, j.detail),
                    })
                    .collect();
                if !breached.is_empty() {
                    breaches.push(format!("{name}: {}", breached.join(", ")));
                }
                AgentVerdict {
                    agent_id,
                    passed: breached.is_empty(),
                    error: r.errors.join("; "),
                    judged,
                }
            }
            _ => {
                let error = if r.errors.is_empty() {
                    "the gate benchmark produced no result".to_string()
                } else {
                    r.errors.join("; ")
                };
                breaches.push(format!("{name}: gate benchmark failed: {error}"));
                AgentVerdict {
                    agent_id,
                    passed: false,
                    error,
                    judged: Vec::new(),
                }
            }
        };
        verdicts.push(verdict);
    }
    WaveVerdict { verdicts, breaches }
}

/// The workload a performance gate runs when the rollout names no suite: the same sentences for
/// both versions, on the same device; the quality check only where asked.
pub fn builtin_workload(quality: bool) -> Workload {
    const SENTENCES: [&str; 6] = [
        "The rollout reached every gateway in the north warehouse before noon.",
        "Edge devices measure latency, memory and energy on their own hardware.",
        "A quantized model should answer as well as the one it replaces.",
        "The camera at the loading dock reports a pallet every few seconds.",
        "Battery powered sensors wake up, send a reading and go back to sleep.",
        "Which version of the model is active on this device right now?",
    ];
    let sentences: Vec<String> = SENTENCES.iter().map(|s| s.to_string()).collect();
    Workload {
        scenario: "single-stream".into(),
        threads: 1,
        warmup_queries: 20,
        min_queries: 100,
        min_duration_ms: 1_000,
        max_duration_ms: 10_000,
        repetitions: 1,
        batch: 1,
        quality_metric: if quality {
            "cosine".into()
        } else {
            String::new()
        },
        golden: if quality {
            sentences.clone()
        } else {
            Vec::new()
        },
        input: Some(workload::Input::Text(TextInput {
            sentences,
            sequence_length: 0,
        })),
        ..Workload::default()
    }
}

/// The gate's workload for one version: the suite's (from `--gate-suite`) when the rollout has
/// one, else the built-in sentences; the quality check only where asked.
pub fn workload(from_suite: Option<&Workload>, quality: bool) -> Workload {
    let Some(suite) = from_suite else {
        return builtin_workload(quality);
    };
    let mut workload = suite.clone();
    if !quality {
        workload.quality_metric.clear();
        workload.golden.clear();
        workload.quality_output.clear();
    }
    workload
}

#[cfg(test)]
mod tests;
