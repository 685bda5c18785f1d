//! What a rollout was asked to do, parsed once from `rollout start` and stored as such: the
//! selector, the waves, the success threshold, the abort criterion, the performance gate's
//! limits and the health check. Past this point nobody reads the flags' text again.

use super::gate::{parse_gate, GateError, GateLimit};
use super::waves::{parse_waves, Amount, WaveError};
use crate::selector::{parse_selector, ConditionError};

/// Why a rollout's flags were refused; each reads as one line for the person who typed them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Selector(#[from] ConditionError),
    #[error(transparent)]
    Waves(#[from] WaveError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("unknown health check `{0}` (smoke, bench, none)")]
    UnknownHealthCheck(String),
}

/// How each install is checked before it counts as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheck {
    /// Load the model and run a few queries.
    Smoke,
    /// The quick suite's single-stream run.
    Bench,
    None,
}

impl HealthCheck {
    /// The name the agent's install command carries.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheck::Smoke => "smoke",
            HealthCheck::Bench => "bench",
            HealthCheck::None => "none",
        }
    }
}

/// The flags of `rollout start`, as typed (empty: the default).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecText<'a> {
    pub select: &'a str,
    pub waves: &'a str,
    pub success: &'a str,
    pub abort_after: &'a str,
    pub gate: &'a str,
    pub health_check: &'a str,
}

/// A rollout's plan, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RolloutSpec {
    /// The selector expression (checked to parse; the targets were chosen with it at start).
    pub select: String,
    /// Cumulative wave sizes, the last one 100%.
    pub waves: Vec<Amount>,
    /// How much of a wave must succeed before the next starts.
    pub success: Amount,
    /// Stop after this many failed installs over the whole rollout.
    pub abort_after: Option<Amount>,
    /// The performance gate's limits; empty: not gated.
    pub gate: Vec<GateLimit>,
    pub health_check: HealthCheck,
}

impl RolloutSpec {
    /// Parses and checks every flag; the first bad one is the error.
    pub fn parse(text: &SpecText<'_>) -> Result<RolloutSpec, SpecError> {
        parse_selector(text.select)?;
        let waves = parse_waves(text.waves)?;
        let success = match text.success.trim() {
            "" => Amount::Percent(100.0),
            s => Amount::parse(s, "success threshold")?,
        };
        let abort_after = match text.abort_after.trim() {
            "" => None,
            s => Some(Amount::parse(s, "abort criterion")?),
        };
        let gate = parse_gate(text.gate)?;
        let health_check = match text.health_check {
            "" | "smoke" => HealthCheck::Smoke,
            "bench" => HealthCheck::Bench,
            "none" => HealthCheck::None,
            other => return Err(SpecError::UnknownHealthCheck(other.to_string())),
        };
        Ok(RolloutSpec {
            select: text.select.trim().to_string(),
            waves,
            success,
            abort_after,
            gate,
            health_check,
        })
    }

    /// Whether a performance gate judges each wave.
    pub fn gated(&self) -> bool {
        !self.gate.is_empty()
    }

    /// The waves as `10%,50%,100%`.
    pub fn waves_text(&self) -> String {
        join(&self.waves)
    }

    /// The gate as `p90<=1.10x,quality>=0.99` (empty when not gated).
    pub fn gate_text(&self) -> String {
        join(&self.gate)
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::gate::GateMetric;

    #[test]
    fn a_spec_parses_once_and_reads_back_from_its_stored_form() {
        let spec = RolloutSpec::parse(&SpecText {
            select: "hw=rpi5,site!=lab",
            waves: "10%,50%,100%",
            success: "95%",
            abort_after: "2",
            gate: "p90<=1.10x,quality>=0.99",
            health_check: "bench",
        })
        .unwrap();
        assert_eq!(spec.waves.len(), 3);
        assert_eq!(spec.success, Amount::Percent(95.0));
        assert_eq!(spec.abort_after, Some(Amount::Count(2)));
        assert_eq!(spec.gate[1].metric, GateMetric::Quality);
        assert_eq!(spec.health_check, HealthCheck::Bench);
        assert_eq!(spec.waves_text(), "10%,50%,100%");
        assert_eq!(spec.gate_text(), "p90<=1.10x,quality>=0.99");
        let stored = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RolloutSpec>(&stored).unwrap(), spec);

        let defaults = RolloutSpec::parse(&SpecText::default()).unwrap();
        assert_eq!(defaults.waves, [Amount::Percent(100.0)]);
        assert_eq!(defaults.success, Amount::Percent(100.0));
        assert_eq!((defaults.abort_after, defaults.gated()), (None, false));
        assert_eq!(defaults.health_check, HealthCheck::Smoke);
    }

    #[test]
    fn each_bad_flag_is_refused_with_its_reason() {
        let base = SpecText::default();
        for (text, why) in [
            (
                SpecText {
                    select: "hw",
                    ..base.clone()
                },
                "selector `hw` is not key=value",
            ),
            (
                SpecText {
                    waves: "50%",
                    ..base.clone()
                },
                "must end at 100%",
            ),
            (
                SpecText {
                    success: "150%",
                    ..base.clone()
                },
                "success threshold `150%` must be above 0% and at most 100%",
            ),
            (
                SpecText {
                    abort_after: "0",
                    ..base.clone()
                },
                "abort criterion must be at least 1",
            ),
            (
                SpecText {
                    gate: "p90<=fast",
                    ..base.clone()
                },
                "ratio such as 1.10x",
            ),
            (
                SpecText {
                    health_check: "deep",
                    ..base.clone()
                },
                "unknown health check `deep` (smoke, bench, none)",
            ),
        ] {
            let err = RolloutSpec::parse(&text).unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
