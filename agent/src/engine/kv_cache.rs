//! State carried from one run of a model to the next: a decoder's key/value cache (the
//! generate scenario, and logits for quality), and the recurrent state of a streaming model
//! ([`Carry`], Silero VAD's `state` → `stateN`). Both stay ONNX Runtime values between runs; a
//! decoder that allows it (GroupQueryAttention) writes its cache in place into buffers bound once
//! as both past and present ([`CacheKind::InPlace`]), as ONNX Runtime GenAI runs such models.

use ort::logging::LogLevel;
use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions};
use ort::value::{DynTensor, DynValue, Tensor};

use super::session::{float_output, output_kinds, Feed, Model};
use super::{EngineError, FloatOutput, OutputChoice};

/// The key/value cache of a decoder between steps.
pub struct KvCache {
    store: Store,
    /// Tokens the cache holds.
    pub length: usize,
}

impl KvCache {
    /// How this cache is kept.
    pub fn kind(&self) -> CacheKind {
        match self.store {
            Store::Growing(_) => CacheKind::Growing,
            Store::InPlace { .. } => CacheKind::InPlace,
        }
    }
}

/// Where a decoder's keys and values live between steps.
enum Store {
    /// The `present.*` outputs of one step, kept as ONNX Runtime values and fed back as
    /// `past_key_values.*`: the decoder copies the whole cache into a new, longer one every step.
    Growing(Vec<(String, DynValue)>),
    /// One buffer per `past_key_values.*` input, `capacity` tokens long, bound with IO binding as
    /// both that input and its `present.*` output: the decoder writes each step's keys and values
    /// in place (ONNX Runtime GenAI's past/present buffer sharing, which `GroupQueryAttention`
    /// supports). The binding holds the buffers.
    InPlace {
        binding: Box<IoBinding>,
        capacity: usize,
        /// Run options that keep ONNX Runtime from logging a failed run: set for the probe,
        /// where a decoder that cannot share its buffer is expected to fail.
        quiet: Option<RunOptions>,
    },
}

/// How a decoder's cache is kept (results carry it as `kv_cache_in_place`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Past and present apart: the decoder copies the cache into a longer one every step.
    Growing,
    /// Past and present share one buffer the decoder writes into.
    InPlace,
}

fn run_error(e: ort::Error) -> EngineError {
    EngineError::Run(e.to_string())
}

impl Model {
    /// Whether the model is a decoder with a key/value cache (HF/Optimum naming).
    pub fn is_decoder(&self) -> bool {
        self.inputs
            .iter()
            .any(|i| i.name.starts_with("past_key_values."))
    }

    /// The `past_key_values.*` inputs with their key/value heads and width.
    fn cache_inputs(&self) -> Result<Vec<(String, usize, usize)>, EngineError> {
        self.inputs
            .iter()
            .filter(|i| i.name.starts_with("past_key_values."))
            .map(|i| {
                let [_, heads, _, width] = i.shape[..] else {
                    return Err(EngineError::Run(format!(
                        "decoder input `{}` has shape {:?}, not [batch, heads, past, width]",
                        i.name, i.shape
                    )));
                };
                Ok((i.name.clone(), heads.max(1) as usize, width.max(1) as usize))
            })
            .collect()
    }

    /// An empty growing cache: every `past_key_values.*` input with a past length of 0.
    pub fn empty_cache(&self) -> Result<KvCache, EngineError> {
        let past = self
            .cache_inputs()?
            .into_iter()
            .map(|(name, heads, width)| {
                let tensor = Tensor::from_array(([1usize, heads, 0, width], Vec::<f32>::new()))
                    .map_err(run_error)?;
                Ok((name, tensor.into_dyn()))
            })
            .collect::<Result<_, EngineError>>()?;
        Ok(KvCache {
            store: Store::Growing(past),
            length: 0,
        })
    }

    /// An empty cache for up to `capacity` tokens, kept the fastest way this decoder allows: in
    /// place when it writes its cache into a shared past/present buffer (the first call finds out
    /// with a short probe), growing otherwise.
    pub fn cache_for(&mut self, capacity: usize) -> Result<KvCache, EngineError> {
        match self.cache_kind()? {
            CacheKind::InPlace => self.in_place_cache(capacity, None),
            CacheKind::Growing => self.empty_cache(),
        }
    }

    /// How this decoder's cache is kept. Decided once per loaded model by running the same two
    /// steps (two prompt tokens, then one) with a growing cache and with one shared buffer: the
    /// shared buffer is used only when ONNX Runtime accepts it and the logits agree. A decoder that
    /// concatenates past and new keys fails the shared run (its present is longer than its past).
    pub fn cache_kind(&mut self) -> Result<CacheKind, EngineError> {
        if let Some(kind) = self.cache_kind {
            return Ok(kind);
        }
        let growing = self.empty_cache()?;
        let growing = self.probe_steps(growing)?;
        // Quiet: a decoder that cannot share its buffer is expected to fail this run.
        let mut options = RunOptions::new().map_err(run_error)?;
        options.set_log_level(LogLevel::Fatal).map_err(run_error)?;
        let shared = self
            .in_place_cache(4, Some(options))
            .and_then(|cache| self.probe_steps(cache));
        let agree = shared.is_ok_and(|shared| {
            growing
                .iter()
                .zip(&shared)
                .all(|(a, b)| logits_agree(&a.values, &b.values))
        });
        let kind = if agree {
            CacheKind::InPlace
        } else {
            CacheKind::Growing
        };
        self.cache_kind = Some(kind);
        Ok(kind)
    }

    fn probe_steps(&mut self, mut cache: KvCache) -> Result<Vec<FloatOutput>, EngineError> {
        Ok(vec![
            self.decoder_step(&mut cache, &[1, 2], false)?,
            self.decoder_step(&mut cache, &[3], false)?,
        ])
    }

    /// A cache of `capacity` tokens bound in place (see [`Store::InPlace`]), zeroed; its runs use
    /// `quiet` when given.
    fn in_place_cache(
        &mut self,
        capacity: usize,
        quiet: Option<RunOptions>,
    ) -> Result<KvCache, EngineError> {
        let inputs = self.cache_inputs()?;
        let session = self.ort("the generate scenario")?;
        let mut binding = session.create_binding().map_err(run_error)?;
        let allocator: &Allocator = session.allocator();
        for (name, heads, width) in inputs {
            let present = format!("present.{}", &name["past_key_values.".len()..]);
            // Zeroed by ort.
            let mut buffer = Tensor::<f32>::new(allocator, [1usize, heads, capacity, width])
                .map_err(run_error)?;
            binding.bind_input(&name, &buffer).map_err(run_error)?;
            binding
                .bind_output(present, &mut buffer)
                .map_err(run_error)?;
        }
        Ok(KvCache {
            store: Store::InPlace {
                binding: Box::new(binding),
                capacity,
                quiet,
            },
            length: 0,
        })
    }

    /// Empties `cache` for a new sequence: a growing cache starts again from empty tensors, an
    /// in-place one keeps its buffers (the decoder reads only the positions the mask covers, and
    /// overwrites them as the new sequence reaches them).
    pub fn reset_cache(&self, cache: &mut KvCache) -> Result<(), EngineError> {
        if let Store::Growing(_) = cache.store {
            *cache = self.empty_cache()?;
        }
        cache.length = 0;
        Ok(())
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
        let (past, new) = (cache.length, tokens.len());
        let ids = Tensor::from_array(([1usize, new], tokens.to_vec())).map_err(run_error)?;
        let mask = Tensor::from_array(([1usize, past + new], vec![1i64; past + new]))
            .map_err(run_error)?;
        let positions = if self.inputs.iter().any(|i| i.name == "position_ids") {
            let positions: Vec<i64> = (past..past + new).map(|p| p as i64).collect();
            Some(Tensor::from_array(([1usize, new], positions)).map_err(run_error)?)
        } else {
            None
        };
        let session = self.ort("the generate scenario")?;
        let logits = match &mut cache.store {
            Store::Growing(held) => {
                let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
                    ("input_ids".into(), ids.into()),
                    ("attention_mask".into(), mask.into()),
                ];
                if let Some(positions) = positions {
                    inputs.push(("position_ids".into(), positions.into()));
                }
                for (name, value) in std::mem::take(held) {
                    inputs.push((name, value.into()));
                }
                let mut logits = None;
                for (name, value) in session.run(inputs).map_err(run_error)? {
                    if name == "logits" {
                        logits = Some(last_logits(&value, every_position)?);
                    } else if let Some(rest) = name.strip_prefix("present.") {
                        held.push((format!("past_key_values.{rest}"), value));
                    }
                }
                logits
            }
            Store::InPlace {
                binding,
                capacity,
                quiet,
            } => {
                if past + new > *capacity {
                    return Err(EngineError::Run(format!(
                        "the key/value cache holds {capacity} tokens; this step needs {}",
                        past + new
                    )));
                }
                binding.bind_input("input_ids", &ids).map_err(run_error)?;
                binding
                    .bind_input("attention_mask", &mask)
                    .map_err(run_error)?;
                if let Some(positions) = &positions {
                    binding
                        .bind_input("position_ids", positions)
                        .map_err(run_error)?;
                }
                // Bound afresh every step: a bound output keeps its first shape, and the logits
                // of a prompt are longer than those of one token.
                let memory = session.allocator().memory_info();
                binding
                    .bind_output_to_device("logits", memory)
                    .map_err(run_error)?;
                let outputs = match quiet {
                    Some(options) => session.run_binding_with_options(binding, options),
                    None => session.run_binding(binding),
                }
                .map_err(run_error)?;
                outputs
                    .get("logits")
                    .map(|value| last_logits(value, every_position))
                    .transpose()?
            }
        };
        cache.length = past + new;
        logits.ok_or_else(|| EngineError::Run("the decoder has no `logits` output".into()))
    }
}

/// The logits of every position, or of the last one only (`[1, 1, vocab]`).
fn last_logits(value: &DynValue, every_position: bool) -> Result<FloatOutput, EngineError> {
    let (shape, values) = value.try_extract_tensor::<f32>().map_err(run_error)?;
    let vocab = *shape.last().unwrap_or(&0);
    Ok(if every_position {
        FloatOutput {
            shape: shape.to_vec(),
            values: values.to_vec(),
        }
    } else {
        FloatOutput {
            shape: vec![1, 1, vocab],
            values: values[values.len().saturating_sub(vocab as usize)..].to_vec(),
        }
    })
}

/// Whether two runs' logits are the same computation: equal within float rounding (1e-4 of the
/// larger magnitude).
fn logits_agree(a: &[f32], b: &[f32]) -> bool {
    let scale = a.iter().chain(b).fold(1f32, |m, v| m.max(v.abs()));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-4 * scale)
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

#[cfg(test)]
mod tests {
    use super::logits_agree;

    #[test]
    fn logits_agree_within_rounding_only() {
        let a = [10.0f32, -3.5, 0.25];
        assert!(logits_agree(&a, &[10.0004, -3.5, 0.2502]));
        assert!(!logits_agree(&a, &[10.0, -3.4, 0.25]), "a real difference");
        assert!(!logits_agree(&a, &a[..2]), "different lengths");
        assert!(
            !logits_agree(&a, &[10.0, -3.5, f32::NAN]),
            "NaN never agrees"
        );
    }
}
