//! What the agent's benchmark programs share: the command line's round count, the set-up's
//! cache, and a worker job with everything but the measurement left at its default.

use std::path::{Path, PathBuf};

use edgefleet_agent::worker::protocol::WorkerJob;

/// The repository root and the set-up's cache (`EDGEFLEET_CACHE`, else `.cache/edgefleet`).
pub(crate) fn root_and_cache() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = std::env::var_os("EDGEFLEET_CACHE")
        .map_or_else(|| root.join(".cache/edgefleet"), PathBuf::from);
    (root, cache)
}

/// A file the set-up made, or a panic saying to run it.
pub(crate) fn need(cache: &Path, relative: &str) -> PathBuf {
    let path = cache.join(relative);
    assert!(
        path.is_file(),
        "{} missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

/// The rounds to alternate, from the first argument (default 3).
pub(crate) fn rounds() -> usize {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3)
}

/// A job for `scenario` on `model` with one repetition and no conditions, quality or media.
pub(crate) fn job(
    library: &Path,
    model: &Path,
    tokenizer: &Path,
    sentences: Vec<String>,
    scenario: &str,
) -> WorkerJob {
    WorkerJob {
        onnxruntime_library: library.to_path_buf(),
        model_path: model.to_path_buf(),
        tokenizer_path: Some(tokenizer.to_path_buf()),
        sentences,
        sequence_length: None,
        threads: 1,
        warmup_queries: 1,
        min_queries: 1,
        min_duration_ms: 0,
        max_duration_ms: 3_600_000,
        repetitions: 1,
        scenario: scenario.into(),
        batch: 1,
        target_qps: 0.0,
        p99_bound_ms: 0.0,
        seed: 0,
        peak_search: false,
        sensors_root: PathBuf::from("/"),
        idle_power_s: 0.0,
        max_start_temp_c: None,
        max_wait_s: 0.0,
        quality: None,
        prompt_tokens: 0,
        generate_tokens: 0,
        engine: String::new(),
        execution_provider: String::new(),
        graph_optimization: String::new(),
        inter_op_threads: 0,
        media: None,
    }
}
