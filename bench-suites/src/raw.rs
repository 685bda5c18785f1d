//! The suite file as written (serde structs that refuse unknown fields), and its conversion into
//! the typed [`Suite`], keeping spans so every error names its line.
//!
//! Long on purpose (about 1,000 lines): it is one conversion, field by field, through one
//! `Locator` that turns spans into `file:line: field` errors; split by section, each part
//! would need the locator and the shared number checks from the others.

use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    suite_hash, AudioInput, Conditions, ImageInput, Input, ModelGroup, ModelSource,
    OnnxRuntimeOptions, QualityCheck, Resize, Scenario, ScenarioKind, Suite, SuiteError,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    models: Option<Spanned<Vec<Spanned<String>>>>,
    input: Option<Spanned<RawInput>>,
    scenario: Spanned<Vec<Spanned<RawScenario>>>,
    conditions: Option<RawConditions>,
    quality: Option<Spanned<RawQuality>>,
    engines: Option<Spanned<Vec<Spanned<String>>>>,
    execution_providers: Option<Spanned<Vec<Spanned<String>>>>,
    graph_optimization: Option<Spanned<String>>,
    inter_op_threads: Option<Spanned<i64>>,
    group: Option<Spanned<Vec<Spanned<RawGroup>>>>,
}

/// `[[group]]`: models that share an input and a quality check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    models: Spanned<Vec<Spanned<String>>>,
    input: Spanned<RawInput>,
    quality: Option<Spanned<RawQuality>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuality {
    reference: Spanned<String>,
    metric: Spanned<String>,
    golden: Option<Spanned<Vec<String>>>,
    output: Option<Spanned<String>>,
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
    /// text (the default), audio or image.
    kind: Option<Spanned<String>>,
    text: Option<Spanned<Vec<String>>>,
    sequence_length: Option<Spanned<i64>>,
    files: Option<Spanned<Vec<Spanned<String>>>>,
    sample_rate: Option<Spanned<i64>>,
    chunk_samples: Option<Spanned<i64>>,
    context_samples: Option<Spanned<i64>>,
    width: Option<Spanned<i64>>,
    height: Option<Spanned<i64>>,
    resize: Option<Spanned<String>>,
    mean: Option<Spanned<RawChannels>>,
    std: Option<Spanned<RawChannels>>,
}

/// One value for every channel, or one per channel.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawChannels {
    One(f64),
    Each(Vec<f64>),
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
/// Image sides beyond this are a mistake, not a model input.
const MAX_IMAGE_SIDE: u32 = 16_384;
/// Audio sample rates edgefleet accepts.
const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

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

/// Parses suite text; with `base` (the suite's folder), input files must exist there.
pub(crate) fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<Suite, SuiteError> {
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

    let onnxruntime = onnxruntime_options(&at, &raw)?;
    let groups = match (raw.group, raw.models, raw.input) {
        (Some(groups), None, None) if raw.quality.is_none() => {
            if groups.get_ref().is_empty() {
                return Err(at.error(groups.span(), "group", "lists no group"));
            }
            let mut out: Vec<ModelGroup> = Vec::new();
            for g in groups.into_inner() {
                let g = g.into_inner();
                let group_name = g.name.get_ref().trim().to_string();
                if group_name.is_empty() || out.iter().any(|o| o.name == group_name) {
                    return Err(at.error(
                        g.name.span(),
                        "group.name",
                        "needs a name of its own (not empty, not another group's)",
                    ));
                }
                out.push(group(
                    &at,
                    "group.",
                    group_name,
                    g.models,
                    g.input,
                    g.quality,
                    base,
                )?);
            }
            out
        }
        (Some(groups), _, _) => {
            return Err(at.error(
                groups.span(),
                "group",
                "a suite with [[group]] names its models, input and quality inside each group, not at the top",
            ))
        }
        (None, Some(models), Some(input)) => {
            vec![group(
                &at,
                "",
                String::new(),
                models,
                input,
                raw.quality,
                base,
            )?]
        }
        (None, None, _) => {
            return Err(at.error(
                0..0,
                "models",
                "missing field `models` (or [[group]] sections)",
            ))
        }
        (None, Some(models), None) => {
            return Err(at.error(
                models.span(),
                "input",
                "missing [input]: what each query feeds the models",
            ))
        }
    };
    let mut seen: Vec<&ModelSource> = Vec::new();
    for model in groups.iter().flat_map(|g| &g.models) {
        if seen.contains(&model) {
            // Results name the model, so one model in two groups would read as one.
            return Err(SuiteError {
                origin: origin.to_string(),
                line: None,
                field: Some("group.models".into()),
                message: format!("`{model}` is in two groups"),
            });
        }
        seen.push(model);
    }

    let scenarios_span = raw.scenario.span();
    let raw_scenarios = raw.scenario.into_inner();
    if raw_scenarios.is_empty() {
        return Err(at.error(scenarios_span, "scenario", "the suite has no [[scenario]]"));
    }
    let scenarios = raw_scenarios
        .iter()
        .map(|s| scenario(&at, s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(g) = groups
        .iter()
        .find(|g| !matches!(g.input, Input::Text { .. }))
    {
        for (raw, s) in raw_scenarios.iter().zip(&scenarios) {
            if let ScenarioKind::Generate { .. } = s.kind {
                return Err(at.error(
                    raw.get_ref().kind.span(),
                    "scenario.kind",
                    format!(
                        "a generate scenario needs text input (its prompts), not {} input",
                        g.input.kind()
                    ),
                ));
            }
        }
    }

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
        onnxruntime,
        conditions,
        name: name.to_string(),
        description: raw.description,
        groups,
        scenarios,
        sha256: suite_hash(text),
    })
}

/// One group's models, input and quality check; `prefix` is `group.` inside `[[group]]`.
fn group(
    at: &Locator<'_>,
    prefix: &str,
    name: String,
    raw_models: Spanned<Vec<Spanned<String>>>,
    raw_input: Spanned<RawInput>,
    raw_quality: Option<Spanned<RawQuality>>,
    base: Option<&Path>,
) -> Result<ModelGroup, SuiteError> {
    let field = |f: &str| format!("{prefix}{f}");
    if raw_models.get_ref().is_empty() {
        return Err(at.error(raw_models.span(), &field("models"), "lists no model"));
    }
    let mut models = Vec::new();
    for model in raw_models.get_ref() {
        let parsed: ModelSource = model
            .get_ref()
            .parse()
            .map_err(|e: String| at.error(model.span(), &field("models"), e))?;
        if models.contains(&parsed) {
            return Err(at.error(
                model.span(),
                &field("models"),
                format!("`{parsed}` is listed twice"),
            ));
        }
        models.push(parsed);
    }

    let input = input(at, prefix, raw_input, base)?;

    let quality = match &raw_quality {
        None => None,
        Some(q) => {
            let q = q.get_ref();
            let reference = q.reference.get_ref().parse().map_err(|e: String| {
                at.error(q.reference.span(), &field("quality.reference"), e)
            })?;
            if !crate::QUALITY_METRICS.contains(&q.metric.get_ref().as_str()) {
                return Err(at.error(
                    q.metric.span(),
                    &field("quality.metric"),
                    format!(
                        "unknown metric `{}` (supported: {})",
                        q.metric.get_ref(),
                        crate::QUALITY_METRICS.join(", ")
                    ),
                ));
            }
            let golden = match (&q.golden, &input) {
                (Some(g), Input::Audio(_) | Input::Image(_)) => {
                    return Err(at.error(
                        g.span(),
                        &field("quality.golden"),
                        format!(
                        "applies to text input; {} input compares the models on its input files",
                        input.kind()
                    ),
                    ))
                }
                (Some(g), _)
                    if g.get_ref().is_empty()
                        || g.get_ref().iter().any(|s| s.trim().is_empty()) =>
                {
                    return Err(at.error(
                        g.span(),
                        &field("quality.golden"),
                        "needs sentences, and no empty ones",
                    ))
                }
                (Some(g), _) => g.get_ref().clone(),
                (None, Input::Text { sentences, .. }) => sentences.clone(),
                (None, _) => Vec::new(),
            };
            let output = match &q.output {
                Some(o) if o.get_ref().trim().is_empty() => {
                    return Err(at.error(
                        o.span(),
                        &field("quality.output"),
                        "must name a model output, not be empty",
                    ))
                }
                Some(o) => Some(o.get_ref().clone()),
                None => None,
            };
            Some(QualityCheck {
                reference,
                metric: q.metric.get_ref().clone(),
                golden,
                output,
            })
        }
    };
    Ok(ModelGroup {
        name,
        models,
        input,
        quality,
    })
}

/// `[input]` by its kind; a setting that does not apply to the kind is an error.
fn input(
    at: &Locator<'_>,
    prefix: &str,
    raw: Spanned<RawInput>,
    base: Option<&Path>,
) -> Result<Input, SuiteError> {
    let field = |f: &str| format!("{prefix}input.{f}");
    let span = raw.span();
    let r = raw.into_inner();
    let kind = match &r.kind {
        None => "text",
        Some(k) if Input::KINDS.contains(&k.get_ref().as_str()) => k.get_ref().as_str(),
        Some(k) => {
            return Err(at.error(
                k.span(),
                &field("kind"),
                format!(
                    "unknown input kind `{}` (supported: {})",
                    k.get_ref(),
                    Input::KINDS.join(", ")
                ),
            ))
        }
    };
    let wanted: &[&str] = match kind {
        "text" => &["text", "sequence_length"],
        "audio" => &["files", "sample_rate", "chunk_samples", "context_samples"],
        _ => &["files", "width", "height", "resize", "mean", "std"],
    };
    let given = [
        ("text", r.text.as_ref().map(|v| v.span())),
        (
            "sequence_length",
            r.sequence_length.as_ref().map(|v| v.span()),
        ),
        ("files", r.files.as_ref().map(|v| v.span())),
        ("sample_rate", r.sample_rate.as_ref().map(|v| v.span())),
        ("chunk_samples", r.chunk_samples.as_ref().map(|v| v.span())),
        (
            "context_samples",
            r.context_samples.as_ref().map(|v| v.span()),
        ),
        ("width", r.width.as_ref().map(|v| v.span())),
        ("height", r.height.as_ref().map(|v| v.span())),
        ("resize", r.resize.as_ref().map(|v| v.span())),
        ("mean", r.mean.as_ref().map(|v| v.span())),
        ("std", r.std.as_ref().map(|v| v.span())),
    ];
    for (name, given_span) in given {
        if let Some(given_span) = given_span {
            if !wanted.contains(&name) {
                return Err(at.error(
                    given_span,
                    &field(name),
                    format!("does not apply to {kind} input"),
                ));
            }
        }
    }
    let required = |name: &str| {
        at.error(
            span.clone(),
            &field(name),
            format!("{kind} input needs `{name}`"),
        )
    };

    if kind == "text" {
        let Some(text_input) = r.text else {
            return Err(at.error(
                span,
                &format!("{prefix}input"),
                "needs `text` (a list of sentences), or a `kind` (audio, image)",
            ));
        };
        let sentences = text_input.get_ref().clone();
        if sentences.is_empty() || sentences.iter().any(|s| s.trim().is_empty()) {
            return Err(at.error(
                text_input.span(),
                &field("text"),
                "needs at least one sentence, and no empty ones",
            ));
        }
        let sequence_length = match r.sequence_length {
            None => None,
            Some(len) => Some(positive_u32(at, &len, &field("sequence_length"))?),
        };
        return Ok(Input::Text {
            sentences,
            sequence_length,
        });
    }

    let files = match &r.files {
        None => return Err(required("files")),
        Some(list) if list.get_ref().is_empty() => {
            return Err(at.error(list.span(), &field("files"), "lists no file"))
        }
        Some(list) => {
            let mut files: Vec<PathBuf> = Vec::new();
            for f in list.get_ref() {
                let path = PathBuf::from(f.get_ref());
                if f.get_ref().trim().is_empty() {
                    return Err(at.error(f.span(), &field("files"), "has an empty path"));
                }
                if let Some(why) = escapes(&path) {
                    return Err(at.error(
                        f.span(),
                        &field("files"),
                        format!(
                            "`{}` {why}; input files are named relative to the suite's folder, inside it",
                            f.get_ref()
                        ),
                    ));
                }
                if files.contains(&path) {
                    return Err(at.error(
                        f.span(),
                        &field("files"),
                        format!("`{}` is listed twice", f.get_ref()),
                    ));
                }
                if let Some(base) = base {
                    let full = base.join(&path);
                    if !full.is_file() {
                        return Err(at.error(
                            f.span(),
                            &field("files"),
                            format!(
                                "`{}` is not a file (looked at {}){}",
                                f.get_ref(),
                                full.display(),
                                if f.get_ref().starts_with("inputs/") {
                                    "; scripts/setup.sh generates the shipped suites' inputs"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
                files.push(path);
            }
            files
        }
    };

    if kind == "audio" {
        let sample_rate = match &r.sample_rate {
            None => NonZeroU32::new(16_000).expect("not zero"),
            Some(v) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| SAMPLE_RATES.contains(n))
                .and_then(NonZeroU32::new)
                .ok_or_else(|| {
                    at.error(
                        v.span(),
                        &field("sample_rate"),
                        format!(
                            "must be from {} to {} Hz, not {}",
                            SAMPLE_RATES.start(),
                            SAMPLE_RATES.end(),
                            v.get_ref()
                        ),
                    )
                })?,
        };
        let chunk_samples = match &r.chunk_samples {
            None => NonZeroU32::new(512).expect("not zero"),
            Some(v) => positive_u32(at, v, &field("chunk_samples"))?,
        };
        let context_samples = match &r.context_samples {
            None => 0,
            Some(v) => u32::try_from(*v.get_ref())
                .map_err(|_| at.error(v.span(), &field("context_samples"), "must be 0 or more"))?,
        };
        // A query longer than a minute of audio is a file, not a stream chunk.
        let limit = u64::from(sample_rate.get()) * 60;
        if u64::from(chunk_samples.get()) + u64::from(context_samples) > limit {
            let span = r
                .chunk_samples
                .as_ref()
                .or(r.context_samples.as_ref())
                .map_or(span.clone(), |v| v.span());
            return Err(at.error(
                span,
                &field("chunk_samples"),
                format!("chunk and context together must be at most a minute ({limit} samples)"),
            ));
        }
        return Ok(Input::Audio(AudioInput {
            files,
            sample_rate,
            chunk_samples,
            context_samples,
        }));
    }

    let side = |v: &Option<Spanned<i64>>, name: &str| match v {
        None => Err(required(name)),
        Some(v) => u32::try_from(*v.get_ref())
            .ok()
            .filter(|n| (1..=MAX_IMAGE_SIDE).contains(n))
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                at.error(
                    v.span(),
                    &field(name),
                    format!(
                        "must be from 1 to {MAX_IMAGE_SIDE} pixels, not {}",
                        v.get_ref()
                    ),
                )
            }),
    };
    let width = side(&r.width, "width")?;
    let height = side(&r.height, "height")?;
    let resize = match &r.resize {
        None => Resize::Stretch,
        Some(v) => v
            .get_ref()
            .parse()
            .map_err(|e: String| at.error(v.span(), &field("resize"), e))?,
    };
    let channels = |v: &Option<Spanned<RawChannels>>, name: &str, default: f32, positive: bool| {
        let Some(v) = v else {
            return Ok([default; 3]);
        };
        let ok = |x: &f64| x.is_finite() && (!positive || *x > 0.0);
        let values = match v.get_ref() {
            RawChannels::One(x) => vec![*x],
            RawChannels::Each(list) => list.clone(),
        };
        match values[..] {
            [x] if ok(&x) => Ok([x as f32; 3]),
            [r, g, b] if [r, g, b].iter().all(ok) => Ok([r as f32, g as f32, b as f32]),
            _ => Err(at.error(
                v.span(),
                &field(name),
                format!(
                    "needs one value or three (red, green, blue){}",
                    if positive { ", each more than 0" } else { "" }
                ),
            )),
        }
    };
    Ok(Input::Image(ImageInput {
        files,
        width,
        height,
        resize,
        mean: channels(&r.mean, "mean", 0.0, false)?,
        std: channels(&r.std, "std", 1.0, true)?,
    }))
}

/// Why an input file's path would reach outside the suite's folder, if it would: the CLI reads
/// and uploads what a suite names, so a suite must not name just any file on the machine.
fn escapes(path: &Path) -> Option<&'static str> {
    use std::path::Component;
    path.components().find_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some("is absolute"),
        Component::ParentDir => Some("goes up with `..`"),
        Component::CurDir | Component::Normal(_) => None,
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

/// `execution_providers`, `graph_optimization` and `inter_op_threads`.
fn onnxruntime_options(at: &Locator<'_>, raw: &RawSuite) -> Result<OnnxRuntimeOptions, SuiteError> {
    let mut options = OnnxRuntimeOptions::default();
    if let Some(list) = &raw.execution_providers {
        if list.get_ref().is_empty() {
            return Err(at.error(
                list.span(),
                "execution_providers",
                "lists no execution provider",
            ));
        }
        options.execution_providers.clear();
        for provider in list.get_ref() {
            let name = provider.get_ref().to_ascii_lowercase();
            if !crate::EXECUTION_PROVIDERS.contains(&name.as_str()) {
                return Err(at.error(
                    provider.span(),
                    "execution_providers",
                    format!(
                        "unknown execution provider `{}` (supported: {})",
                        provider.get_ref(),
                        crate::EXECUTION_PROVIDERS.join(", ")
                    ),
                ));
            }
            if options.execution_providers.contains(&name) {
                return Err(at.error(
                    provider.span(),
                    "execution_providers",
                    format!("`{name}` is listed twice"),
                ));
            }
            options.execution_providers.push(name);
        }
    }
    if let Some(level) = &raw.graph_optimization {
        if !crate::GRAPH_OPTIMIZATION_LEVELS.contains(&level.get_ref().as_str()) {
            return Err(at.error(
                level.span(),
                "graph_optimization",
                format!(
                    "unknown level `{}` (supported: {})",
                    level.get_ref(),
                    crate::GRAPH_OPTIMIZATION_LEVELS.join(", ")
                ),
            ));
        }
        options.graph_optimization = level.get_ref().clone();
    }
    if let Some(threads) = &raw.inter_op_threads {
        options.inter_op_threads = u32::try_from(*threads.get_ref())
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                at.error(
                    threads.span(),
                    "inter_op_threads",
                    format!("must be at least 1, not {}", threads.get_ref()),
                )
            })?;
    }
    Ok(options)
}

#[cfg(test)]
mod tests;
