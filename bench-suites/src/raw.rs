//! The suite file as written (serde structs that refuse unknown fields), and its conversion into
//! the typed [`Suite`], keeping spans so every error names its line.

use std::num::NonZeroU32;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    suite_hash, Conditions, Input, ModelSource, QualityCheck, Scenario, ScenarioKind, Suite,
    SuiteError,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    models: Spanned<Vec<Spanned<String>>>,
    input: Spanned<RawInput>,
    scenario: Spanned<Vec<Spanned<RawScenario>>>,
    conditions: Option<RawConditions>,
    quality: Option<Spanned<RawQuality>>,
    engines: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuality {
    reference: Spanned<String>,
    metric: Spanned<String>,
    golden: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    idle_power_s: Option<Spanned<f64>>,
    max_start_temp_c: Option<Spanned<f64>>,
    max_wait_s: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    text: Option<Spanned<Vec<String>>>,
    sequence_length: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    kind: Spanned<String>,
    threads: Option<Spanned<Vec<Spanned<i64>>>>,
    warmup: Option<Spanned<i64>>,
    min_queries: Option<Spanned<i64>>,
    min_duration_s: Option<Spanned<f64>>,
    max_duration_s: Option<Spanned<f64>>,
    repetitions: Option<Spanned<i64>>,
    samples_per_query: Option<Spanned<i64>>,
    batch_size: Option<Spanned<i64>>,
    target_qps: Option<Spanned<f64>>,
    p99_bound_ms: Option<Spanned<f64>>,
    seed: Option<Spanned<i64>>,
    peak_search: Option<Spanned<bool>>,
    prompt_tokens: Option<Spanned<i64>>,
    generate_tokens: Option<Spanned<i64>>,
}

/// More repetitions than this would rather be a longer run.
const MAX_REPETITIONS: u32 = 100;

/// Where a field sits in the text, for errors.
struct Locator<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    /// The `key` of a `key = value` line containing `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && !key.starts_with('#')).then(|| key.to_string())
    }

    fn error(&self, span: Range<usize>, field: &str, message: impl Into<String>) -> SuiteError {
        SuiteError {
            origin: self.origin.to_string(),
            line: Some(self.line_of(span.start)),
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Suite, SuiteError> {
    let at = Locator { text, origin };
    let raw: RawSuite = toml::from_str(text).map_err(|e| {
        let (field, message) = split_serde_message(e.message());
        // Type errors do not name their field; the key on the offending line does.
        let field = field.or_else(|| e.span().and_then(|s| at.key_at(s.start)));
        SuiteError {
            origin: origin.to_string(),
            line: e.span().map(|s| at.line_of(s.start)),
            field,
            message,
        }
    })?;

    let name = raw.name.get_ref().trim();
    if name.is_empty() {
        return Err(at.error(raw.name.span(), "name", "must not be empty"));
    }

    if raw.models.get_ref().is_empty() {
        return Err(at.error(raw.models.span(), "models", "lists no model"));
    }
    let mut models = Vec::new();
    for model in raw.models.get_ref() {
        let parsed: ModelSource = model
            .get_ref()
            .parse()
            .map_err(|e: String| at.error(model.span(), "models", e))?;
        if models.contains(&parsed) {
            return Err(at.error(
                model.span(),
                "models",
                format!("`{parsed}` is listed twice"),
            ));
        }
        models.push(parsed);
    }

    let input_span = raw.input.span();
    let raw_input = raw.input.into_inner();
    let Some(text_input) = raw_input.text else {
        return Err(at.error(input_span, "input", "needs `text` (a list of sentences)"));
    };
    let sentences = text_input.get_ref().clone();
    if sentences.is_empty() || sentences.iter().any(|s| s.trim().is_empty()) {
        return Err(at.error(
            text_input.span(),
            "input.text",
            "needs at least one sentence, and no empty ones",
        ));
    }
    let sequence_length = match raw_input.sequence_length {
        None => None,
        Some(len) => Some(positive_u32(&at, &len, "input.sequence_length")?),
    };

    let scenarios_span = raw.scenario.span();
    let raw_scenarios = raw.scenario.into_inner();
    if raw_scenarios.is_empty() {
        return Err(at.error(scenarios_span, "scenario", "the suite has no [[scenario]]"));
    }
    let scenarios = raw_scenarios
        .iter()
        .map(|s| scenario(&at, s))
        .collect::<Result<Vec<_>, _>>()?;

    let quality = match &raw.quality {
        None => None,
        Some(q) => {
            let q = q.get_ref();
            let reference = q
                .reference
                .get_ref()
                .parse()
                .map_err(|e: String| at.error(q.reference.span(), "quality.reference", e))?;
            if !crate::QUALITY_METRICS.contains(&q.metric.get_ref().as_str()) {
                return Err(at.error(
                    q.metric.span(),
                    "quality.metric",
                    format!(
                        "unknown metric `{}` (supported: {})",
                        q.metric.get_ref(),
                        crate::QUALITY_METRICS.join(", ")
                    ),
                ));
            }
            let golden = match &q.golden {
                Some(g)
                    if g.get_ref().is_empty()
                        || g.get_ref().iter().any(|s| s.trim().is_empty()) =>
                {
                    return Err(at.error(
                        g.span(),
                        "quality.golden",
                        "needs sentences, and no empty ones",
                    ))
                }
                Some(g) => g.get_ref().clone(),
                None => sentences.clone(),
            };
            Some(QualityCheck {
                reference,
                metric: q.metric.get_ref().clone(),
                golden,
            })
        }
    };
    let conditions = match raw.conditions {
        None => Conditions::default(),
        Some(c) => conditions(&at, c)?,
    };

    let engines = match &raw.engines {
        None => vec!["onnxruntime".to_string()],
        Some(list) if list.get_ref().is_empty() => {
            return Err(at.error(list.span(), "engines", "lists no engine"))
        }
        Some(list) => list
            .get_ref()
            .iter()
            .map(|e| {
                if crate::ENGINES.contains(&e.get_ref().as_str()) {
                    Ok(e.get_ref().clone())
                } else {
                    Err(at.error(
                        e.span(),
                        "engines",
                        format!(
                            "unknown engine `{}` (supported: {})",
                            e.get_ref(),
                            crate::ENGINES.join(", ")
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(Suite {
        engines,
        quality,
        conditions,
        name: name.to_string(),
        description: raw.description,
        models,
        input: Input::Text {
            sentences,
            sequence_length,
        },
        scenarios,
        sha256: suite_hash(text),
    })
}

fn conditions(at: &Locator<'_>, raw: RawConditions) -> Result<Conditions, SuiteError> {
    let mut out = Conditions::default();
    if let Some(v) = &raw.idle_power_s {
        out.idle_power = if *v.get_ref() == 0.0 {
            Duration::ZERO
        } else {
            positive_seconds(at, v, "conditions.idle_power_s")?
        };
    }
    if let Some(v) = &raw.max_start_temp_c {
        if !(v.get_ref().is_finite() && (0.0..=150.0).contains(v.get_ref())) {
            return Err(at.error(
                v.span(),
                "conditions.max_start_temp_c",
                format!("must be between 0 and 150 °C, not {}", v.get_ref()),
            ));
        }
        out.max_start_temp_c = Some(*v.get_ref());
    }
    if let Some(v) = &raw.max_wait_s {
        out.max_wait = positive_seconds(at, v, "conditions.max_wait_s")?;
    }
    Ok(out)
}

fn scenario(at: &Locator<'_>, raw: &Spanned<RawScenario>) -> Result<Scenario, SuiteError> {
    let s = raw.get_ref();
    let kind = scenario_kind(at, s)?;

    let threads = match &s.threads {
        None => vec![NonZeroU32::MIN],
        Some(list) if list.get_ref().is_empty() => {
            return Err(at.error(list.span(), "scenario.threads", "lists no thread count"))
        }
        Some(list) => list
            .get_ref()
            .iter()
            .map(|t| positive_u32(at, t, "scenario.threads"))
            .collect::<Result<Vec<_>, _>>()?,
    };

    let warmup_queries = match &s.warmup {
        None => 5,
        Some(w) => u32::try_from(*w.get_ref())
            .map_err(|_| at.error(w.span(), "scenario.warmup", "must be 0 or more"))?,
    };
    let min_queries = match &s.min_queries {
        None => NonZeroU32::new(100).expect("100 is not zero"),
        Some(q) => positive_u32(at, q, "scenario.min_queries")?,
    };
    let min_duration = match &s.min_duration_s {
        None => Duration::from_secs(1),
        Some(d) => positive_seconds(at, d, "scenario.min_duration_s")?,
    };
    let max_duration = match &s.max_duration_s {
        None => Duration::from_secs(60).max(min_duration),
        Some(d) => positive_seconds(at, d, "scenario.max_duration_s")?,
    };
    if max_duration < min_duration {
        let span = s.max_duration_s.as_ref().map_or(raw.span(), |d| d.span());
        return Err(at.error(
            span,
            "scenario.max_duration_s",
            format!(
                "{} s is shorter than min_duration_s ({} s)",
                max_duration.as_secs_f64(),
                min_duration.as_secs_f64()
            ),
        ));
    }
    let repetitions = match &s.repetitions {
        None => NonZeroU32::MIN,
        Some(r) => u32::try_from(*r.get_ref())
            .ok()
            .filter(|n| (1..=MAX_REPETITIONS).contains(n))
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                at.error(
                    r.span(),
                    "scenario.repetitions",
                    format!(
                        "must be a whole number from 1 to {MAX_REPETITIONS}, not {}",
                        r.get_ref()
                    ),
                )
            })?,
    };
    Ok(Scenario {
        kind,
        threads,
        warmup_queries,
        min_queries,
        min_duration,
        max_duration,
        repetitions,
    })
}

/// The scenario's kind with its own settings; a setting given to a kind that has no use for it
/// is an error, not silently ignored.
fn scenario_kind(at: &Locator<'_>, s: &RawScenario) -> Result<ScenarioKind, SuiteError> {
    let name = s.kind.get_ref().as_str();
    let wanted: &[&str] = match name {
        "single-stream" => &[],
        "multi-stream" => &["samples_per_query"],
        "offline" => &["batch_size"],
        "server" => &["target_qps", "p99_bound_ms", "seed", "peak_search"],
        "generate" => &["prompt_tokens", "generate_tokens"],
        _ => {
            return Err(at.error(
                s.kind.span(),
                "scenario.kind",
                format!(
                    "unknown scenario `{name}` (supported: {})",
                    ScenarioKind::NAMES.join(", ")
                ),
            ))
        }
    };
    let given = [
        (
            "samples_per_query",
            s.samples_per_query.as_ref().map(|v| v.span()),
        ),
        ("batch_size", s.batch_size.as_ref().map(|v| v.span())),
        ("target_qps", s.target_qps.as_ref().map(|v| v.span())),
        ("p99_bound_ms", s.p99_bound_ms.as_ref().map(|v| v.span())),
        ("seed", s.seed.as_ref().map(|v| v.span())),
        ("peak_search", s.peak_search.as_ref().map(|v| v.span())),
        ("prompt_tokens", s.prompt_tokens.as_ref().map(|v| v.span())),
        (
            "generate_tokens",
            s.generate_tokens.as_ref().map(|v| v.span()),
        ),
    ];
    for (field, span) in given {
        if let Some(span) = span {
            if !wanted.contains(&field) {
                return Err(at.error(
                    span,
                    &format!("scenario.{field}"),
                    format!("does not apply to a {name} scenario"),
                ));
            }
        }
    }
    let required = |field: &str| {
        at.error(
            s.kind.span(),
            &format!("scenario.{field}"),
            format!("a {name} scenario needs `{field}`"),
        )
    };
    Ok(match name {
        "single-stream" => ScenarioKind::SingleStream,
        "multi-stream" => ScenarioKind::MultiStream {
            samples_per_query: match &s.samples_per_query {
                Some(v) => positive_u32(at, v, "scenario.samples_per_query")?,
                None => return Err(required("samples_per_query")),
            },
        },
        "generate" => {
            let count = |v: &Option<Spanned<i64>>, field: &str| match v {
                Some(v) => positive_u32(at, v, &format!("scenario.{field}")),
                None => Err(required(field)),
            };
            ScenarioKind::Generate {
                prompt_tokens: count(&s.prompt_tokens, "prompt_tokens")?,
                generate_tokens: count(&s.generate_tokens, "generate_tokens")?,
            }
        }
        "offline" => ScenarioKind::Offline {
            batch_size: match &s.batch_size {
                Some(v) => positive_u32(at, v, "scenario.batch_size")?,
                None => NonZeroU32::new(32).expect("32 is not zero"),
            },
        },
        _ => {
            let target_qps = match &s.target_qps {
                Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => *v.get_ref(),
                Some(v) => {
                    return Err(at.error(
                        v.span(),
                        "scenario.target_qps",
                        format!(
                            "must be more than 0 queries per second, not {}",
                            v.get_ref()
                        ),
                    ))
                }
                None => return Err(required("target_qps")),
            };
            let p99_bound = match &s.p99_bound_ms {
                Some(v)
                    if v.get_ref().is_finite()
                        && (0.0..=3_600_000.0).contains(v.get_ref())
                        && *v.get_ref() > 0.0 =>
                {
                    Duration::from_secs_f64(*v.get_ref() / 1000.0)
                }
                Some(v) => {
                    return Err(at.error(
                        v.span(),
                        "scenario.p99_bound_ms",
                        format!(
                            "must be more than 0 ms and at most one hour, not {}",
                            v.get_ref()
                        ),
                    ))
                }
                None => return Err(required("p99_bound_ms")),
            };
            let seed = match &s.seed {
                Some(v) => u64::try_from(*v.get_ref())
                    .map_err(|_| at.error(v.span(), "scenario.seed", "must be 0 or more"))?,
                None => 1,
            };
            ScenarioKind::Server {
                target_qps,
                p99_bound,
                seed,
                peak_search: s.peak_search.as_ref().is_some_and(|v| *v.get_ref()),
            }
        }
    })
}

fn positive_u32(at: &Locator<'_>, v: &Spanned<i64>, field: &str) -> Result<NonZeroU32, SuiteError> {
    u32::try_from(*v.get_ref())
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            at.error(
                v.span(),
                field,
                format!(
                    "must be a whole number from 1 to {}, not {}",
                    u32::MAX,
                    v.get_ref()
                ),
            )
        })
}

fn positive_seconds(
    at: &Locator<'_>,
    v: &Spanned<f64>,
    field: &str,
) -> Result<Duration, SuiteError> {
    let secs = *v.get_ref();
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(at.error(
            v.span(),
            field,
            format!("must be more than 0 and at most 86400 seconds, not {secs}"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// serde's messages read "unknown field `x`, expected one of …" or "missing field `x`": lift the
/// field name out so every error has the same shape.
fn split_serde_message(message: &str) -> (Option<String>, String) {
    let field = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    (field, message.trim().to_string())
}

#[cfg(test)]
mod tests;
