//! The conditions around a measured phase: a cool-down guard before it, idle power, and energy,
//! temperature and throttling during it, from whatever sensors the device has.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sensors::energy::{self, EnergySource, Probe};
use crate::sensors::sampler::{self, Sampler, Samples};
use crate::sensors::thermal::ThermalSensors;

use super::protocol::{Observed, WorkerJob};

/// The device's sensors, found once per job.
pub struct Conditions {
    energy: Option<Box<dyn EnergySource>>,
    thermal: ThermalSensors,
    observed: Observed,
}

/// A measured phase being watched.
pub struct Watch {
    sampler: Sampler,
    observed: Observed,
}

impl Conditions {
    pub fn discover(root: PathBuf) -> Conditions {
        let probe = Probe::for_root(root.clone());
        let energy = energy::discover(&probe);
        let vcgencmd = probe.command("vcgencmd");
        let observed = Observed {
            energy_method: energy.as_ref().map_or("none", |s| s.method()).to_string(),
            ..Observed::default()
        };
        Conditions {
            energy,
            thermal: ThermalSensors::discover(&root, vcgencmd),
            observed,
        }
    }

    /// Finds the sensors, waits for the cool-down guard and measures idle power, as a job asks.
    pub fn before_run(job: &WorkerJob) -> Conditions {
        let mut conditions = Conditions::discover(job.sensors_root.clone());
        conditions.cool_down(
            job.max_start_temp_c,
            Duration::from_secs_f64(job.max_wait_s.max(0.0)),
        );
        conditions.idle_power(Duration::from_secs_f64(job.idle_power_s.max(0.0)));
        conditions
    }

    /// Waits, at most `max_wait`, until the hottest zone is at most `max_c` or has stopped
    /// cooling (less than 0.5 °C lower over 5 s).
    pub fn cool_down(&mut self, max_c: Option<f64>, max_wait: Duration) {
        let Some(max_c) = max_c else { return };
        if self.thermal.zones.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut history: Vec<(Instant, f64)> = Vec::new();
        while start.elapsed() < max_wait {
            let Some(t) = self.thermal.read().max_temp_c else {
                break;
            };
            if t <= max_c {
                break;
            }
            let now = Instant::now();
            history.push((now, t));
            // Stable: less than 0.5 °C cooler than 5 s ago; waiting longer will not help.
            let five_ago = history
                .iter()
                .rev()
                .find(|(at, _)| now - *at >= Duration::from_secs(5));
            if five_ago.is_some_and(|&(_, then)| then - t < 0.5) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.observed.cool_down_wait_s = start.elapsed().as_secs_f64();
    }

    /// Measures idle power for `window` (only where an energy source exists).
    pub fn idle_power(&mut self, window: Duration) {
        if self.energy.is_none() || window.is_zero() {
            return;
        }
        let sampler = Sampler::start(self.energy.take(), ThermalSensors::default());
        std::thread::sleep(window);
        let samples = sampler.stop();
        let wraps = samples.source.as_ref().and_then(|s| s.wraps_at());
        match sampler::joules(&samples.energy, wraps) {
            Ok(j) => self.observed.idle_power_w = Some(j / samples.duration.as_secs_f64()),
            Err(e) => self.observed.energy_note = format!("idle power unusable: {e}"),
        }
        self.energy = samples.source;
    }

    /// Starts watching the measured phase.
    pub fn watch(mut self) -> Watch {
        Watch {
            sampler: Sampler::start(self.energy.take(), self.thermal),
            observed: self.observed,
        }
    }
}

impl Watch {
    /// Stops watching and works out energy, temperature and throttling.
    pub fn finish(self) -> Observed {
        let samples: Samples = self.sampler.stop();
        let mut observed = self.observed;
        let (temperature, throttled) = sampler::thermal_summary(&samples.thermal);
        observed.temperature_start_c = temperature.map(|t| t.0);
        observed.temperature_max_c = temperature.map(|t| t.1);
        observed.throttled = throttled;
        if samples.source.is_some() {
            observed.energy_sample_hz = samples.rate_hz();
            let wraps = samples.source.as_ref().and_then(|s| s.wraps_at());
            match sampler::joules(&samples.energy, wraps) {
                Ok(j) => {
                    let seconds = samples.duration.as_secs_f64();
                    observed.active_power_w = Some(j / seconds);
                    let idle = observed.idle_power_w.unwrap_or(0.0) * seconds;
                    observed.energy_j = Some((j - idle).max(0.0));
                    if observed.idle_power_w.is_none() && observed.energy_note.is_empty() {
                        observed.energy_note = "idle power not measured: energy is gross".into();
                    }
                }
                Err(e) => observed.energy_note = e.to_string(),
            }
        }
        observed
    }
}
