//! What one query of a job runs, prepared before timing starts: a feed per query for text and
//! image input, or an audio stream whose recurrent state goes from query to query. Scenarios see
//! only [`Queries::run`], "run query i", so every scenario works with every input kind.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::{Feed, FloatOutput, Model};

use super::audio_input::{self, AudioSpec, Stream};
use super::image_input::{self, ImageSpec};
use super::{text_input, WorkerJob};

/// Audio or image input of a job (text input is the job's `sentences`); local file paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaInput {
    Audio {
        files: Vec<PathBuf>,
        sample_rate: u32,
        chunk_samples: u32,
        context_samples: u32,
    },
    Image {
        files: Vec<PathBuf>,
        width: u32,
        height: u32,
        /// stretch | pad
        resize: String,
        mean: [f32; 3],
        std: [f32; 3],
    },
}

impl MediaInput {
    /// Checks values that arrived over the wire (a suite already validated them once).
    pub fn check(&self) -> Result<(), String> {
        let ok = match self {
            MediaInput::Audio {
                files,
                sample_rate,
                chunk_samples,
                ..
            } => !files.is_empty() && *sample_rate > 0 && *chunk_samples > 0,
            MediaInput::Image {
                files,
                width,
                height,
                resize,
                std,
                ..
            } => {
                !files.is_empty()
                    && *width > 0
                    && *height > 0
                    && edgefleet_suites::Resize::NAMES.contains(&resize.as_str())
                    && std.iter().all(|s| *s > 0.0)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("the job's input settings are not usable: {self:?}"))
        }
    }

    fn audio_spec(&self) -> Option<(&[PathBuf], AudioSpec)> {
        match self {
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

    fn image_spec(&self) -> Option<(&[PathBuf], ImageSpec)> {
        match self {
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
    pub fn prepare(job: &WorkerJob, model: &Model) -> Result<Prepared, String> {
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
                        model
                            .feed(named, [batch.rows, batch.columns])
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Prepared {
                    queries: Queries::Feeds(feeds),
                    mean_tokens,
                })
            }
            Some(media) => {
                media.check()?;
                let queries = if let Some((files, spec)) = media.audio_spec() {
                    let chunks = files
                        .iter()
                        .map(|f| audio_input::load_chunks(f, spec))
                        .collect::<Result<Vec<_>, _>>()?;
                    Queries::Stream(Stream::new(model, &chunks, spec, rows)?)
                } else {
                    let (files, spec) = media.image_spec().expect("audio or image");
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
    pub fn run(&mut self, model: &mut Model, i: usize) -> Result<(), String> {
        match self {
            Queries::Feeds(feeds) => model
                .run(&feeds[i % feeds.len()])
                .map_err(|e| e.to_string()),
            Queries::Stream(stream) => stream.run(model, i, false).map(drop),
        }
    }
}

/// The first outputs of a model and a reference on every audio or image input, paired for a
/// quality metric: one pair per image; one pair per audio file, each output the chunks' outputs
/// one after another (`[chunks, width]`), every file streamed from zeros.
pub fn quality_pairs(
    media: &MediaInput,
    candidate: &mut Model,
    reference: &mut Model,
) -> Result<Vec<(FloatOutput, FloatOutput, Vec<i64>)>, String> {
    media.check()?;
    let mut pairs = Vec::new();
    if let Some((files, spec)) = media.audio_spec() {
        for file in files {
            let chunks = vec![audio_input::load_chunks(file, spec)?];
            let track = |model: &mut Model| -> Result<FloatOutput, String> {
                let mut stream = Stream::new(model, &chunks, spec, 1)?;
                let mut shape = Vec::new();
                let mut values = Vec::new();
                for i in 0..stream.len() {
                    let out = stream
                        .run(model, i, true)?
                        .expect("the output was asked for");
                    shape = vec![stream.len() as i64, *out.shape.last().unwrap_or(&1)];
                    values.extend(out.values);
                }
                if values.len() as i64 != shape.iter().product::<i64>() {
                    return Err(format!(
                        "the model's output per chunk is not one row ({} values over {} chunks)",
                        values.len(),
                        stream.len()
                    ));
                }
                Ok(FloatOutput { shape, values })
            };
            pairs.push((track(candidate)?, track(reference)?, Vec::new()));
        }
    } else {
        let (files, spec) = media.image_spec().expect("audio or image");
        let images = files
            .iter()
            .map(|f| image_input::load(f, spec))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..images.len() {
            let output = |model: &mut Model| -> Result<FloatOutput, String> {
                let feed = image_input::feed(model, &images, i, 1, spec)?;
                model.run_output(&feed).map_err(|e| e.to_string())
            };
            pairs.push((output(candidate)?, output(reference)?, Vec::new()));
        }
    }
    Ok(pairs)
}
