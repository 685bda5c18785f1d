//! The worker's image decoding (`image_input::decode`, PNG or JPEG recognised by content) and
//! the resize and normalisation after it: any bytes end in a `[3, h, w]` tensor or an error.

#![no_main]

use edgefleet_agent::worker::image_input::{decode, prepare, ImageSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(rgb) = decode(bytes) {
        let spec = ImageSpec {
            width: 1 + u32::from(mode & 0x0f),
            height: 1 + u32::from(mode >> 4),
            pad: mode & 1 == 1,
            mean: [0.5; 3],
            std: [0.25; 3],
        };
        let out = prepare(&rgb, spec);
        assert_eq!(out.len(), (3 * spec.width * spec.height) as usize);
    }
});
