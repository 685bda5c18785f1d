//! The device's hardware profile, read once at start from sysinfo, `/proc` and `/sys`, plus what
//! the ONNX Runtime library offers (asked of a worker process, so the daemon never loads it).

use std::process::ExitStatus;
use std::time::Duration;

use edgefleet_proto::v1::HardwareProfile;
use sysinfo::{CpuRefreshKind, System};

use crate::config::AgentConfig;
use crate::runtime_library;
use crate::worker::protocol::RuntimeProbe;
use crate::worker::{start_error, worker_command, StartError};

/// Reads the profile. Never fails: what cannot be read is left empty, and a missing ONNX Runtime
/// is described in `runtime_error`.
pub async fn probe(config: &AgentConfig) -> HardwareProfile {
    let mut profile = static_profile();
    match probe_runtime(config).await {
        Ok(runtime) => {
            profile.onnxruntime_version = runtime.version;
            profile.execution_providers = runtime.execution_providers;
        }
        Err(error) => profile.runtime_error = error.to_string(),
    }
    profile
}

/// Everything but the runtime.
pub fn static_profile() -> HardwareProfile {
    let mut profile = HardwareProfile {
        arch: System::cpu_arch(),
        os: System::long_os_version().unwrap_or_default(),
        kernel: System::kernel_version().unwrap_or_default(),
        hostname: System::host_name().unwrap_or_default(),
        cpu_governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        ..HardwareProfile::default()
    };
    if let Ok(mut sys) = System::new() {
        sys.refresh_memory();
        sys.refresh_cpu_list(CpuRefreshKind::nothing());
        profile.memory_bytes = sys.total_memory();
        profile.cpu_cores = sys.cpus().len() as u32;
        profile.cpu_model = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default();
    }
    if profile.cpu_model.is_empty() {
        profile.cpu_model = board_model();
    }
    profile
}

/// Boards whose CPUs have no brand string (most ARM boards) name themselves in the device tree.
fn board_model() -> String {
    let model = read_trimmed("/proc/device-tree/model");
    model.trim_end_matches('\0').to_string()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Why ONNX Runtime could not be probed (sent to the controller as `runtime_error`).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Library(#[from] runtime_library::LibraryNotFound),
    #[error("the ONNX Runtime probe did not answer within 60 s")]
    Timeout,
    #[error(transparent)]
    Start(#[from] StartError),
    /// The probe exited unsuccessfully: its status and the last line of its stderr.
    #[error("ONNX Runtime probe failed ({status}): {last}")]
    Failed { status: ExitStatus, last: String },
    #[error("unreadable probe answer: {0}")]
    Unreadable(#[source] serde_json::Error),
}

/// Asks a worker process to load ONNX Runtime and say its version and providers.
async fn probe_runtime(config: &AgentConfig) -> Result<RuntimeProbe, ProbeError> {
    let library = runtime_library::locate(config.onnxruntime_library.as_deref())?;
    let output = worker_command()
        .arg("--probe")
        .arg("--onnxruntime-library")
        .arg(&library)
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .map_err(|_| ProbeError::Timeout)?
        .map_err(start_error)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("no output").trim();
        return Err(ProbeError::Failed {
            status: output.status,
            last: last.to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(ProbeError::Unreadable)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_static_profile_describes_this_machine() {
        let p = super::static_profile();
        assert!(!p.arch.is_empty());
        assert!(p.cpu_cores >= 1);
        assert!(p.memory_bytes > 0);
        assert!(!p.kernel.is_empty());
    }
}
