//! Temperature (thermal zones), CPU frequency (cpufreq) and the Raspberry Pi's throttle flags
//! (`vcgencmd get_throttled`), read at one instant.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{dirs_with_prefix, read_u64};

/// The thermal and frequency sensors found on a device.
#[derive(Debug, Clone, Default)]
pub struct ThermalSensors {
    /// `temp` files of thermal zones (millidegrees Celsius).
    pub zones: Vec<PathBuf>,
    /// `scaling_cur_freq` files of each CPU (kHz).
    pub cpufreq: Vec<PathBuf>,
    pub vcgencmd: Option<PathBuf>,
}

/// One reading of every sensor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThermalReading {
    /// The hottest zone, °C.
    pub max_temp_c: Option<f64>,
    /// The mean current frequency over CPUs, kHz.
    pub mean_freq_khz: Option<f64>,
    /// The board says it is throttling now (Raspberry Pi: bits 1 and 2 of get_throttled).
    pub throttle_flag: Option<bool>,
}

impl ThermalSensors {
    pub fn discover(root: &Path, vcgencmd: Option<PathBuf>) -> ThermalSensors {
        let zones = dirs_with_prefix(&root.join("sys/class/thermal"), "thermal_zone")
            .into_iter()
            .map(|z| z.join("temp"))
            .filter(|t| read_u64(t).is_some())
            .collect();
        let cpufreq = dirs_with_prefix(&root.join("sys/devices/system/cpu"), "cpu")
            .into_iter()
            .map(|c| c.join("cpufreq/scaling_cur_freq"))
            .filter(|f| read_u64(f).is_some())
            .collect();
        ThermalSensors {
            zones,
            cpufreq,
            vcgencmd,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.cpufreq.is_empty() && self.vcgencmd.is_none()
    }

    pub fn read(&self) -> ThermalReading {
        let temps: Vec<f64> = self
            .zones
            .iter()
            .filter_map(|z| read_u64(z))
            .map(|m| m as f64 / 1000.0)
            .collect();
        let freqs: Vec<f64> = self
            .cpufreq
            .iter()
            .filter_map(|f| read_u64(f))
            .map(|k| k as f64)
            .collect();
        ThermalReading {
            max_temp_c: temps.iter().copied().reduce(f64::max),
            mean_freq_khz: (!freqs.is_empty())
                .then(|| freqs.iter().sum::<f64>() / freqs.len() as f64),
            throttle_flag: self.vcgencmd.as_ref().and_then(|cmd| {
                let out = Command::new(cmd).arg("get_throttled").output().ok()?;
                throttled_now(&String::from_utf8_lossy(&out.stdout))
            }),
        }
    }
}

/// `throttled=0x50005` → whether the board is throttling now (bit 2) or capping frequency
/// (bit 1).
pub fn throttled_now(text: &str) -> Option<bool> {
    let hex = text.trim().strip_prefix("throttled=0x")?;
    let flags = u64::from_str_radix(hex, 16).ok()?;
    Some(flags & 0b110 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn throttle_flags() {
        assert_eq!(super::throttled_now("throttled=0x0"), Some(false));
        assert_eq!(super::throttled_now("throttled=0x50005"), Some(true));
        assert_eq!(
            super::throttled_now("throttled=0x50000"),
            Some(false),
            "only past events"
        );
        assert_eq!(super::throttled_now("error"), None);
    }
}
