//! Finding `libonnxruntime.so`: the configured path, then `ORT_DYLIB_PATH`, then next to the
//! agent's binary (or in the Debian package's `../lib/edgefleet-agent/`), then the set-up cache
//! of a source checkout the binary was built in.

use std::path::{Path, PathBuf};

/// The ONNX Runtime release the agent is built against (ort's `api-31`).
pub const EXPECTED_VERSION: &str = "1.31.1";
/// The file name the set-up step installs.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// No usable library was found; lists every place that was tried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ONNX Runtime {EXPECTED_VERSION} not found: expected {LIBRARY_FILE}; looked at {}; set onnxruntime_library in the agent config or ORT_DYLIB_PATH, or run scripts/setup.sh", .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
pub struct LibraryNotFound {
    pub looked: Vec<PathBuf>,
}

/// The places to look, in order.
pub fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    if let Some(path) = configured {
        // An explicit setting is the only answer: falling back would hide a typo.
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(env)];
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(LIBRARY_FILE));
            out.push(dir.join("libonnxruntime.so"));
            out.push(dir.join("../lib").join(LIBRARY_FILE));
            // The Debian package: /usr/bin/edgefleet-agent, /usr/lib/edgefleet-agent/….
            out.push(dir.join("../lib/edgefleet-agent").join(LIBRARY_FILE));
        }
        // target/{debug,release}/edgefleet-agent → <checkout>/.cache/edgefleet/lib
        for ancestor in exe.ancestors().skip(1).take(4) {
            out.push(ancestor.join(".cache/edgefleet/lib").join(LIBRARY_FILE));
        }
    }
    out
}

/// The first candidate that exists.
pub fn locate(configured: Option<&Path>) -> Result<PathBuf, LibraryNotFound> {
    let looked = candidates(configured);
    looked
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(LibraryNotFound { looked })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_is_the_only_candidate_and_errors_name_it() {
        let err = locate(Some(Path::new("/nowhere/libonnxruntime.so"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nowhere/libonnxruntime.so"), "{msg}");
        assert!(msg.contains(LIBRARY_FILE), "{msg}");
        assert_eq!(err.looked.len(), 1);
    }

    #[test]
    fn a_configured_path_that_exists_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join(LIBRARY_FILE);
        std::fs::write(&lib, b"x").unwrap();
        assert_eq!(locate(Some(&lib)).unwrap(), lib);
    }
}
