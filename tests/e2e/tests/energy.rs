//! End-to-end energy and thermal measurement against fixture sensor trees in the real sysfs
//! layout: a RAPL counter that a thread advances at a known power (and that wraps mid-run), a
//! thermal zone, and CPU frequencies.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_e2e::{start_agent_with_sensors, Controller};

const WATTS: f64 = 5.0;
/// The counter wraps every 8 J, i.e. every 1.6 s at 5 W: several times during the run.
const RANGE_UJ: u64 = 8_000_000;

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    // Atomic, as the kernel's sysfs reads are: never a half-written number.
    let tmp = full.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, full).unwrap();
}

#[test]
fn rapl_energy_is_measured_net_of_idle_with_wrap_around_and_thermal_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sysroot");
    let zone = "sys/class/powercap/intel-rapl:0";
    write(&sys, &format!("{zone}/name"), "package-0\n");
    write(
        &sys,
        &format!("{zone}/max_energy_range_uj"),
        &format!("{RANGE_UJ}\n"),
    );
    write(&sys, &format!("{zone}/energy_uj"), "0\n");
    write(
        &sys,
        "sys/class/thermal/thermal_zone0/type",
        "x86_pkg_temp\n",
    );
    write(&sys, "sys/class/thermal/thermal_zone0/temp", "47000\n");
    write(
        &sys,
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
        "2400000\n",
    );

    // The package draws a steady 5 W: the counter advances accordingly and wraps.
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (stop, sys) = (stop.clone(), sys.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let uj = (start.elapsed().as_secs_f64() * WATTS * 1e6) as u64 % RANGE_UJ;
                write(&sys, &format!("{zone}/energy_uj"), &format!("{uj}\n"));
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let ctl = Controller::start(dir.path(), "127.0.0.1:0");
    let _agent = start_agent_with_sensors(dir.path(), &ctl, "edge-e", &[], &sys);
    ctl.wait_online(&["edge-e"], Duration::from_secs(60));
    ctl.add_cached_model("models/minilm-l6/model.int8.onnx", "minilm-l6", "int8");
    let suite = dir.path().join("energy.toml");
    std::fs::write(
        &suite,
        r#"
name = "energy"
models = ["minilm-l6@int8"]
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?"]
[conditions]
idle_power_s = 2
max_start_temp_c = 60
[[scenario]]
kind = "single-stream"
min_queries = 50
min_duration_s = 4
"#,
    )
    .unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_str(&ctl.cli_ok(&[
        "bench",
        "run",
        suite.to_str().unwrap(),
        "--wait",
        "--json",
    ]))
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    counter.join().unwrap();

    let r = &records[0];
    assert_eq!(r["energy_method"], "rapl", "{r:#}");
    // Margins allow for a loaded 2-core machine delaying the fixture's writer or the sampler.
    let near = |key: &str, want: f64, within: f64| {
        let got = r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {r:#}"));
        assert!(
            (got - want).abs() / want < within,
            "{key} = {got}, want about {want}: {r:#}"
        );
    };
    // The fixture's writer and the agent's sampler are both threads a busy machine delays.
    near("idle_power_w", WATTS, 0.4);
    near("active_power_w", WATTS, 0.4);
    near("energy_sample_hz", 10.0, 0.7);
    // A steady draw means the run costs nothing above idle: net energy near zero, never negative.
    let per_inference = r["energy_j_per_inference"].as_f64().unwrap();
    assert!(
        (0.0..0.05).contains(&per_inference),
        "{per_inference} J: {r:#}"
    );
    assert!(r["energy_note"].is_null(), "{r:#}");
    assert_eq!(r["temperature_c"]["start"], 47.0);
    assert_eq!(r["temperature_c"]["max"], 47.0);
    assert_eq!(r["throttled"], false);
    assert!(
        r["cool_down_wait_s"].as_f64().unwrap() < 5.0,
        "47 °C is below the 60 °C guard"
    );
}
