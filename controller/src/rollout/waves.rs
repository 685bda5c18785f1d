//! Waves: how many agents each wave takes (cumulative counts or percentages ending at 100%),
//! which agent falls in which wave, and how a wave is judged from its targets' states.

use super::state::TargetState;

/// Why a wave list or a threshold was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WaveError {
    #[error("{what} `{text}` is not a number or a percentage")]
    NotAnAmount { what: &'static str, text: String },
    #[error("{what} `{text}` must be above 0% and at most 100%")]
    PercentOutOfRange { what: &'static str, text: String },
    #[error("{what} must be at least 1")]
    ZeroCount { what: &'static str },
    #[error("the wave list `{0}` must end at 100% so that every selected agent is reached")]
    WavesNotComplete(String),
    #[error("waves are cumulative and must grow: `{spec}` goes from {from}% to {to}%")]
    WavesShrink { spec: String, from: f64, to: f64 },
}

/// A threshold given as a count or a percentage of a whole.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Count(u32),
    Percent(f64),
}

impl Amount {
    /// Parses `3` or `10%` (0 < percent ≤ 100); `what` names it in errors.
    pub fn parse(s: &str, what: &'static str) -> Result<Amount, WaveError> {
        let s = s.trim();
        let not_a_number = || WaveError::NotAnAmount {
            what,
            text: s.to_string(),
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| not_a_number())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(WaveError::PercentOutOfRange {
                    what,
                    text: s.to_string(),
                });
            }
            Ok(Amount::Percent(p))
        } else {
            let n: u32 = s.parse().map_err(|_| not_a_number())?;
            if n == 0 {
                return Err(WaveError::ZeroCount { what });
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

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses a wave list (`10%,50%,100%` or `1,5,100%`): cumulative, increasing, ending at 100%.
pub fn parse_waves(spec: &str) -> Result<Vec<Amount>, WaveError> {
    if spec.trim().is_empty() {
        return Ok(vec![Amount::Percent(100.0)]);
    }
    let waves = spec
        .split(',')
        .map(|w| Amount::parse(w, "wave"))
        .collect::<Result<Vec<_>, _>>()?;
    if waves.last() != Some(&Amount::Percent(100.0)) {
        return Err(WaveError::WavesNotComplete(spec.to_string()));
    }
    for pair in waves.windows(2) {
        if let (Amount::Percent(from), Amount::Percent(to)) = (pair[0], pair[1]) {
            if to <= from {
                return Err(WaveError::WavesShrink {
                    spec: spec.to_string(),
                    from,
                    to,
                });
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
    pub fn from_states(states: impl IntoIterator<Item = TargetState>) -> WaveCounts {
        let mut c = WaveCounts::default();
        for s in states {
            c.size += 1;
            match s {
                TargetState::Installed | TargetState::Gating | TargetState::Done => {
                    c.succeeded += 1
                }
                TargetState::Failed => c.failed += 1,
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
            let err = parse_waves(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
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
}
