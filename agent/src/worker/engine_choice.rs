//! Which engine a job runs on (ONNX Runtime, or tract with cargo feature `tract`), loading the
//! job's models into it, and the fixed sequence length tract needs.

use std::path::Path;

use crate::engine::{Model, Runtime, SessionSettings, ENGINE_NAME};

use super::error::{InputError, WorkerError};
use super::protocol::WorkerJob;
use super::text_input;

/// The engine a job runs on: ONNX Runtime (the default) or tract.
pub struct Engine {
    pub name: &'static str,
    pub version: String,
    /// The execution provider's full name (`CPUExecutionProvider`, `CUDAExecutionProvider`).
    pub provider: String,
    /// Kept alive while models built from it run.
    runtime: Option<Runtime>,
}

impl Engine {
    pub fn start(job: &WorkerJob) -> Result<Engine, WorkerError> {
        match job.engine.as_str() {
            "" | ENGINE_NAME => {
                let runtime = Runtime::load(&job.onnxruntime_library)?;
                let provider = runtime.provider(&job.execution_provider)?;
                Ok(Engine {
                    name: ENGINE_NAME,
                    version: runtime.version.clone(),
                    provider: provider.to_string(),
                    runtime: Some(runtime),
                })
            }
            #[cfg(feature = "tract")]
            crate::engine::tract::ENGINE_NAME => {
                if job.threads > 1 {
                    return Err(WorkerError::TractThreads(job.threads));
                }
                Ok(Engine {
                    name: crate::engine::tract::ENGINE_NAME,
                    version: crate::engine::tract::ENGINE_VERSION.to_string(),
                    provider: "cpu".into(),
                    runtime: None,
                })
            }
            #[cfg(not(feature = "tract"))]
            "tract" => Err(WorkerError::NoTract),
            other => Err(WorkerError::UnknownEngine(other.to_string())),
        }
    }

    pub fn load(&self, job: &WorkerJob, path: &Path) -> Result<Model, WorkerError> {
        match &self.runtime {
            Some(runtime) => runtime
                .load_model(
                    path,
                    &SessionSettings {
                        intra_op_threads: job.threads.max(1) as usize,
                        inter_op_threads: job.inter_op_threads.max(1) as usize,
                        execution_provider: job.execution_provider.clone(),
                        graph_optimization: job.graph_optimization.clone(),
                    },
                )
                .map_err(WorkerError::from),
            #[cfg(feature = "tract")]
            None if job.media.is_some() => Err(WorkerError::TractMedia),
            #[cfg(feature = "tract")]
            None => {
                // tract plans for one input shape: [batch, the job's fixed sequence length].
                let columns = job.sequence_length.unwrap_or(0) as usize;
                Model::load_tract(path, [job.batch.max(1) as usize, columns])
                    .map_err(WorkerError::from)
            }
            #[cfg(not(feature = "tract"))]
            None => unreachable!("only tract runs without ONNX Runtime"),
        }
    }
}

/// tract plans for one concrete shape: without a fixed sequence length, every sentence is
/// padded to the longest one.
pub fn with_fixed_length(job: &WorkerJob) -> Result<WorkerJob, InputError> {
    if job.engine != "tract" || job.sequence_length.is_some() || job.media.is_some() {
        return Ok(job.clone());
    }
    let longest = text_input::tokenize(job)?
        .iter()
        .map(|t| t.ids.len())
        .max()
        .unwrap_or(1);
    Ok(WorkerJob {
        sequence_length: Some(longest as u32),
        ..job.clone()
    })
}
