//! Pure rollout decisions: parsing what `rollout start` is given (selector, waves, thresholds,
//! gate), splitting the selected agents into waves, deciding what a rollout does next from the
//! state of its targets, and judging a performance gate from measured ratios. No I/O here; the
//! [`crate::rollout_driver`] carries the decisions out and keeps the state in SQLite.

use crate::planning::{self, Condition};

/// A threshold given as a count or a percentage of a whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(u32),
    Percent(f64),
}

impl Amount {
    /// Parses `3` or `10%` (0 < percent ≤ 100).
    pub fn parse(s: &str, what: &str) -> Result<Amount, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{what} `{s}` is not a number or a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("{what} `{s}` must be above 0% and at most 100%"));
            }
            Ok(Amount::Percent(p))
        } else {
            let n: u32 = s
                .parse()
                .map_err(|_| format!("{what} `{s}` is not a number or a percentage"))?;
            if n == 0 {
                return Err(format!("{what} must be at least 1"));
            }
            Ok(Amount::Count(n))
        }
    }

    /// The amount out of `whole`, rounded up (a percentage of a non-empty whole is at least 1).
    pub fn of(self, whole: usize) -> usize {
        match self {
            Amount::Count(n) => (n as usize).min(whole),
            Amount::Percent(p) => ((p / 100.0 * whole as f64) - 1e-9).ceil().max(0.0) as usize,
        }
    }
}

/// Parses a selector expression: `key=value` / `key!=value` conditions joined by commas, all of
/// which must hold (`hw=rpi5,site!=lab`).
pub fn parse_selector(expr: &str) -> Result<Vec<Condition>, String> {
    if expr.trim().is_empty() {
        return Ok(Vec::new());
    }
    expr.split(',').map(planning::parse_condition).collect()
}

/// Parses a wave list (`10%,50%,100%` or `1,5,100%`): cumulative, increasing, ending at 100%.
pub fn parse_waves(spec: &str) -> Result<Vec<Amount>, String> {
    if spec.trim().is_empty() {
        return Ok(vec![Amount::Percent(100.0)]);
    }
    let waves = spec
        .split(',')
        .map(|w| Amount::parse(w, "wave"))
        .collect::<Result<Vec<_>, _>>()?;
    if waves.last() != Some(&Amount::Percent(100.0)) {
        return Err(format!(
            "the wave list `{spec}` must end at 100% so that every selected agent is reached"
        ));
    }
    for pair in waves.windows(2) {
        if let (Amount::Percent(a), Amount::Percent(b)) = (pair[0], pair[1]) {
            if b <= a {
                return Err(format!(
                    "waves are cumulative and must grow: `{spec}` goes from {a}% to {b}%"
                ));
            }
        }
    }
    Ok(waves)
}

/// The wave each of `n` agents belongs to (agents in a fixed order): wave i takes the agents up
/// to its cumulative size that earlier waves did not. Empty waves are dropped.
pub fn assign_waves(waves: &[Amount], n: usize) -> Vec<u32> {
    let mut bounds: Vec<usize> = Vec::new();
    for w in waves {
        let upto = w.of(n).max(bounds.last().copied().unwrap_or(0));
        if bounds.last() != Some(&upto) && upto > 0 {
            bounds.push(upto);
        }
    }
    (0..n)
        .map(|i| {
            bounds
                .iter()
                .position(|&b| i < b)
                .unwrap_or(bounds.len() - 1) as u32
        })
        .collect()
}

/// A metric the performance gate can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// Parses `p90<=1.10x,energy<=1.10x,quality>=0.99`.
pub fn parse_gate(spec: &str) -> Result<Vec<GateLimit>, String> {
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
            return Err(format!(
                "gate `{part}` is not METRIC<=RATIOx or quality>=VALUE"
            ));
        };
        let metric = match name.trim() {
            "p50" => GateMetric::P50,
            "p90" => GateMetric::P90,
            "p99" => GateMetric::P99,
            "energy" => GateMetric::Energy,
            "memory" => GateMetric::Memory,
            "quality" => GateMetric::Quality,
            other => {
                return Err(format!(
                    "unknown gate metric `{other}` (p50, p90, p99, energy, memory, quality)"
                ))
            }
        };
        let value = value.trim();
        let limit: f64 = if metric == GateMetric::Quality {
            if op != ">=" {
                return Err(format!("gate `{part}`: quality is gated as quality>=VALUE"));
            }
            value
                .parse()
                .ok()
                .filter(|v: &f64| *v > 0.0 && *v <= 1.0)
                .ok_or_else(|| format!("gate `{part}`: quality must be a number in (0, 1]"))?
        } else {
            if op != "<=" {
                return Err(format!(
                    "gate `{part}`: {} is gated as a ratio, {}<=RATIOx",
                    metric.as_str(),
                    metric.as_str()
                ));
            }
            value
                .strip_suffix('x')
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| *v > 0.0 && v.is_finite())
                .ok_or_else(|| format!("gate `{part}`: the limit must be a ratio such as 1.10x"))?
        };
        if limits.iter().any(|l: &GateLimit| l.metric == metric) {
            return Err(format!("gate metric `{}` is given twice", metric.as_str()));
        }
        limits.push(GateLimit { metric, limit });
    }
    Ok(limits)
}

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
}

/// A gated metric's outcome on one agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judged {
    pub metric: String,
    pub value: Option<f64>,
    pub comparison: String,
    pub limit: f64,
    /// passed | breached | unmeasured
    pub outcome: String,
    pub detail: String,
}

/// Judges the candidate against the active version on one agent. An unmeasurable metric
/// (no energy sensor) is reported as such and does not decide.
pub fn judge(limits: &[GateLimit], candidate: &Measured, active: &Measured) -> Vec<Judged> {
    limits
        .iter()
        .map(|l| {
            let ratio = |c: f64, a: f64| (c > 0.0 && a > 0.0).then(|| c / a);
            let (value, detail) = match l.metric {
                GateMetric::P50 => (
                    ratio(candidate.p50_ms, active.p50_ms),
                    format!("{:.3} ms vs {:.3} ms", candidate.p50_ms, active.p50_ms),
                ),
                GateMetric::P90 => (
                    ratio(candidate.p90_ms, active.p90_ms),
                    format!("{:.3} ms vs {:.3} ms", candidate.p90_ms, active.p90_ms),
                ),
                GateMetric::P99 => (
                    ratio(candidate.p99_ms, active.p99_ms),
                    format!("{:.3} ms vs {:.3} ms", candidate.p99_ms, active.p99_ms),
                ),
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
                    "candidate vs active output, mean cosine".to_string(),
                ),
            };
            let outcome = match value {
                None => "unmeasured",
                Some(v) if l.metric == GateMetric::Quality && v >= l.limit => "passed",
                Some(v) if l.metric != GateMetric::Quality && v <= l.limit => "passed",
                Some(_) => "breached",
            };
            Judged {
                metric: l.metric.as_str().to_string(),
                value,
                comparison: l.comparison().to_string(),
                limit: l.limit,
                outcome: outcome.to_string(),
                detail,
            }
        })
        .collect()
}

/// A target's state in a rollout.
pub mod state {
    pub const WAITING: &str = "waiting";
    pub const INSTALLING: &str = "installing";
    pub const INSTALLED: &str = "installed";
    pub const GATING: &str = "gating";
    pub const DONE: &str = "done";
    pub const FAILED: &str = "failed";
    pub const ROLLING_BACK: &str = "rolling_back";
    pub const ROLLED_BACK: &str = "rolled_back";
}

/// How a wave stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaveCounts {
    pub size: usize,
    /// Installed and healthy (gated or not).
    pub succeeded: usize,
    pub failed: usize,
    pub in_progress: usize,
}

impl WaveCounts {
    pub fn from_states<'a>(states: impl IntoIterator<Item = &'a str>) -> WaveCounts {
        let mut c = WaveCounts::default();
        for s in states {
            c.size += 1;
            match s {
                state::INSTALLED | state::GATING | state::DONE => c.succeeded += 1,
                state::FAILED => c.failed += 1,
                _ => c.in_progress += 1,
            }
        }
        c
    }
}

/// What to do with a running rollout's current wave.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveDecision {
    /// Keep waiting for installs (or the gate).
    Wait,
    /// Enough agents installed: gate them (if gated) or move to the next wave.
    Advance,
    /// Stop the rollout and roll back this wave, for this reason.
    Abort(String),
}

/// Decides on a wave from its counts, the success threshold and the abort criterion
/// (`failures_so_far` counts the whole rollout; `reached` is how many agents it has reached).
pub fn decide_wave(
    wave: u32,
    counts: WaveCounts,
    success: Amount,
    abort_after: Option<Amount>,
    failures_so_far: usize,
    reached: usize,
) -> WaveDecision {
    if let Some(limit) = abort_after {
        let limit = limit.of(reached).max(1);
        if failures_so_far >= limit {
            return WaveDecision::Abort(format!(
                "{failures_so_far} install(s) failed, reaching the abort criterion of {limit}"
            ));
        }
    }
    let needed = success.of(counts.size).max(1);
    if counts.size - counts.failed < needed {
        return WaveDecision::Abort(format!(
            "wave {} cannot reach its success threshold: {} of {} agents failed, {} must succeed",
            wave + 1,
            counts.failed,
            counts.size,
            needed
        ));
    }
    if counts.succeeded >= needed {
        WaveDecision::Advance
    } else {
        WaveDecision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_split_agents_cumulatively() {
        let w = parse_waves("10%,50%,100%").unwrap();
        assert_eq!(assign_waves(&w, 10), [0, 1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(assign_waves(&w, 1), [0]);
        assert_eq!(assign_waves(&w, 2), [0, 1]);
        let w = parse_waves("1,5,100%").unwrap();
        assert_eq!(assign_waves(&w, 3), [0, 1, 1]);
        assert_eq!(assign_waves(&parse_waves("").unwrap(), 3), [0, 0, 0]);
    }

    #[test]
    fn bad_wave_lists_are_refused() {
        for (bad, why) in [
            ("10%,50%", "must end at 100%"),
            ("50%,10%,100%", "must grow"),
            ("0%,100%", "above 0%"),
            ("x,100%", "not a number"),
            ("0,100%", "at least 1"),
        ] {
            let err = parse_waves(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn gates_parse_and_bad_ones_say_why() {
        let g = parse_gate("p90<=1.10x, energy<=1.2x,quality>=0.99").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(
            g[0],
            GateLimit {
                metric: GateMetric::P90,
                limit: 1.10
            }
        );
        assert_eq!(g[2].comparison(), ">=");
        for (bad, why) in [
            ("latency<=1.1x", "unknown gate metric `latency`"),
            ("p90<=1.1", "ratio such as 1.10x"),
            ("p90>=1.1x", "p90<=RATIOx"),
            ("quality<=0.9", "quality>=VALUE"),
            ("quality>=2", "(0, 1]"),
            ("p90", "not METRIC"),
            ("p90<=1.1x,p90<=1.2x", "twice"),
        ] {
            let err = parse_gate(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_gate_stops_a_slower_candidate_and_passes_a_faster_one() {
        let limits = parse_gate("p90<=1.10x,energy<=1.10x,quality>=0.99").unwrap();
        let fast = Measured {
            p90_ms: 2.0,
            quality: Some(0.994),
            ..Measured::default()
        };
        let slow = Measured {
            p90_ms: 5.0,
            quality: Some(0.994),
            ..Measured::default()
        };
        let judged = judge(&limits, &slow, &fast);
        assert_eq!(judged[0].outcome, "breached");
        assert_eq!(judged[0].value, Some(2.5));
        assert_eq!(judged[1].outcome, "unmeasured");
        assert_eq!(judged[2].outcome, "passed");
        let judged = judge(&limits, &fast, &slow);
        assert!(judged.iter().all(|j| j.outcome != "breached"), "{judged:?}");
        let worse = Measured {
            quality: Some(0.9),
            ..fast.clone()
        };
        assert_eq!(judge(&limits, &worse, &slow)[2].outcome, "breached");
    }

    #[test]
    fn waves_advance_wait_or_abort() {
        let c = |succeeded, failed, in_progress| WaveCounts {
            size: succeeded + failed + in_progress,
            succeeded,
            failed,
            in_progress,
        };
        let all = Amount::Percent(100.0);
        let most = Amount::Percent(95.0);
        assert_eq!(
            decide_wave(0, c(1, 0, 1), all, None, 0, 2),
            WaveDecision::Wait
        );
        assert_eq!(
            decide_wave(0, c(2, 0, 0), all, None, 0, 2),
            WaveDecision::Advance
        );
        assert!(
            matches!(decide_wave(0, c(1, 1, 0), all, None, 1, 2), WaveDecision::Abort(r) if r.contains("cannot reach"))
        );
        // 95% of 20 is 19: one failure is tolerated, two are not.
        assert_eq!(
            decide_wave(1, c(19, 1, 0), most, None, 1, 20),
            WaveDecision::Advance
        );
        assert!(matches!(
            decide_wave(1, c(18, 2, 0), most, None, 2, 20),
            WaveDecision::Abort(_)
        ));
        // An explicit abort criterion counts failures over the whole rollout.
        let two = Some(Amount::Count(2));
        assert!(
            matches!(decide_wave(1, c(5, 1, 4), Amount::Percent(50.0), two, 2, 20), WaveDecision::Abort(r) if r.contains("abort criterion of 2"))
        );
        let tenth = Some(Amount::Percent(10.0));
        assert_eq!(
            decide_wave(1, c(10, 1, 9), Amount::Percent(50.0), tenth, 1, 20),
            WaveDecision::Advance
        );
    }

    #[test]
    fn selectors_join_conditions_with_commas() {
        let conds = parse_selector("hw=rpi5,site!=lab").unwrap();
        assert_eq!(conds.len(), 2);
        assert!(conds[1].negated);
        assert!(parse_selector("hw").is_err());
        assert!(parse_selector("").unwrap().is_empty());
    }
}
