//! The benchmark worker: a separate process (`edgefleet-agent-worker`) that loads ONNX Runtime and
//! one model, runs the workload, and prints a JSON report on stdout. Keeping it out of the daemon
//! means a crashing or memory-hungry model takes down only the worker, and the daemon's own
//! footprint stays small.
//!
//! Layout: [`protocol`] (the JSON the daemon and a worker exchange), [`process`] (starting the
//! worker, its entry points, reading the job), [`run`] (a measured job) with [`measure`],
//! [`queries`], [`generate`] and [`conditions`], [`smoke`] (the `load` health check),
//! [`quality_run`] (a quality comparison) with [`quality`] (its metrics), [`engine_choice`]
//! (ONNX Runtime or tract), the inputs [`text_input`], [`audio_input`] and [`image_input`], and
//! [`error`].

use std::time::Duration;

pub mod audio_input;
pub mod conditions;
pub mod engine_choice;
pub mod error;
pub mod generate;
pub mod image_input;
pub mod measure;
pub mod process;
pub mod protocol;
pub mod quality;
pub mod quality_run;
pub mod queries;
pub mod run;
pub mod smoke;
pub mod text_input;

pub use error::{InputError, WorkerError};
pub use process::{main_job, main_probe, start_error, worker_command, StartError, WORKER_BINARY};
pub use run::run_job;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
