//! A quality comparison in the worker: the job's model and its reference run on the same golden
//! inputs (sentences, images or audio files), their outputs compared by [`quality::compare`].

use std::collections::BTreeMap;

use crate::engine::{FloatOutput, Model, OutputChoice};

use super::engine_choice::{with_fixed_length, Engine};
use super::error::WorkerError;
use super::protocol::{QualityJob, WorkerJob};
use super::quality::{self, QualityError};
use super::{queries, text_input};

/// Runs every golden input through the model and the reference (sentences one at a time, each
/// image, each audio file streamed whole) and compares their outputs by the metric: the outputs
/// the job names, or those the metric picks ([`OutputChoice`]); the reference uses the named
/// output only when it has one of that name.
pub fn run_quality(job: &WorkerJob, q: &QualityJob) -> Result<BTreeMap<String, f64>, WorkerError> {
    let job = &with_fixed_length(job)?;
    let engine = Engine::start(job)?;
    let mut candidate = engine.load(job, &job.model_path)?;
    let mut reference = engine.load(job, &q.reference_path)?;
    let choice = OutputChoice::for_metric(&q.metric, q.output.clone());
    let reference_choice = choice.for_reference(&reference.outputs);
    if let Some(media) = &job.media {
        let pairs = queries::quality_pairs(
            media,
            &mut candidate,
            &mut reference,
            [&choice, &reference_choice],
        )?;
        return Ok(quality::compare(&q.metric, &pairs)?);
    }
    if candidate.is_decoder() {
        let pairs = decoder_pairs(job, &mut candidate, &mut reference)?;
        return Ok(quality::compare(&q.metric, &pairs)?);
    }
    let sentences = text_input::tokenize(job)?;
    let mut pairs = Vec::new();
    for i in 0..sentences.len() {
        let batch = text_input::batch(&sentences, i, 1);
        let shape = [batch.rows, batch.columns];
        let output = |model: &mut Model, choice| -> Result<FloatOutput, WorkerError> {
            let feed = model.feed(text_input::feed_for(model, &batch)?, shape)?;
            Ok(model.run_output(&feed, choice)?)
        };
        let (c, r) = (
            output(&mut candidate, &choice)?,
            output(&mut reference, &reference_choice)?,
        );
        pairs.push((c, r, batch.attention_mask.clone()));
    }
    Ok(quality::compare(&q.metric, &pairs)?)
}

/// A decoder's and its reference's logits at every position of each golden text, read from an
/// empty cache (teacher forcing: both see the same tokens, whatever either would have chosen).
fn decoder_pairs(
    job: &WorkerJob,
    candidate: &mut Model,
    reference: &mut Model,
) -> Result<Vec<(FloatOutput, FloatOutput, Vec<i64>)>, WorkerError> {
    if !reference.is_decoder() {
        return Err(QualityError::ReferenceNotDecoder.into());
    }
    let tokenizer = text_input::load_tokenizer(&WorkerJob {
        sequence_length: None,
        ..job.clone()
    })?;
    let mut pairs = Vec::new();
    for tokens in text_input::encode(&tokenizer, &job.sentences)? {
        if tokens.ids.is_empty() {
            continue;
        }
        let logits = |model: &mut Model| model.prompt_logits(&tokens.ids);
        pairs.push((logits(candidate)?, logits(reference)?, Vec::new()));
    }
    Ok(pairs)
}
