//! End-to-end: `edgefleet-agent bench SUITE.toml` runs a suite of .onnx files on this device alone,
//! through real worker processes and real ONNX Runtime.

use std::process::Command;

use edgefleet_e2e::{binary, cached, onnxruntime_library};

#[test]
fn a_local_suite_prints_result_records_with_quality() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = cached("models/minilm-l6/model.fp32.onnx");
    let int8 = cached("models/minilm-l6/model.int8.onnx");
    let suite = dir.path().join("local.toml");
    std::fs::write(
        &suite,
        format!(
            r#"
name = "local"
models = ["{int8}"]
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?"]
[conditions]
idle_power_s = 0
[quality]
reference = "{fp32}"
metric = "cosine"
[[scenario]]
kind = "single-stream"
min_queries = 40
min_duration_s = 0.3
"#,
            int8 = int8.display(),
            fp32 = fp32.display()
        ),
    )
    .unwrap();
    let out = Command::new(binary("edgefleet-agent"))
        .args(["bench", "--json"])
        .arg(&suite)
        .arg("--onnxruntime-library")
        .arg(onnxruntime_library())
        .env("EDGEFLEET_SENSORS_ROOT", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["model"], "minilm-l6/model.int8");
    assert!(r["samples"].as_u64().unwrap() >= 40);
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(r["model_sha256"].as_str().unwrap().len(), 64);
    let cosine = r["quality"]["cosine_mean"].as_f64().unwrap();
    assert!((0.98..1.0).contains(&cosine), "{cosine}");
    assert_eq!(r["energy_method"], "none");

    // Registered models need a controller.
    std::fs::write(
        &suite,
        "name = \"x\"\nmodels = [\"minilm-l6@int8\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n",
    )
    .unwrap();
    let out = Command::new(binary("edgefleet-agent"))
        .arg("bench")
        .arg(&suite)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`minilm-l6@int8` is a registered model"),
        "{err}"
    );
}
