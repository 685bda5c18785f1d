//! The generate scenario: a decoder with a key/value cache reads a prompt of P tokens and then
//! generates G tokens greedily, one step at a time. Time to first token covers the prompt's
//! step (prefill); time per output token covers each later step. Tokenization is timed apart.

use std::time::{Duration, Instant};

use crate::engine::{CacheKind, EngineError, KvCache, Model};
use crate::procfs;
use crate::stats;

use super::conditions::Conditions;
use super::engine_choice::Engine;
use super::error::{InputError, WorkerError};
use super::measure::RunLength;
use super::ms;
use super::protocol::{GenerateReport, WorkerJob, WorkerReport};
use super::text_input;

/// Runs generations until the run-length rules are met, for every repetition.
pub fn run(
    job: &WorkerJob,
    engine: &Engine,
    mut model: Model,
    load_ms: f64,
) -> Result<WorkerReport, WorkerError> {
    if !model.is_decoder() {
        let names: Vec<&str> = model.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(WorkerError::NotADecoder(names.join(", ")));
    }
    let (prompt_len, new_tokens) = (
        job.prompt_tokens.max(1) as usize,
        job.generate_tokens.max(1) as usize,
    );
    let tokenizer = text_input::load_tokenizer(&WorkerJob {
        sequence_length: None,
        ..job.clone()
    })?;
    let tokenize_start = Instant::now();
    let prompt = prompt(&tokenizer, &job.sentences, prompt_len)?;
    let tokenize_ms = ms(tokenize_start.elapsed());

    let conditions = Conditions::before_run(job);
    // The first inference is the model's cold start: it includes the probe that finds out how
    // the cache can be kept (a few short runs, the first the model ever does) and the cache's
    // allocation, then the prompt's prefill.
    let first = Instant::now();
    // One cache for every generation, as a runtime allocates it once per context: reset, not
    // rebuilt, so no generation's TTFT pays for allocating it.
    let mut cache = model.cache_for(prompt_len + new_tokens)?;
    model.decode_step(&mut cache, &prompt)?;
    let first_inference_ms = ms(first.elapsed());
    for _ in 0..job.warmup_queries {
        generation(&mut model, &mut cache, &prompt, new_tokens)?;
    }

    let rules = RunLength {
        min_duration: Duration::from_millis(job.min_duration_ms),
        max_duration: Duration::from_millis(job.max_duration_ms),
        min_queries: job.min_queries as usize,
    };
    let watch = conditions.watch();
    let cpu_before = procfs::own_cpu_seconds();
    let (mut totals, mut ttfts, mut tpots, mut medians) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut wall = Duration::ZERO;
    let mut valid = true;
    for _ in 0..job.repetitions.max(1) {
        let start = Instant::now();
        let first = totals.len();
        loop {
            let g = generation(&mut model, &mut cache, &prompt, new_tokens)?;
            totals.push(g.total_ms);
            ttfts.push(g.ttft_ms);
            tpots.extend(g.tpot_ms);
            if rules.done(totals.len() - first, start.elapsed()) {
                break;
            }
        }
        wall += start.elapsed();
        valid &= rules.met(totals.len() - first, start.elapsed());
        let mut this = totals[first..].to_vec();
        this.sort_by(f64::total_cmp);
        medians.push(stats::nearest_rank(&this, 50.0));
    }
    let observed = watch.finish();
    let cpu_percent = procfs::cpu_percent_since(cpu_before, wall);
    let ttft = stats::summarize(&ttfts).expect("at least one generation");
    let tpot = stats::summarize(&tpots);
    let generated = totals.len() * new_tokens;
    Ok(WorkerReport {
        engine: engine.name.to_string(),
        engine_version: engine.version.clone(),
        execution_provider: engine.provider.to_string(),
        load_ms,
        first_inference_ms,
        samples: totals.len() as u64,
        duration_s: wall.as_secs_f64(),
        valid,
        latency_ms: stats::summarize(&totals).expect("at least one generation"),
        throughput_per_s: generated as f64 / wall.as_secs_f64(),
        cpu_percent,
        peak_rss_bytes: procfs::own_peak_rss_bytes().unwrap_or(0),
        mean_tokens: prompt_len as f64,
        repetition_cv: stats::coefficient_of_variation(&medians),
        repetition_medians_ms: medians,
        latency_histogram: stats::hdr_histogram(&totals),
        batch: 1,
        server: None,
        early_stopping_percentile: 0.0,
        early_stopping_ms: None,
        conditions: observed,
        generate: Some(GenerateReport {
            prompt_tokens: prompt_len as u32,
            generated_tokens: new_tokens as u32,
            ttft_ms_p50: ttft.p50,
            ttft_ms_p90: ttft.p90,
            tpot_ms_p50: tpot.as_ref().map_or(0.0, |t| t.p50),
            tpot_ms_p90: tpot.as_ref().map_or(0.0, |t| t.p90),
            prefill_tokens_per_s: prompt_len as f64 / (ttft.mean / 1000.0),
            decode_tokens_per_s: tpot.as_ref().map_or(0.0, |t| 1000.0 / t.mean),
            tokenize_ms,
            kv_cache_in_place: cache.kind() == CacheKind::InPlace,
        }),
    })
}

/// One generation's timings.
struct Generation {
    total_ms: f64,
    ttft_ms: f64,
    tpot_ms: Vec<f64>,
}

/// Prefill, then `new_tokens - 1` single-token steps, each fed the previous step's choice, in
/// `cache` emptied first.
fn generation(
    model: &mut Model,
    cache: &mut KvCache,
    prompt: &[i64],
    new_tokens: usize,
) -> Result<Generation, EngineError> {
    let start = Instant::now();
    model.reset_cache(cache)?;
    let mut next = model.decode_step(cache, prompt)?;
    let ttft_ms = ms(start.elapsed());
    let mut tpot_ms = Vec::with_capacity(new_tokens);
    for _ in 1..new_tokens {
        let step = Instant::now();
        next = model.decode_step(cache, &[next])?;
        tpot_ms.push(ms(step.elapsed()));
    }
    Ok(Generation {
        total_ms: ms(start.elapsed()),
        ttft_ms,
        tpot_ms,
    })
}

/// The input sentences' tokens, one after another and repeated, cut to exactly `len` tokens.
fn prompt(
    tokenizer: &tokenizers::Tokenizer,
    sentences: &[String],
    len: usize,
) -> Result<Vec<i64>, InputError> {
    let ids: Vec<i64> = text_input::encode(tokenizer, sentences)?
        .into_iter()
        .flat_map(|t| t.ids)
        .collect();
    if ids.is_empty() {
        return Err(InputError::EmptyPrompt);
    }
    Ok(ids.iter().copied().cycle().take(len).collect())
}
