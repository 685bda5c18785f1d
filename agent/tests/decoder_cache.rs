//! The two ways a decoder's key/value cache is kept, on the set-up's real SmolLM2 files and the
//! real ONNX Runtime: the 4-bit decoder (GroupQueryAttention) is found to write its cache in
//! place and is run that way, the float32 reference (standard ONNX, a Concat cache) keeps a
//! growing cache, and the in-place run chooses the same tokens as the growing one.
//!
//! Needs `scripts/setup.sh` (the test command runs it first).

use std::path::PathBuf;

use edgefleet_agent::engine::{CacheKind, Model, Runtime, SessionSettings};

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
const ANSWER: &str = "The capital of France is Paris.";
const END_OF_TURN: i64 = 2; // <|im_end|>

fn cached(relative: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = std::env::var_os("EDGEFLEET_CACHE")
        .map_or_else(|| root.join(".cache/edgefleet"), PathBuf::from)
        .join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh (the test command does) first",
        path.display()
    );
    path
}

/// Greedy tokens after `prompt` until the end of the turn or `max` tokens, in the cache the
/// model picks (`cache_for`) or, with `growing`, in a growing cache whatever the model allows.
fn greedy(model: &mut Model, prompt: &[i64], max: usize, growing: bool) -> Vec<i64> {
    let mut cache = if growing {
        model.empty_cache().unwrap()
    } else {
        model.cache_for(prompt.len() + max).unwrap()
    };
    let mut next = model.decode_step(&mut cache, prompt).unwrap();
    let mut out = Vec::new();
    while next != END_OF_TURN && out.len() < max {
        out.push(next);
        next = model.decode_step(&mut cache, &[next]).unwrap();
    }
    out
}

// One test: ONNX Runtime's environment is set up once per process.
#[test]
fn the_4bit_decoder_writes_its_cache_in_place_and_decodes_like_the_growing_cache() {
    let runtime = Runtime::load(&cached("lib/libonnxruntime.so.1.31.1")).unwrap();
    let settings = SessionSettings {
        intra_op_threads: 1,
        inter_op_threads: 1,
        ..SessionSettings::default()
    };
    let tokenizer =
        tokenizers::Tokenizer::from_file(cached("models/smollm2-135m/tokenizer.json")).unwrap();
    let prompt: Vec<i64> = tokenizer
        .encode(PROMPT, false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&id| id as i64)
        .collect();
    let text = |ids: &[i64]| {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        tokenizer.decode(&ids, true).unwrap().trim().to_string()
    };

    let mut q4 = runtime
        .load_model(&cached("models/smollm2-135m/model.q4.onnx"), &settings)
        .unwrap();
    assert_eq!(q4.cache_kind().unwrap(), CacheKind::InPlace);
    let in_place = greedy(&mut q4, &prompt, 24, false);
    assert_eq!(text(&in_place), ANSWER);
    assert_eq!(
        in_place,
        greedy(&mut q4, &prompt, 24, true),
        "the in-place cache and the growing cache choose the same tokens"
    );
    // A cache reset after a longer, unrelated sequence decodes the prompt as a fresh one does:
    // the stale keys past the new sequence's mask are never read.
    let mut cache = q4.cache_for(prompt.len() + 24).unwrap();
    let unrelated: Vec<i64> = (100..100 + prompt.len() as i64 + 20).collect();
    q4.decode_step(&mut cache, &unrelated).unwrap();
    q4.reset_cache(&mut cache).unwrap();
    let mut next = q4.decode_step(&mut cache, &prompt).unwrap();
    let mut reused = Vec::new();
    while next != END_OF_TURN && reused.len() < 24 {
        reused.push(next);
        next = q4.decode_step(&mut cache, &[next]).unwrap();
    }
    assert_eq!(reused, in_place, "a reset cache decodes like a new one");
    // Past the buffer's length: a clear error, not a write out of bounds.
    let mut cache = q4.cache_for(prompt.len() + 1).unwrap();
    q4.decode_step(&mut cache, &prompt).unwrap();
    q4.decode_step(&mut cache, &[in_place[0]]).unwrap();
    let err = q4.decode_step(&mut cache, &[in_place[1]]).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the key/value cache holds {} tokens",
            prompt.len() + 1
        )),
        "{err}"
    );

    let mut reference = runtime
        .load_model(&cached("models/smollm2-135m/model.fp32.onnx"), &settings)
        .unwrap();
    assert_eq!(reference.cache_kind().unwrap(), CacheKind::Growing);
    assert_eq!(text(&greedy(&mut reference, &prompt, 24, false)), ANSWER);
}
