//! The inputs under `fuzz/regressions/` that once crashed the worker's decoders (each a fixed
//! bug, minimized by `cargo fuzz tmin`), replayed on stable as the fuzz targets run them: every
//! one must end in a value or an error. The targets' own replay is `scripts/fuzz.sh`.

use std::path::{Path, PathBuf};

use edgefleet_agent::worker::audio_input::{chunks, parse_wav};
use edgefleet_agent::worker::image_input::{decode, prepare, ImageSpec};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn wav_regressions_decode_or_are_refused() {
    for (path, bytes) in inputs("wav_decode") {
        if let Ok(wav) = parse_wav(&bytes) {
            let _ = chunks(&wav.samples, 512, 64);
        } else {
            eprintln!("{}: refused", path.display());
        }
    }
}

#[test]
fn image_regressions_decode_or_are_refused() {
    for (path, bytes) in inputs("image_decode") {
        // The first byte is the target's choice of size and padding (see its source).
        let Some((&mode, file)) = bytes.split_first() else {
            continue;
        };
        if let Ok(rgb) = decode(file) {
            let spec = ImageSpec {
                width: 1 + u32::from(mode & 0x0f),
                height: 1 + u32::from(mode >> 4),
                pad: mode & 1 == 1,
                mean: [0.5; 3],
                std: [0.25; 3],
            };
            let _ = prepare(&rgb, spec);
        } else {
            eprintln!("{}: refused", path.display());
        }
    }
}
