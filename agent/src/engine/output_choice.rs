//! Which output of a model a quality metric compares: one rule for both engines, applied to the
//! outputs a run gave (their names, element types and shapes), so an encoder exported with an
//! int64 first output and its embedding third is read right.

use super::EngineError;

/// What a quality check asks of a model's outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputChoice {
    /// That output, by name (the suite's `[quality] output`).
    pub name: Option<String>,
    /// Without a name: prefer an embedding, the first float32 output of rank 2 or 3 (`cosine`).
    pub embedding: bool,
}

/// One output of a run, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputKind<'a> {
    pub name: &'a str,
    /// The engine's element type (`f32`, `i64`: ONNX Runtime's short names, which tract's
    /// wrapper uses too).
    pub dtype: String,
    pub shape: Vec<i64>,
}

impl OutputKind<'_> {
    fn is_float(&self) -> bool {
        self.dtype == "f32"
    }
}

impl OutputChoice {
    /// The choice for `metric`, with the output the suite names, if any.
    pub fn for_metric(metric: &str, name: Option<String>) -> OutputChoice {
        OutputChoice {
            name,
            embedding: metric == "cosine",
        }
    }

    /// The choice for the reference model, whose output names are `outputs`: the same name when
    /// it has an output of that name, else the metric's own rule (an int8 export may name its
    /// embedding differently from its fp32 reference).
    pub fn for_reference(&self, outputs: &[String]) -> OutputChoice {
        match &self.name {
            Some(name) if !outputs.contains(name) => OutputChoice {
                name: None,
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// The index of the output to compare among `outputs` (in the model's order):
    ///
    /// - with a name, that output, which must be float32;
    /// - else, when an embedding is wanted, the first float32 output of rank 2 (`[batch, width]`,
    ///   a pooled embedding) or 3 (`[batch, sequence, width]`), falling back to the first
    ///   float32 output (a detector's `[1, 1, height, width]` map);
    /// - else the first float32 output.
    pub fn pick(&self, outputs: &[OutputKind<'_>]) -> Result<usize, EngineError> {
        if let Some(name) = &self.name {
            let ix = outputs.iter().position(|o| o.name == name).ok_or_else(|| {
                EngineError::NoSuchOutput {
                    name: name.clone(),
                    outputs: describe(outputs),
                }
            })?;
            if !outputs[ix].is_float() {
                return Err(EngineError::OutputNotFloat {
                    name: name.clone(),
                    dtype: onnx_type(&outputs[ix].dtype).to_string(),
                });
            }
            return Ok(ix);
        }
        let embedding = || {
            outputs
                .iter()
                .position(|o| o.is_float() && matches!(o.shape.len(), 2 | 3))
        };
        self.embedding
            .then(embedding)
            .flatten()
            .or_else(|| outputs.iter().position(OutputKind::is_float))
            .ok_or_else(|| EngineError::NoFloatOutput {
                outputs: describe(outputs),
            })
    }
}

/// `name type [shape]` for each output, for error messages.
fn describe(outputs: &[OutputKind<'_>]) -> String {
    if outputs.is_empty() {
        return "none".into();
    }
    outputs
        .iter()
        .map(|o| format!("`{}` {} {:?}", o.name, onnx_type(&o.dtype), o.shape))
        .collect::<Vec<_>>()
        .join(", ")
}

/// ONNX's name for an engine's element type (`f32` → `float32`).
fn onnx_type(dtype: &str) -> &str {
    match dtype {
        "f16" => "float16",
        "bf16" => "bfloat16",
        "f32" => "float32",
        "f64" => "float64",
        "i8" => "int8",
        "i16" => "int16",
        "i32" => "int32",
        "i64" => "int64",
        "u8" => "uint8",
        "u16" => "uint16",
        "u32" => "uint32",
        "u64" => "uint64",
        "String" | "string" => "string",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind<'a>(name: &'a str, dtype: &str, shape: &[i64]) -> OutputKind<'a> {
        OutputKind {
            name,
            dtype: dtype.into(),
            shape: shape.to_vec(),
        }
    }

    /// The three-output MiniLM of the set-up: int64 first, a float of rank 1, the embedding third.
    fn multi() -> Vec<OutputKind<'static>> {
        vec![
            kind("token_argmax", "i64", &[1, 7]),
            kind("mean_activation", "f32", &[1]),
            kind("last_hidden_state", "f32", &[1, 7, 384]),
        ]
    }

    fn check(
        metric: &str,
        name: Option<&str>,
        outputs: &[OutputKind<'_>],
    ) -> Result<usize, String> {
        OutputChoice::for_metric(metric, name.map(str::to_string))
            .pick(outputs)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_rule_by_metric_and_name() {
        let det_map = [kind("sigmoid", "f32", &[1, 1, 32, 64])];
        let pooled = [
            kind("token_embeddings", "f32", &[1, 7, 384]),
            kind("sentence_embedding", "f32", &[1, 384]),
        ];
        let cases: [(&str, Option<&str>, &[OutputKind<'_>], usize); 8] = [
            // cosine finds the embedding past int64 and rank-1 outputs
            ("cosine", None, &multi(), 2),
            ("cosine", Some("last_hidden_state"), &multi(), 2),
            ("cosine", Some("mean_activation"), &multi(), 1),
            // rank 2 or 3, whichever comes first
            ("cosine", None, &pooled, 0),
            ("cosine", Some("sentence_embedding"), &pooled, 1),
            // no embedding-shaped output: the first float32 (image and audio input)
            ("cosine", None, &det_map, 0),
            // other metrics: the first float32 output
            ("logits", None, &multi(), 1),
            (
                "classes",
                None,
                &[kind("a", "i64", &[1]), kind("p", "f32", &[1, 1])],
                1,
            ),
        ];
        for (metric, name, outputs, want) in cases {
            assert_eq!(check(metric, name, outputs), Ok(want), "{metric} {name:?}");
        }
    }

    #[test]
    fn a_missing_or_non_float_output_is_a_one_line_error() {
        let missing = check("cosine", Some("no_such_output"), &multi()).unwrap_err();
        assert_eq!(
            missing,
            "the model has no output `no_such_output` (its outputs: `token_argmax` int64 [1, 7], \
             `mean_activation` float32 [1], `last_hidden_state` float32 [1, 7, 384])"
        );
        let int = check("cosine", Some("token_argmax"), &multi()).unwrap_err();
        assert_eq!(
            int,
            "model output `token_argmax` is int64; quality metrics need a float32 output"
        );
        let none = check("logits", None, &[kind("ids", "i64", &[1, 3])]).unwrap_err();
        assert_eq!(
            none,
            "the model has no float32 output to compare (its outputs: `ids` int64 [1, 3])"
        );
    }

    #[test]
    fn the_reference_keeps_the_name_only_when_it_has_that_output() {
        let choice = OutputChoice::for_metric("cosine", Some("sentence_embedding".into()));
        let same = choice.for_reference(&["sentence_embedding".into()]);
        assert_eq!(same, choice);
        let other = choice.for_reference(&["last_hidden_state".into()]);
        assert_eq!(
            other,
            OutputChoice {
                name: None,
                embedding: true
            }
        );
    }
}
