//! Loading the ONNX Runtime shared library: its version, and the execution providers it was
//! built with, by full and short name.

use std::path::Path;

use ort::ep::ExecutionProvider;

use super::EngineError;

/// A loaded ONNX Runtime library.
pub struct Runtime {
    pub(super) environment: ort::environment::Environment,
    pub version: String,
    pub execution_providers: Vec<String>,
}

impl Runtime {
    /// Loads the shared library; a missing or wrong file is an error, never a panic.
    pub fn load(path: &Path) -> Result<Runtime, EngineError> {
        let library_error = |message: String| EngineError::Library {
            path: path.to_path_buf(),
            message,
        };
        let environment = ort::init_from(path)
            .map_err(|e| library_error(e.to_string()))?
            .with_name("edgefleet")
            .with_telemetry(false)
            .build()
            .map_err(|e| library_error(e.to_string()))?;
        Ok(Runtime {
            environment,
            version: version_from_file_name(path)
                .or_else(|| version_from_build_info(ort::info()))
                .unwrap_or_else(|| "unknown".into()),
            execution_providers: available_providers(),
        })
    }

    /// The full name of an execution provider given by its short name (`cuda` →
    /// `CUDAExecutionProvider`; empty → CPU), if this library offers it.
    pub fn provider(&self, short: &str) -> Result<&'static str, EngineError> {
        let (name, _) = provider_dispatch(short)?;
        if name == ort::ep::CPU::NAME || self.execution_providers.iter().any(|p| p == name) {
            Ok(name)
        } else {
            Err(EngineError::Setting(format!(
                "execution provider `{short}` ({name}) is not offered by the loaded ONNX Runtime {} (it offers {})",
                self.version,
                self.execution_providers.join(", ")
            )))
        }
    }
}

/// `libonnxruntime.so.1.31.1` (or a symlink to it) → "1.31.1". ONNX Runtime's release builds
/// carry their version in the file name; the C API's version string is not exposed by `ort`.
fn version_from_file_name(path: &Path) -> Option<String> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = resolved.file_name()?.to_str()?;
    let version = name.split(".so.").nth(1)?;
    let numeric = version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (numeric && version.contains('.')).then(|| version.to_string())
}

/// "ORT Build Info: git-branch=rel-1.31.1, …" → "1.31.1" (for builds from a release branch).
fn version_from_build_info(info: &str) -> Option<String> {
    let branch = info.split("git-branch=").nth(1)?;
    let branch = branch.split([',', ' ']).next()?;
    branch.strip_prefix("rel-").map(str::to_string)
}

/// A provider's full name, and what registers it on a session (none for the CPU provider,
/// which every session has).
pub(super) fn provider_dispatch(
    short: &str,
) -> Result<(&'static str, Option<ort::ep::ExecutionProviderDispatch>), EngineError> {
    use ort::ep;
    Ok(match short.to_ascii_lowercase().as_str() {
        "" | "cpu" => (ep::CPU::NAME, None),
        "cuda" => (ep::CUDA::NAME, Some(ep::CUDA::default().build())),
        "tensorrt" => (ep::TensorRT::NAME, Some(ep::TensorRT::default().build())),
        "openvino" => (ep::OpenVINO::NAME, Some(ep::OpenVINO::default().build())),
        "xnnpack" => (ep::XNNPACK::NAME, Some(ep::XNNPACK::default().build())),
        "acl" => (ep::ACL::NAME, Some(ep::ACL::default().build())),
        "qnn" => (ep::QNN::NAME, Some(ep::QNN::default().build())),
        "rocm" => (ep::ROCm::NAME, Some(ep::ROCm::default().build())),
        "migraphx" => (ep::MIGraphX::NAME, Some(ep::MIGraphX::default().build())),
        "nnapi" => (ep::NNAPI::NAME, Some(ep::NNAPI::default().build())),
        other => {
            return Err(EngineError::Setting(format!(
                "unknown execution provider `{other}` ({})",
                edgefleet_suites::EXECUTION_PROVIDERS.join(", ")
            )))
        }
    })
}

/// The execution providers the loaded library was built with, among those edgefleet knows.
fn available_providers() -> Vec<String> {
    fn check<E: ExecutionProvider>(out: &mut Vec<String>) {
        if E::is_available().unwrap_or(false) {
            out.push(E::NAME.to_string());
        }
    }
    let mut out = Vec::new();
    check::<ort::ep::CPU>(&mut out);
    check::<ort::ep::CUDA>(&mut out);
    check::<ort::ep::TensorRT>(&mut out);
    check::<ort::ep::OpenVINO>(&mut out);
    check::<ort::ep::XNNPACK>(&mut out);
    check::<ort::ep::ACL>(&mut out);
    check::<ort::ep::QNN>(&mut out);
    check::<ort::ep::ROCm>(&mut out);
    check::<ort::ep::MIGraphX>(&mut out);
    check::<ort::ep::NNAPI>(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_read_from_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(
            super::version_from_build_info(info).as_deref(),
            Some("1.31.1")
        );
        assert_eq!(super::version_from_build_info("nothing"), None);
        assert_eq!(
            super::version_from_build_info("ORT Build Info: git-branch=HEAD, x"),
            None
        );
        let name = |n: &str| super::version_from_file_name(std::path::Path::new(n));
        assert_eq!(
            name("/nonexistent/libonnxruntime.so.1.31.1").as_deref(),
            Some("1.31.1")
        );
        assert_eq!(name("/nonexistent/libonnxruntime.so"), None);
        assert_eq!(name("/nonexistent/libonnxruntime.so.x.y"), None);
    }
}
