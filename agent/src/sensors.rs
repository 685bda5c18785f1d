//! Sensors the agent reads around a benchmark, each from its real kernel or vendor interface:
//! energy ([`energy`]: powercap RAPL, hwmon energy and power, Jetson INA3221 rails, Raspberry
//! Pi 5 PMIC, NVIDIA GPUs through nvidia-smi) and temperature, CPU frequency and throttle flags
//! ([`thermal`]). [`sampler`] reads them on a background thread while a run goes on. Paths are
//! relative to a root (`/` on a device, a fixture tree in tests).

pub mod energy;
pub mod sampler;
pub mod thermal;

use std::path::{Path, PathBuf};

/// A trimmed file's text, or `None` if it cannot be read.
/// Why a sensor gave no reading, or a window of readings no energy figure.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SensorError {
    #[error("cannot read {}", .0.display())]
    Unreadable(PathBuf),
    #[error("cannot read INA3221 channel {channel} in {}", chip.display())]
    Ina3221Channel { channel: u32, chip: PathBuf },
    #[error("cannot run {}: {message}", command.display())]
    Run { command: PathBuf, message: String },
    #[error("{} pmic_read_adc failed", .0.display())]
    PmicFailed(PathBuf),
    #[error("pmic_read_adc printed no rail with both current and voltage")]
    NoPmicRail,
    #[error("nvidia-smi gave no power reading: {0}")]
    NoPowerReading(String),
    #[error("fewer than two energy readings")]
    TooFewReadings,
    #[error("sensor lost mid-run: {0}")]
    LostMidRun(Box<SensorError>),
    #[error("the energy counter went backwards")]
    CounterBackwards,
    #[error("the sensor changed kind mid-run")]
    KindChanged,
}

fn read_text(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A file holding one unsigned integer.
fn read_u64(path: &Path) -> Option<u64> {
    read_text(path)?.parse().ok()
}

/// Sub-folders of `dir` whose names start with `prefix`, sorted.
fn dirs_with_prefix(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}
