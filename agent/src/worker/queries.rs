//! What one query of a job runs, prepared before timing starts: a feed per query for text and
//! image input, or an audio stream whose recurrent state goes from query to query. Scenarios see
//! only [`Queries::run`], "run query i", so every scenario works with every input kind.

use std::path::PathBuf;

use crate::engine::{EngineError, Feed, FloatOutput, Model, OutputChoice};

use super::audio_input::{self, AudioSpec, Stream};
use super::error::{InputError, WorkerError};
use super::image_input::{self, ImageSpec};
use super::protocol::{MediaInput, WorkerJob};
use super::text_input;

/// The audio settings of a job's media input, if it is audio.
fn audio_spec(media: &MediaInput) -> Option<(&[PathBuf], AudioSpec)> {
    match media {
        MediaInput::Audio {
            files,
            sample_rate,
            chunk_samples,
            context_samples,
        } => Some((
            files,
            AudioSpec {
                sample_rate: *sample_rate,
                chunk_samples: *chunk_samples,
                context_samples: *context_samples,
            },
        )),
        MediaInput::Image { .. } => None,
    }
}

/// The image settings of a job's media input, if it is images.
fn image_spec(media: &MediaInput) -> Option<(&[PathBuf], ImageSpec)> {
    match media {
        MediaInput::Image {
            files,
            width,
            height,
            resize,
            mean,
            std,
        } => Some((
            files,
            ImageSpec {
                width: *width,
                height: *height,
                pad: resize == "pad",
                mean: *mean,
                std: *std,
            },
        )),
        MediaInput::Audio { .. } => None,
    }
}

/// The queries of a run.
pub enum Queries {
    /// Query i feeds `feeds[i % len]`.
    Feeds(Vec<Feed>),
    /// Query i is chunk i of the audio, with the state of chunk i - 1.
    Stream(Stream),
}

/// What the queries hold, for the report.
pub struct Prepared {
    pub queries: Queries,
    /// Tokens per query for text input; 0 otherwise.
    pub mean_tokens: f64,
}

impl Queries {
    /// Reads and prepares the job's input for `model`, `job.batch` samples a query.
    pub fn prepare(job: &WorkerJob, model: &Model) -> Result<Prepared, WorkerError> {
        let rows = job.batch.max(1) as usize;
        match &job.media {
            None => {
                let sentences = text_input::tokenize(job)?;
                let mean_tokens = sentences.iter().map(|t| t.ids.len()).sum::<usize>() as f64
                    / sentences.len().max(1) as f64;
                let feeds = (0..sentences.len())
                    .map(|start| {
                        let batch = text_input::batch(&sentences, start, rows);
                        let named = text_input::feed_for(model, &batch)?;
                        Ok(model.feed(named, [batch.rows, batch.columns])?)
                    })
                    .collect::<Result<Vec<_>, WorkerError>>()?;
                Ok(Prepared {
                    queries: Queries::Feeds(feeds),
                    mean_tokens,
                })
            }
            Some(media) => {
                media.check()?;
                let queries = if let Some((files, spec)) = audio_spec(media) {
                    let chunks = files
                        .iter()
                        .map(|f| audio_input::load_chunks(f, spec))
                        .collect::<Result<Vec<_>, _>>()?;
                    Queries::Stream(Stream::new(model, &chunks, spec, rows)?)
                } else {
                    let (files, spec) = image_spec(media).expect("audio or image");
                    let images = files
                        .iter()
                        .map(|f| image_input::load(f, spec))
                        .collect::<Result<Vec<_>, _>>()?;
                    let feeds = (0..images.len())
                        .map(|start| image_input::feed(model, &images, start, rows, spec))
                        .collect::<Result<Vec<_>, _>>()?;
                    Queries::Feeds(feeds)
                };
                Ok(Prepared {
                    queries,
                    mean_tokens: 0.0,
                })
            }
        }
    }

    /// Runs query `i` and drops its outputs.
    pub fn run(&mut self, model: &mut Model, i: usize) -> Result<(), EngineError> {
        match self {
            Queries::Feeds(feeds) => model.run(&feeds[i % feeds.len()]),
            Queries::Stream(stream) => stream.run(model, i, None).map(drop),
        }
    }
}

/// The chosen outputs of a model and a reference (`choices`: the model's, the reference's) on
/// every audio or image input, paired for a quality metric: one pair per image; one pair per
/// audio file, each output the chunks' outputs one after another (`[chunks, width]`), every file
/// streamed from zeros.
pub fn quality_pairs(
    media: &MediaInput,
    candidate: &mut Model,
    reference: &mut Model,
    choices: [&OutputChoice; 2],
) -> Result<Vec<(FloatOutput, FloatOutput, Vec<i64>)>, WorkerError> {
    media.check()?;
    let mut pairs = Vec::new();
    if let Some((files, spec)) = audio_spec(media) {
        for file in files {
            let chunks = vec![audio_input::load_chunks(file, spec)?];
            let track = |model: &mut Model, choice| -> Result<FloatOutput, InputError> {
                let mut stream = Stream::new(model, &chunks, spec, 1)?;
                let mut shape = Vec::new();
                let mut values = Vec::new();
                for i in 0..stream.len() {
                    let out = stream
                        .run(model, i, Some(choice))?
                        .expect("the output was asked for");
                    shape = vec![stream.len() as i64, *out.shape.last().unwrap_or(&1)];
                    values.extend(out.values);
                }
                if values.len() as i64 != shape.iter().product::<i64>() {
                    return Err(InputError::NotOneRowPerChunk {
                        values: values.len(),
                        chunks: stream.len(),
                    });
                }
                Ok(FloatOutput { shape, values })
            };
            pairs.push((
                track(candidate, choices[0])?,
                track(reference, choices[1])?,
                Vec::new(),
            ));
        }
    } else {
        let (files, spec) = image_spec(media).expect("audio or image");
        let images = files
            .iter()
            .map(|f| image_input::load(f, spec))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..images.len() {
            let output = |model: &mut Model, choice| -> Result<FloatOutput, InputError> {
                let feed = image_input::feed(model, &images, i, 1, spec)?;
                Ok(model.run_output(&feed, choice)?)
            };
            pairs.push((
                output(candidate, choices[0])?,
                output(reference, choices[1])?,
                Vec::new(),
            ));
        }
    }
    Ok(pairs)
}
