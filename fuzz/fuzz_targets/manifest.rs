//! What an agent does with an `InstallModel` before it fetches anything: decode the manifest,
//! verify its ed25519 signature against the enrolled controller key, check its names. Arbitrary
//! bytes never panic, and never verify unless they are the key's own signature of the manifest.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use edgefleet_agent::enrollment::{parse_key, Enrollment};
use edgefleet_agent::installer::ModelInstaller;
use edgefleet_proto::v1::Manifest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&[7; 32]))
}

/// Checks `(manifest, signature)` as `installs::install` does.
fn check(manifest: &[u8], signature: &[u8], signed_here: bool) {
    let key = key();
    // Pinned: the key file under the data folder is never read.
    let enrollment = Enrollment::new(
        Path::new("/nonexistent"),
        Some(key.verifying_key().to_bytes()),
    );
    let verified = enrollment.verify(manifest, signature);
    let genuine = key.sign(manifest).to_bytes();
    if signature == genuine.as_slice() {
        assert!(verified.is_ok(), "the key's own signature must verify");
    } else {
        assert!(
            verified.is_err(),
            "a signature the key did not make verified"
        );
    }
    if signed_here {
        assert!(verified.is_ok());
    }
    if let Ok(decoded) = Manifest::decode(manifest) {
        if ModelInstaller::check_manifest(&decoded).is_ok() {
            // A manifest that passes is one path component per name.
            for part in std::iter::once(&decoded.name)
                .chain(std::iter::once(&decoded.version))
                .chain(decoded.files.iter().map(|f| &f.file_name))
            {
                assert_eq!(Path::new(part).components().count(), 1, "{part:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        // Manifest then a 64-byte signature at the end (or whatever is there).
        0 => {
            let (manifest, signature) = rest.split_at(rest.len().saturating_sub(64));
            check(manifest, signature, false);
        }
        // Signed with the controller's key: decoding and the name checks on verified bytes.
        1 => {
            let signature = key().sign(rest).to_bytes();
            check(rest, &signature, true);
        }
        // The pinned key's text in the agent's config.
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(k) = parse_key(text) {
                    let _ = Enrollment::new(Path::new("/nonexistent"), Some(k)).verify(b"m", rest);
                }
            }
        }
    }
});
