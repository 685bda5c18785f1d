//! The inference engines: ONNX Runtime through `ort`, loaded from a shared library at run time,
//! and (cargo feature `tract`) the pure-Rust tract. This module tree is the only one that touches
//! an engine, and it runs only inside worker processes: [`library`] loads ONNX Runtime and says
//! what it offers, [`session`] loads models and runs them, [`kv_cache`] carries state between
//! runs (a decoder's key/value cache, a streaming model's recurrent state), [`output_choice`]
//! decides which output a quality metric compares, and [`tract`] is the second engine.

pub mod kv_cache;
pub mod library;
pub mod output_choice;
pub mod session;
#[cfg(feature = "tract")]
pub mod tract;

use std::path::PathBuf;

pub use kv_cache::{CacheKind, Carry, KvCache};
pub use library::Runtime;
pub use output_choice::{OutputChoice, OutputKind};
pub use session::{Feed, Model, SessionSettings};

/// Name of this engine on results.
pub const ENGINE_NAME: &str = "onnxruntime";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error("cannot load model {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("inference failed: {0}")]
    Run(String),
    /// A session setting the loaded library cannot honour (provider, optimization level).
    #[error("{0}")]
    Setting(String),
    #[error(
        "model input `{name}` is {dtype}, but edgefleet can only feed int64 token inputs to it"
    )]
    UnsupportedInput { name: String, dtype: String },
    /// The output a quality check names is not among the model's (listed in `outputs`).
    #[error("the model has no output `{name}` (its outputs: {outputs})")]
    NoSuchOutput { name: String, outputs: String },
    #[error("model output `{name}` is {dtype}; quality metrics need a float32 output")]
    OutputNotFloat { name: String, dtype: String },
    #[error("the model has no float32 output to compare (its outputs: {outputs})")]
    NoFloatOutput { outputs: String },
}

/// One model input as the session declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub dtype: String,
    /// -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// A float32 output: its shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatOutput {
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

impl FloatOutput {
    /// The size of the last dimension (1 for a scalar).
    pub fn width(&self) -> usize {
        self.shape.last().map_or(1, |&w| w.max(0) as usize)
    }
}

/// The values of one input tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    I64(Vec<i64>),
    F32(Vec<f32>),
}
