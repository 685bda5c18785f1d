//! Sampling sensors on a background thread while a benchmark phase runs, and turning the samples
//! into joules (counter deltas with wrap-around, or power integrated over time), temperatures
//! and a throttling verdict.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::energy::{EnergySource, Reading};
use super::thermal::{ThermalReading, ThermalSensors};
use super::SensorError;

/// How often sensors are read.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// A running sampler; [`Sampler::stop`] ends it and hands back what it saw.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Samples>,
}

/// What a sampler saw, and the energy source back for the next window.
pub struct Samples {
    pub source: Option<Box<dyn EnergySource>>,
    /// (seconds since start, reading) for the energy source.
    pub energy: Vec<(f64, Result<Reading, SensorError>)>,
    pub thermal: Vec<ThermalReading>,
    pub duration: Duration,
}

impl Sampler {
    /// Starts reading every [`INTERVAL`] (and once right away).
    pub fn start(source: Option<Box<dyn EnergySource>>, thermal: ThermalSensors) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut source = source;
            let start = Instant::now();
            let mut energy = Vec::new();
            let mut temps = Vec::new();
            loop {
                let last = flag.load(Ordering::Acquire);
                if let Some(s) = source.as_mut() {
                    energy.push((start.elapsed().as_secs_f64(), s.read()));
                }
                if !thermal.is_empty() {
                    temps.push(thermal.read());
                }
                if last {
                    break;
                }
                std::thread::park_timeout(INTERVAL);
            }
            Samples {
                source,
                energy,
                thermal: temps,
                duration: start.elapsed(),
            }
        });
        Sampler { stop, handle }
    }

    /// Takes a last reading and returns everything.
    pub fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Release);
        self.handle.thread().unpark();
        self.handle
            .join()
            .expect("the sampler thread does not panic")
    }
}

impl Samples {
    /// Readings per second.
    pub fn rate_hz(&self) -> f64 {
        self.energy.len().saturating_sub(1) as f64 / self.duration.as_secs_f64().max(1e-9)
    }
}

/// Joules over a window of readings. Counters are differenced, unwrapping at `wraps_at`; powers
/// are integrated with the trapezoid rule. A failed reading (the sensor disappeared) or a
/// counter that runs backwards without a known wrap point makes the whole window unusable.
pub fn joules(
    readings: &[(f64, Result<Reading, SensorError>)],
    wraps_at: Option<u64>,
) -> Result<f64, SensorError> {
    if readings.len() < 2 {
        return Err(SensorError::TooFewReadings);
    }
    let mut total = 0.0;
    for pair in readings.windows(2) {
        let (t0, r0) = (&pair[0].0, pair[0].1.as_ref().map_err(|e| e.clone())?);
        let (t1, r1) = (
            &pair[1].0,
            pair[1]
                .1
                .as_ref()
                .map_err(|e| SensorError::LostMidRun(Box::new(e.clone())))?,
        );
        total += match (r0, r1) {
            (Reading::CounterMicrojoules(a), Reading::CounterMicrojoules(b)) => {
                let delta = if b >= a {
                    b - a
                } else {
                    let range = wraps_at.ok_or(SensorError::CounterBackwards)?;
                    range - a + b
                };
                delta as f64 / 1e6
            }
            (Reading::PowerWatts(a), Reading::PowerWatts(b)) => (a + b) / 2.0 * (t1 - t0),
            _ => return Err(SensorError::KindChanged),
        };
    }
    Ok(total)
}

/// Temperatures at the start and the peak, and whether the run throttled: the board's flag, or
/// the mean CPU frequency falling below 85% of its peak during the run.
pub fn thermal_summary(readings: &[ThermalReading]) -> (Option<(f64, f64)>, Option<bool>) {
    let temps: Vec<f64> = readings.iter().filter_map(|r| r.max_temp_c).collect();
    let temperature = temps
        .first()
        .map(|&start| (start, temps.iter().copied().fold(start, f64::max)));
    let freqs: Vec<f64> = readings.iter().filter_map(|r| r.mean_freq_khz).collect();
    let flagged = readings
        .iter()
        .filter_map(|r| r.throttle_flag)
        .reduce(|a, b| a || b);
    let dropped = (freqs.len() >= 3).then(|| {
        let peak = freqs.iter().copied().fold(0.0, f64::max);
        freqs.iter().any(|&f| f < 0.85 * peak)
    });
    let throttled = match (flagged, dropped) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(false) || b.unwrap_or(false)),
    };
    (temperature, throttled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(t: f64, uj: u64) -> (f64, Result<Reading, SensorError>) {
        (t, Ok(Reading::CounterMicrojoules(uj)))
    }

    #[test]
    fn counters_difference_and_unwrap() {
        let plain = [
            counter(0.0, 1_000_000),
            counter(0.1, 1_500_000),
            counter(0.2, 3_000_000),
        ];
        assert_eq!(joules(&plain, Some(u64::MAX)), Ok(2.0));
        // Wraps at 10 J between the second and third reading: 9.5 J → 0.5 J is +1 J.
        let wrapped = [
            counter(0.0, 9_000_000),
            counter(0.1, 9_500_000),
            counter(0.2, 500_000),
        ];
        assert_eq!(joules(&wrapped, Some(10_000_000)), Ok(1.5));
        assert!(joules(&wrapped, None)
            .unwrap_err()
            .to_string()
            .contains("backwards"));
    }

    #[test]
    fn powers_integrate_over_time() {
        let p = |t: f64, w: f64| (t, Ok(Reading::PowerWatts(w)));
        let j = joules(&[p(0.0, 2.0), p(1.0, 4.0), p(2.0, 4.0)], None).unwrap();
        assert!((j - 7.0).abs() < 1e-12, "{j}");
    }

    #[test]
    fn a_sensor_that_disappears_spoils_the_window() {
        let lost = [
            counter(0.0, 1),
            counter(0.1, 2),
            (0.2, Err(SensorError::Unreadable("energy_uj".into()))),
        ];
        assert!(joules(&lost, Some(100))
            .unwrap_err()
            .to_string()
            .contains("sensor lost mid-run"));
        assert!(joules(&[counter(0.0, 1)], None).is_err());
    }

    #[test]
    fn throttling_shows_as_a_frequency_drop_or_a_flag() {
        let r = |t: f64, f: f64, flag: Option<bool>| ThermalReading {
            max_temp_c: Some(t),
            mean_freq_khz: Some(f),
            throttle_flag: flag,
        };
        let steady = [
            r(50.0, 2.4e6, None),
            r(55.0, 2.4e6, None),
            r(58.0, 2.39e6, None),
        ];
        assert_eq!(thermal_summary(&steady), (Some((50.0, 58.0)), Some(false)));
        let dropping = [
            r(70.0, 2.4e6, None),
            r(80.0, 1.8e6, None),
            r(85.0, 1.5e6, None),
        ];
        assert_eq!(thermal_summary(&dropping).1, Some(true));
        let flagged = [r(60.0, 1.5e6, Some(false)), r(61.0, 1.5e6, Some(true))];
        assert_eq!(thermal_summary(&flagged).1, Some(true));
        assert_eq!(
            thermal_summary(&[]),
            (None, None),
            "no sensors: unknown, not false"
        );
    }
}
