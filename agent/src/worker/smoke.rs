//! The health check of scenario `load` (a model without a tokenizer): load the model, then run
//! it a few times on zero-filled inputs of its declared shapes.

use std::time::Instant;

use crate::engine::{Model, TensorData};
use crate::stats;

use super::engine_choice::Engine;
use super::error::WorkerError;
use super::ms;
use super::protocol::{WorkerJob, WorkerOutcome};

/// Loads the job's model and runs a smoke inference (`min_queries` runs, at least one).
pub fn load_check(job: &WorkerJob) -> Result<WorkerOutcome, WorkerError> {
    let engine = Engine::start(job)?;
    let start = Instant::now();
    let mut model = engine.load(job, &job.model_path)?;
    let load_ms = ms(start.elapsed());
    let smoke = smoke_inference(&mut model, job.min_queries.max(1))?;
    Ok(WorkerOutcome::Loaded { load_ms, smoke })
}

/// Runs a model a few times on zero-filled inputs of its declared shapes (a dynamic dimension is
/// 1 first, 64 elsewhere: a batch of one, 64 tokens or a 64-pixel side), so a model that loads but
/// cannot run fails its health check. Inputs other than float32 and int64 cannot be made up; the
/// answer then says so.
pub fn smoke_inference(model: &mut Model, runs: u32) -> Result<String, WorkerError> {
    let mut named = Vec::new();
    for input in &model.inputs {
        let shape: Vec<usize> = input
            .shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| match (axis, d) {
                (_, d) if d > 0 => d as usize,
                (0, _) => 1,
                _ => 64,
            })
            .collect();
        let count = shape.iter().product();
        let values = match input.dtype.as_str() {
            "f32" => TensorData::F32(vec![0.0; count]),
            "i64" => TensorData::I64(vec![0; count]),
            other => {
                return Ok(format!(
                    "no smoke inference: input `{}` is {other}, not float32 or int64",
                    input.name
                ))
            }
        };
        named.push((input.name.clone(), shape, values));
    }
    let described: Vec<String> = named
        .iter()
        .map(|(name, shape, _)| format!("{name} {shape:?}"))
        .collect();
    let feed = model.feed_tensors(named)?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        model.run(&feed).map_err(WorkerError::Smoke)?;
        times.push(ms(start.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    Ok(format!(
        "{runs} inferences on zero-filled inputs ({}) ok, p50 {:.2} ms",
        described.join(", "),
        stats::nearest_rank(&times, 50.0)
    ))
}
