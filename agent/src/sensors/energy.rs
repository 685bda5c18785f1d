//! Energy sources. Each declares its method and reads either a cumulative energy counter or an
//! instantaneous power; [`discover`] picks the one that covers the most of the device.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{dirs_with_prefix, read_text, read_u64, SensorError};

/// One reading of a source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// A cumulative counter in microjoules.
    CounterMicrojoules(u64),
    /// Instantaneous power in watts.
    PowerWatts(f64),
}

/// A place energy can be read from.
pub trait EnergySource: Send {
    /// The method recorded on results: rapl, hwmon-energy, hwmon-power, ina3221, pmic, nvml.
    fn method(&self) -> &'static str;
    /// Where it reads, for people (a path or a command).
    fn describe(&self) -> String;
    /// Where a counter wraps back to zero, in microjoules, if it is a counter that wraps.
    fn wraps_at(&self) -> Option<u64> {
        None
    }
    fn read(&mut self) -> Result<Reading, SensorError>;
}

/// Linux powercap RAPL: package 0's `energy_uj`, wrapping at `max_energy_range_uj`. (Edge
/// devices have one package; on a multi-socket server this covers the first only.)
pub struct Rapl {
    pub zone: PathBuf,
    pub range_uj: u64,
}

impl EnergySource for Rapl {
    fn method(&self) -> &'static str {
        "rapl"
    }
    fn describe(&self) -> String {
        self.zone.join("energy_uj").display().to_string()
    }
    fn wraps_at(&self) -> Option<u64> {
        Some(self.range_uj)
    }
    fn read(&mut self) -> Result<Reading, SensorError> {
        let path = self.zone.join("energy_uj");
        read_u64(&path)
            .map(Reading::CounterMicrojoules)
            .ok_or(SensorError::Unreadable(path))
    }
}

/// An hwmon chip's `energyN_input` (microjoules) or `powerN_input` (microwatts).
pub struct Hwmon {
    pub file: PathBuf,
    pub energy: bool,
}

impl EnergySource for Hwmon {
    fn method(&self) -> &'static str {
        if self.energy {
            "hwmon-energy"
        } else {
            "hwmon-power"
        }
    }
    fn describe(&self) -> String {
        self.file.display().to_string()
    }
    fn read(&mut self) -> Result<Reading, SensorError> {
        let value =
            read_u64(&self.file).ok_or_else(|| SensorError::Unreadable(self.file.clone()))?;
        Ok(if self.energy {
            Reading::CounterMicrojoules(value)
        } else {
            Reading::PowerWatts(value as f64 / 1e6)
        })
    }
}

/// Jetson's INA3221 power monitor (hwmon `ina3221`): the rail labelled VDD_IN (the whole board)
/// if there is one, else the sum of all rails; power = `inN_input` (mV) × `currN_input` (mA).
pub struct Ina3221 {
    pub chip: PathBuf,
    pub channels: Vec<u32>,
}

impl EnergySource for Ina3221 {
    fn method(&self) -> &'static str {
        "ina3221"
    }
    fn describe(&self) -> String {
        format!("{} channels {:?}", self.chip.display(), self.channels)
    }
    fn read(&mut self) -> Result<Reading, SensorError> {
        let mut watts = 0.0;
        for ch in &self.channels {
            let mv = read_u64(&self.chip.join(format!("in{ch}_input")));
            let ma = read_u64(&self.chip.join(format!("curr{ch}_input")));
            match (mv, ma) {
                (Some(mv), Some(ma)) => watts += mv as f64 * ma as f64 / 1e6,
                _ => {
                    return Err(SensorError::Ina3221Channel {
                        channel: *ch,
                        chip: self.chip.clone(),
                    })
                }
            }
        }
        Ok(Reading::PowerWatts(watts))
    }
}

/// Raspberry Pi 5's PMIC through `vcgencmd pmic_read_adc`: the sum over rails of volts × amps.
pub struct Pmic {
    pub command: PathBuf,
}

impl EnergySource for Pmic {
    fn method(&self) -> &'static str {
        "pmic"
    }
    fn describe(&self) -> String {
        format!("{} pmic_read_adc", self.command.display())
    }
    fn read(&mut self) -> Result<Reading, SensorError> {
        let out = Command::new(&self.command)
            .arg("pmic_read_adc")
            .output()
            .map_err(|e| SensorError::Run {
                command: self.command.clone(),
                message: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(SensorError::PmicFailed(self.command.clone()));
        }
        pmic_watts(&String::from_utf8_lossy(&out.stdout)).map(Reading::PowerWatts)
    }
}

/// Parses `vcgencmd pmic_read_adc`: lines `NAME_A current(N)=0.123A` and `NAME_V volt(N)=5.1V`;
/// a rail's power is its current times the voltage of the same name.
pub fn pmic_watts(text: &str) -> Result<f64, SensorError> {
    let mut amps = std::collections::BTreeMap::new();
    let mut volts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.trim().split_once(' ') else {
            continue;
        };
        let Some((_, number)) = value.split_once('=') else {
            continue;
        };
        if let Some(rail) = name.strip_suffix("_A") {
            if let Ok(a) = number.trim_end_matches('A').parse::<f64>() {
                amps.insert(rail.to_string(), a);
            }
        } else if let Some(rail) = name.strip_suffix("_V") {
            if let Ok(v) = number.trim_end_matches('V').parse::<f64>() {
                volts.insert(rail.to_string(), v);
            }
        }
    }
    let watts: Vec<f64> = amps
        .iter()
        .filter_map(|(rail, a)| volts.get(rail).map(|v| a * v))
        .collect();
    if watts.is_empty() {
        return Err(SensorError::NoPmicRail);
    }
    Ok(watts.iter().sum())
}

/// NVIDIA GPUs through `nvidia-smi` (which reads NVML): board power draw of every GPU, summed.
pub struct Nvml {
    pub command: PathBuf,
}

impl EnergySource for Nvml {
    fn method(&self) -> &'static str {
        "nvml"
    }
    fn describe(&self) -> String {
        format!("{} --query-gpu=power.draw", self.command.display())
    }
    fn read(&mut self) -> Result<Reading, SensorError> {
        let out = Command::new(&self.command)
            .args(["--query-gpu=power.draw", "--format=csv,noheader,nounits"])
            .output()
            .map_err(|e| SensorError::Run {
                command: self.command.clone(),
                message: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let watts: Result<Vec<f64>, _> = text.lines().map(|l| l.trim().parse::<f64>()).collect();
        match watts {
            Ok(w) if out.status.success() && !w.is_empty() => {
                Ok(Reading::PowerWatts(w.iter().sum()))
            }
            _ => Err(SensorError::NoPowerReading(text.trim().to_string())),
        }
    }
}

/// Where to look: a filesystem root and the folders searched for `vcgencmd` and `nvidia-smi`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub root: PathBuf,
    pub command_dirs: Vec<PathBuf>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            root: PathBuf::from("/"),
            command_dirs: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }
}

impl Probe {
    /// Looks under `root`: the real machine's PATH for `/`, else `ROOT/usr/bin` (a fixture
    /// tree brings its own stand-in tools).
    pub fn for_root(root: PathBuf) -> Probe {
        if root == Path::new("/") {
            Probe::default()
        } else {
            Probe {
                command_dirs: vec![root.join("usr/bin")],
                root,
            }
        }
    }

    pub fn command(&self, name: &str) -> Option<PathBuf> {
        self.command_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }
}

/// The best energy source on this device, by how much of it the source covers: the board's input
/// (PMIC, INA3221), then the CPU package (RAPL), then other hwmon sensors, then the GPU alone.
pub fn discover(probe: &Probe) -> Option<Box<dyn EnergySource>> {
    if let Some(command) = probe.command("vcgencmd") {
        let mut pmic = Pmic { command };
        if pmic.read().is_ok() {
            return Some(Box::new(pmic));
        }
    }
    let hwmon_dirs = dirs_with_prefix(&probe.root.join("sys/class/hwmon"), "hwmon");
    for chip in &hwmon_dirs {
        if read_text(&chip.join("name")).as_deref() == Some("ina3221") {
            if let Some(source) = ina3221(chip) {
                return Some(Box::new(source));
            }
        }
    }
    if let Some(rapl) = rapl(&probe.root) {
        return Some(Box::new(rapl));
    }
    for kind in ["energy", "power"] {
        for chip in &hwmon_dirs {
            if let Some(file) = first_input(chip, kind) {
                return Some(Box::new(Hwmon {
                    file,
                    energy: kind == "energy",
                }));
            }
        }
    }
    let command = probe.command("nvidia-smi")?;
    let mut nvml = Nvml { command };
    nvml.read().ok()?;
    Some(Box::new(nvml))
}

/// A top-level RAPL zone's `energy_uj` that exists but cannot be read by this process: root-only
/// since Linux 5.10 (CVE-2020-8694) unless a rule grants the agent's group.
pub fn unreadable_rapl_counter(root: &Path) -> Option<PathBuf> {
    dirs_with_prefix(&root.join("sys/class/powercap"), "intel-rapl:")
        .into_iter()
        .map(|zone| zone.join("energy_uj"))
        .find(|counter| counter.is_file() && read_u64(counter).is_none())
}

/// The first top-level RAPL package zone (`intel-rapl:N`, also on AMD); sub-zones such as
/// `intel-rapl:0:0` are parts of it.
fn rapl(root: &Path) -> Option<Rapl> {
    let zone = dirs_with_prefix(&root.join("sys/class/powercap"), "intel-rapl:")
        .into_iter()
        .filter(|z| {
            z.file_name()
                .is_some_and(|n| n.to_string_lossy().matches(':').count() == 1)
        })
        .find(|z| read_u64(&z.join("energy_uj")).is_some())?;
    let range_uj = read_u64(&zone.join("max_energy_range_uj"))?;
    Some(Rapl { zone, range_uj })
}

fn ina3221(chip: &Path) -> Option<Ina3221> {
    let channels: Vec<u32> = (1..=4)
        .filter(|ch| chip.join(format!("curr{ch}_input")).is_file())
        .collect();
    let board = channels.iter().copied().find(|ch| {
        read_text(&chip.join(format!("in{ch}_label"))).is_some_and(|l| l.contains("VDD_IN"))
    });
    let channels = board.map_or(channels, |ch| vec![ch]);
    (!channels.is_empty()).then(|| Ina3221 {
        chip: chip.to_path_buf(),
        channels,
    })
}

fn first_input(chip: &Path, kind: &str) -> Option<PathBuf> {
    (1..=8)
        .map(|n| chip.join(format!("{kind}{n}_input")))
        .find(|p| read_u64(p).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Writes `files` (relative path, content) under a fresh root.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = root.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        root
    }

    fn probe(root: &Path, commands: Option<&Path>) -> Probe {
        Probe {
            root: root.to_path_buf(),
            command_dirs: commands.map(|c| vec![c.to_path_buf()]).unwrap_or_default(),
        }
    }

    /// A stand-in for a vendor tool: a script that prints what the real one prints.
    fn command(dir: &Path, name: &str, output: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\ncat <<'OUT'\n{output}\nOUT\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test thread forking at the moment the script was open for writing leaves the
        // file "busy" (ETXTBSY) until that child execs; wait for it to become runnable.
        for _ in 0..100 {
            match std::process::Command::new(&path).output() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => return,
            }
        }
    }

    #[test]
    fn rapl_package_zone_is_found_and_read() {
        let root = tree(&[
            ("sys/class/powercap/intel-rapl:0/name", "package-0\n"),
            ("sys/class/powercap/intel-rapl:0/energy_uj", "123456\n"),
            (
                "sys/class/powercap/intel-rapl:0/max_energy_range_uj",
                "262143328850\n",
            ),
            ("sys/class/powercap/intel-rapl:0:0/name", "core\n"),
            ("sys/class/powercap/intel-rapl:0:0/energy_uj", "5\n"),
        ]);
        let mut s = discover(&probe(root.path(), None)).expect("rapl found");
        assert_eq!(s.method(), "rapl");
        assert_eq!(s.wraps_at(), Some(262143328850));
        assert_eq!(s.read(), Ok(Reading::CounterMicrojoules(123456)));
        std::fs::remove_dir_all(root.path().join("sys/class/powercap/intel-rapl:0")).unwrap();
        assert!(
            s.read().unwrap_err().to_string().contains("cannot read"),
            "a vanished sensor is an error"
        );
    }

    #[test]
    fn jetson_ina3221_prefers_the_board_input_rail() {
        let root = tree(&[
            ("sys/class/hwmon/hwmon0/name", "ina3221\n"),
            ("sys/class/hwmon/hwmon0/in1_label", "VDD_IN\n"),
            ("sys/class/hwmon/hwmon0/in1_input", "5000\n"),
            ("sys/class/hwmon/hwmon0/curr1_input", "1200\n"),
            ("sys/class/hwmon/hwmon0/in2_label", "VDD_CPU_GPU_CV\n"),
            ("sys/class/hwmon/hwmon0/in2_input", "5000\n"),
            ("sys/class/hwmon/hwmon0/curr2_input", "400\n"),
        ]);
        let mut s = discover(&probe(root.path(), None)).unwrap();
        assert_eq!(s.method(), "ina3221");
        assert_eq!(s.read(), Ok(Reading::PowerWatts(6.0)));
    }

    #[test]
    fn hwmon_energy_beats_hwmon_power() {
        let root = tree(&[
            ("sys/class/hwmon/hwmon0/name", "acpi_power\n"),
            ("sys/class/hwmon/hwmon0/power1_input", "7500000\n"),
            ("sys/class/hwmon/hwmon1/name", "amd_energy\n"),
            ("sys/class/hwmon/hwmon1/energy1_input", "42\n"),
        ]);
        let mut s = discover(&probe(root.path(), None)).unwrap();
        assert_eq!(
            (s.method(), s.read()),
            ("hwmon-energy", Ok(Reading::CounterMicrojoules(42)))
        );
        std::fs::remove_dir_all(root.path().join("sys/class/hwmon/hwmon1")).unwrap();
        let mut s = discover(&probe(root.path(), None)).unwrap();
        assert_eq!(
            (s.method(), s.read()),
            ("hwmon-power", Ok(Reading::PowerWatts(7.5)))
        );
    }

    #[test]
    fn raspberry_pi_5_pmic_sums_its_rails() {
        let root = tree(&[]);
        let bin = tempfile::tempdir().unwrap();
        command(
            bin.path(),
            "vcgencmd",
            "     3V7_WL_SW_A current(0)=0.10000000A\n   VDD_CORE_A current(7)=2.00000000A\n     3V7_WL_SW_V volt(8)=3.70000000V\n   VDD_CORE_V volt(15)=0.80000000V\n EXT5V_V volt(24)=5.10000000V",
        );
        let mut s = discover(&probe(root.path(), Some(bin.path()))).expect("pmic found");
        assert_eq!(s.method(), "pmic");
        let Ok(Reading::PowerWatts(w)) = s.read() else {
            panic!("a power reading")
        };
        assert!((w - (0.1 * 3.7 + 2.0 * 0.8)).abs() < 1e-9, "{w}");
        assert!(pmic_watts("garbage").is_err());
    }

    #[test]
    fn nvidia_gpus_through_nvidia_smi() {
        let root = tree(&[]);
        let bin = tempfile::tempdir().unwrap();
        command(bin.path(), "nvidia-smi", "71.25\n30.50");
        let mut s = discover(&probe(root.path(), Some(bin.path()))).expect("nvml found");
        assert_eq!(
            (s.method(), s.read()),
            ("nvml", Ok(Reading::PowerWatts(101.75)))
        );
    }

    #[test]
    fn no_source_is_none_not_zero() {
        let root = tree(&[
            ("sys/class/hwmon/hwmon0/name", "coretemp\n"),
            ("sys/class/hwmon/hwmon0/temp1_input", "40000\n"),
        ]);
        assert!(discover(&probe(root.path(), None)).is_none());
    }
}
