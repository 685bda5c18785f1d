//! The worker's errors: [`InputError`] for preparing text, audio and image input (with
//! [`WavError`] for audio files), and
//! [`WorkerError`], why a job failed. A failed job crosses to the daemon as
//! [`WorkerOutcome::Failed`](super::protocol::WorkerOutcome::Failed), the error's `Display`.

use std::path::PathBuf;

use crate::engine::EngineError;

use super::protocol::ProtocolError;
use super::quality::QualityError;

/// Why bytes are not a WAV file edgefleet can read.
#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    #[error("the WAV file has no `fmt ` chunk")]
    NoFormat,
    #[error("the WAV file has no `data` chunk")]
    NoData,
    #[error("the WAV `fmt ` chunk is too short")]
    FormatTooShort,
    #[error("the WAV file declares no channels or a sample rate of 0")]
    NoChannels,
    #[error("unsupported WAV encoding (format {tag}, {bits} bits); use PCM of 8 to 32 bits or 32-bit float")]
    Unsupported { tag: u16, bits: u16 },
    /// Anything else `hound` found wrong with the file.
    #[error(transparent)]
    Malformed(hound::Error),
}

/// Why a job's input cannot be read or fed to its model.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("text input needs the model's tokenizer.json, and the model has none")]
    NoTokenizer,
    #[error("cannot load tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    /// The tokenizer refused the padding or truncation settings.
    #[error("tokenizer: {0}")]
    TokenizerSettings(String),
    #[error("the workload has no sentences")]
    NoSentences,
    #[error("cannot tokenize `{sentence}`: {message}")]
    Tokenize { sentence: String, message: String },
    #[error("the input sentences tokenize to nothing")]
    EmptyPrompt,
    #[error("model input `{name}` ({dtype} {shape}) cannot be fed from text; text feeds input_ids, attention_mask and token_type_ids")]
    NotText {
        name: String,
        dtype: String,
        shape: String,
    },
    #[error("model input `{name}` is {dtype}, but token inputs are int64")]
    NotTokens { name: String, dtype: String },
    /// A model input whose declared shape the workload's does not fit; `note` ends the message
    /// (a hint, or how the shape came about).
    #[error("model input `{name}` expects shape {expected} but the workload gives {given}{note}")]
    Shape {
        name: String,
        expected: String,
        given: String,
        note: String,
    },
    #[error("image input feeds one input [batch, 3, height, width]; this model takes {0}")]
    ImageInputs(String),
    #[error("model input `{name}` is {dtype}, but image input is float32")]
    NotImage { name: String, dtype: String },
    #[error("cannot read image {}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("cannot read {}: {source}", path.display())]
    ReadAudio {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Wav {
        path: PathBuf,
        #[source]
        source: WavError,
    },
    #[error("{} is at {have} Hz but the suite's input is at {want} Hz (edgefleet does not resample)", path.display())]
    SampleRate { path: PathBuf, have: u32, want: u32 },
    #[error("{} has {samples} samples, fewer than one chunk of {chunk}", path.display())]
    TooShort {
        path: PathBuf,
        samples: usize,
        chunk: u32,
    },
    #[error("model input `{name}` ({dtype} {shape}) cannot be fed from audio; audio feeds one float32 input [batch, samples], an `sr` sample rate and recurrent state (an input X with an output XN)")]
    NotAudio {
        name: String,
        dtype: String,
        shape: String,
    },
    #[error("the model has no float32 input to feed audio to")]
    NoAudioInput,
    #[error("the model's output per chunk is not one row ({values} values over {chunks} chunks)")]
    NotOneRowPerChunk { values: usize, chunks: usize },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a worker's job failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Quality(#[from] QualityError),
    #[error("smoke inference on zero-filled inputs failed: {0}")]
    Smoke(#[source] EngineError),
    #[error("tract runs on one thread; this run asks for {0}")]
    TractThreads(u32),
    #[error("this agent was built without the tract engine (cargo feature `tract`)")]
    NoTract,
    #[error("unknown engine `{0}` (onnxruntime, tract)")]
    UnknownEngine(String),
    #[error("tract runs text input only here; audio and image input need the onnxruntime engine")]
    TractMedia,
    #[error("the generate scenario needs text input")]
    GenerateNeedsText,
    /// The generate scenario on a model without a key/value cache (its input names).
    #[error(
        "the generate scenario needs a decoder with past_key_values.* inputs; this model takes {0}"
    )]
    NotADecoder(String),
}
