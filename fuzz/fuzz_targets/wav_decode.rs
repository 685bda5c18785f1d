//! The worker's WAV decoding (`audio_input::parse_wav`, hound behind a chunk scanner) and the
//! chunking after it: any bytes end in samples or a `WavError`.

#![no_main]

use edgefleet_agent::worker::audio_input::{chunks, parse_wav};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(wav) = parse_wav(data) {
        assert!(wav.channels > 0 && wav.sample_rate > 0);
        // Silero VAD's 512 new + 64 context samples a chunk.
        for chunk in chunks(&wav.samples, 512, 64) {
            assert_eq!(chunk.len(), 576);
        }
    }
});
