//! State carried from one run of a model to the next: a decoder's key/value cache (the
//! generate scenario, and logits for quality), and the recurrent state of a streaming model
//! ([`Carry`], Silero VAD's `state` → `stateN`). Both stay ONNX Runtime values between runs.

use ort::value::{DynTensor, DynValue, Tensor};

use super::session::{float_output, output_kinds, Feed, Model};
use super::{EngineError, FloatOutput, OutputChoice};

/// The key/value cache of a decoder between steps: the `present.*` outputs of one step, kept as
/// ONNX Runtime values and fed back as `past_key_values.*` without copying.
pub struct KvCache {
    past: Vec<(String, DynValue)>,
    /// Tokens the cache holds.
    pub length: usize,
}

impl Model {
    /// Whether the model is a decoder with a key/value cache (HF/Optimum naming).
    pub fn is_decoder(&self) -> bool {
        self.inputs
            .iter()
            .any(|i| i.name.starts_with("past_key_values."))
    }

    /// An empty cache: every `past_key_values.*` input with a past length of 0.
    pub fn empty_cache(&self) -> Result<KvCache, EngineError> {
        let past = self
            .inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| {
                let [_, heads, _, width] = i.shape[..] else {
                    return Err(EngineError::Run(format!(
                        "decoder input `{}` has shape {:?}, not [batch, heads, past, width]",
                        i.name, i.shape
                    )));
                };
                let shape = [1usize, heads.max(1) as usize, 0, width.max(1) as usize];
                let tensor = Tensor::from_array((shape, Vec::<f32>::new()))
                    .map_err(|e| EngineError::Run(e.to_string()))?;
                Ok((i.name.clone(), tensor.into_dyn()))
            })
            .collect::<Result<_, _>>()?;
        Ok(KvCache { past, length: 0 })
    }

    /// One decoder step: feeds `tokens` after what the cache holds, keeps the new cache, and
    /// returns the most likely next token (greedy).
    pub fn decode_step(&mut self, cache: &mut KvCache, tokens: &[i64]) -> Result<i64, EngineError> {
        let logits = self.decoder_step(cache, tokens, false)?;
        let last = &logits.values[logits.values.len().saturating_sub(logits.width())..];
        Ok(last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i as i64))
    }

    /// The logits `[1, tokens, vocab]` a decoder gives at every position of `tokens` read from
    /// an empty cache (what the quality metric `logits` compares for decoders).
    pub fn prompt_logits(&mut self, tokens: &[i64]) -> Result<FloatOutput, EngineError> {
        let mut cache = self.empty_cache()?;
        self.decoder_step(&mut cache, tokens, true)
    }

    /// Feeds `tokens` after what the cache holds and keeps the new cache; returns the logits of
    /// every position, or of the last one only.
    fn decoder_step(
        &mut self,
        cache: &mut KvCache,
        tokens: &[i64],
        every_position: bool,
    ) -> Result<FloatOutput, EngineError> {
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let (past, new) = (cache.length, tokens.len());
        let ids = Tensor::from_array(([1usize, new], tokens.to_vec())).map_err(run_error)?;
        let mask = Tensor::from_array(([1usize, past + new], vec![1i64; past + new]))
            .map_err(run_error)?;
        let positions: Vec<i64> = (past..past + new).map(|p| p as i64).collect();
        let positions = Tensor::from_array(([1usize, new], positions)).map_err(run_error)?;
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
            ("input_ids".into(), ids.into()),
            ("attention_mask".into(), mask.into()),
        ];
        if self.inputs.iter().any(|i| i.name == "position_ids") {
            inputs.push(("position_ids".into(), positions.into()));
        }
        for (name, value) in std::mem::take(&mut cache.past) {
            inputs.push((name, value.into()));
        }
        let outputs = self
            .ort("the generate scenario")?
            .run(inputs)
            .map_err(run_error)?;
        let mut logits = None;
        for (name, value) in outputs {
            if name == "logits" {
                let (shape, values) = value.try_extract_tensor::<f32>().map_err(run_error)?;
                let vocab = *shape.last().unwrap_or(&0);
                logits = Some(if every_position {
                    FloatOutput {
                        shape: shape.to_vec(),
                        values: values.to_vec(),
                    }
                } else {
                    FloatOutput {
                        shape: vec![1, 1, vocab],
                        values: values[values.len().saturating_sub(vocab as usize)..].to_vec(),
                    }
                });
            } else if let Some(rest) = name.strip_prefix("present.") {
                cache.past.push((format!("past_key_values.{rest}"), value));
            }
        }
        cache.length = past + new;
        logits.ok_or_else(|| EngineError::Run("the decoder has no `logits` output".into()))
    }
}

/// Recurrent state carried from one query to the next: for each input `X` with an output `XN`
/// (or `Xn`), the output of one query is the input of the next, kept as an ONNX Runtime value
/// (Silero VAD: `stateN` → `state`). A stream starts from zeros.
pub struct Carry {
    /// (input, output) pairs.
    links: Vec<(String, String)>,
    zeros: Vec<DynTensor>,
    current: Vec<Option<DynValue>>,
}

impl Carry {
    /// Starts a new stream: the next query gets zeros.
    pub fn reset(&mut self) {
        self.current.iter_mut().for_each(|c| *c = None);
    }

    /// The inputs it feeds.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|(input, _)| input.as_str())
    }
}

impl Model {
    /// The (input, output) pairs of recurrent state: an input `X` with an output `XN` or `Xn`.
    pub fn recurrent_links(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .filter_map(|i| {
                [format!("{}N", i.name), format!("{}n", i.name)]
                    .into_iter()
                    .find(|o| self.outputs.contains(o))
                    .map(|o| (i.name.clone(), o))
            })
            .collect()
    }

    /// Zeros for every recurrent input (float32, its declared shape with dynamic dimensions set
    /// to `batch`).
    pub fn carry(&self, batch: usize) -> Result<Carry, EngineError> {
        let links = self.recurrent_links();
        let zeros = links
            .iter()
            .map(|(input, _)| {
                let info = self
                    .inputs
                    .iter()
                    .find(|i| &i.name == input)
                    .expect("links name inputs");
                if info.dtype != "f32" {
                    return Err(EngineError::Run(format!(
                        "recurrent input `{input}` is {}; edgefleet carries float32 state",
                        info.dtype
                    )));
                }
                let shape: Vec<usize> = info
                    .shape
                    .iter()
                    .map(|&d| if d < 0 { batch } else { d as usize })
                    .collect();
                let count = shape.iter().product();
                Tensor::from_array((shape, vec![0f32; count]))
                    .map(|t| t.upcast())
                    .map_err(|e| EngineError::Run(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Carry {
            current: links.iter().map(|_| None).collect(),
            links,
            zeros,
        })
    }

    /// Runs one query of a stream: the feed plus the carried state; keeps the new state, and
    /// returns the output `keep_output` picks among those that are not state, when it is given.
    pub fn run_streaming(
        &mut self,
        feed: &Feed,
        carry: &mut Carry,
        keep_output: Option<&OutputChoice>,
    ) -> Result<Option<FloatOutput>, EngineError> {
        let run_error = |e: ort::Error| EngineError::Run(e.to_string());
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = feed
            .tensors
            .iter()
            .map(|(name, tensor)| (name.clone(), tensor.into()))
            .collect();
        for (((input, _), current), zeros) in carry
            .links
            .iter()
            .zip(carry.current.iter_mut())
            .zip(&carry.zeros)
        {
            let value = match current.take() {
                Some(value) => value.into(),
                None => zeros.into(),
            };
            inputs.push((input.clone(), value));
        }
        let outputs = self.ort("streaming")?.run(inputs).map_err(run_error)?;
        let mut rest = Vec::new();
        for (name, value) in outputs {
            match carry.links.iter().position(|(_, out)| out == name) {
                Some(k) => carry.current[k] = Some(value),
                None => rest.push((name, value)),
            }
        }
        let Some(choice) = keep_output else {
            return Ok(None);
        };
        if rest.is_empty() {
            return Err(EngineError::Run(
                "the model has no output besides its state".into(),
            ));
        }
        let ix = choice.pick(&output_kinds(&rest))?;
        float_output(rest[ix].0, &rest[ix].1).map(Some)
    }
}
