//! End-to-end: `edgefleet-agent bench SUITE.toml` runs a suite of .onnx files on this device alone,
//! through real worker processes and real ONNX Runtime.

use std::path::Path;
use std::process::Command;

use edgefleet_e2e::{binary, cached, onnxruntime_library};

/// `edgefleet-agent bench --json SUITE` with the cached ONNX Runtime and sensors read under
/// `sensors_root` (an empty folder: no energy or thermal sources).
fn local_bench(suite: &std::path::Path, sensors_root: &std::path::Path) -> std::process::Output {
    Command::new(binary("edgefleet-agent"))
        .args(["bench", "--json"])
        .arg(suite)
        .arg("--onnxruntime-library")
        .arg(onnxruntime_library())
        .env("EDGEFLEET_SENSORS_ROOT", sensors_root)
        .output()
        .expect("run edgefleet-agent bench")
}

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
    let out = local_bench(&suite, dir.path());
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

    // name@version models come from a models folder: none there is one clear line, before
    // anything runs.
    std::fs::write(
        &suite,
        "name = \"x\"\nmodels = [\"minilm-l6@int8\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\n",
    )
    .unwrap();
    let empty = dir.path().join("no-models");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(binary("edgefleet-agent"))
        .arg("bench")
        .arg(&suite)
        .arg("--models")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "model file {} not found",
            empty.join("minilm-l6/model.int8.onnx").display()
        )),
        "{err}"
    );
}

#[test]
fn a_shipped_suite_runs_as_it_is_and_failed_runs_show_in_the_table() {
    // quick.toml names minilm-l6@fp32 and @int8; the default models folder is the set-up cache.
    let out = Command::new(binary("edgefleet-agent"))
        .arg("bench")
        .arg(edgefleet_e2e::repo_root().join("bench-suites/suites/quick.toml"))
        .arg("--onnxruntime-library")
        .arg(onnxruntime_library())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("minilm-l6@int8") && table.contains("minilm-l6@fp32"),
        "{table}"
    );

    // A model that cannot take the suite's input (text, and it has no tokenizer) fails that run;
    // the table says why, the other run still reports, and the exit status tells a script.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    for (name, file) in [
        ("minilm-l6", "minilm-l6/model.int8.onnx"),
        ("add-one", "tiny/add.onnx"),
    ] {
        std::fs::create_dir_all(models.join(name)).unwrap();
        let version = if name == "add-one" { "1" } else { "int8" };
        std::fs::copy(
            cached(&format!("models/{file}")),
            models.join(name).join(format!("model.{version}.onnx")),
        )
        .unwrap();
    }
    std::fs::copy(
        cached("models/minilm-l6/tokenizer.json"),
        models.join("minilm-l6/tokenizer.json"),
    )
    .unwrap();
    let suite = dir.path().join("mixed.toml");
    std::fs::write(
        &suite,
        "name = \"mixed\"\nmodels = [\"minilm-l6@int8\", \"add-one@1\"]\n[input]\ntext = [\"The firmware update failed.\"]\n[[scenario]]\nkind = \"offline\"\nbatch_size = 4\nmin_queries = 5\nmin_duration_s = 0.1\n",
    )
    .unwrap();
    let out = Command::new(binary("edgefleet-agent"))
        .arg("bench")
        .arg(&suite)
        .arg("--models")
        .arg(&models)
        .arg("--onnxruntime-library")
        .arg(onnxruntime_library())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{table}{stderr}");
    assert!(stderr.contains("1 of 2 runs failed"), "{stderr}");
    let failed_line = table
        .lines()
        .find(|l| l.contains("add-one@1"))
        .unwrap_or_else(|| panic!("no add-one row: {table}"));
    assert!(
        failed_line.starts_with("FAILED") && failed_line.contains("tokenizer.json"),
        "the reason is in the table: {table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("minilm-l6@int8") && l.contains("offline")),
        "{table}"
    );
}

#[test]
fn smollm2_generates_with_its_key_value_cache_and_keeps_its_quality() {
    let dir = tempfile::tempdir().unwrap();
    let model = cached("models/smollm2-135m/model.q4.onnx");
    let reference = cached("models/smollm2-135m/model.fp32.onnx");
    cached("models/smollm2-135m/tokenizer.json");
    // The golden texts of the shipped slm-generate suite.
    let shipped: toml::Table = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench-suites/suites/slm-generate.toml"),
    )
    .unwrap()
    .parse()
    .unwrap();
    let golden = &shipped["quality"]["golden"];
    assert!(golden.as_array().unwrap().len() >= 5);
    let suite = dir.path().join("generate.toml");
    std::fs::write(
        &suite,
        format!(
            r#"
name = "generate"
models = ["{model}"]
[input]
text = ["Edge devices run small language models close to the data they serve."]
[conditions]
idle_power_s = 0
[quality]
reference = "{reference}"
metric = "logits"
golden = {golden}
[[scenario]]
kind = "generate"
prompt_tokens = 32
generate_tokens = 16
warmup = 0
min_queries = 2
min_duration_s = 0.1
"#,
            model = model.display(),
            reference = reference.display(),
        ),
    )
    .unwrap();
    let out = local_bench(&suite, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let r = &records[0];
    assert_eq!(r["scenario"], "generate");
    let (ttft, tpot) = (
        r["ttft_ms"].as_f64().unwrap(),
        r["tpot_ms"].as_f64().unwrap(),
    );
    assert!(ttft > 0.0 && tpot > 0.0, "{r:#}");
    assert!(
        ttft > tpot,
        "a 32-token prefill takes longer than one decode step: {r:#}"
    );
    let decode = r["decode_tokens_per_s"].as_f64().unwrap();
    assert!(
        (decode * tpot / 1000.0 - 1.0).abs() < 0.5,
        "decode tokens/s is about 1000/TPOT: {r:#}"
    );
    assert!(
        r["prefill_tokens_per_s"].as_f64().unwrap() > decode,
        "prefill batches tokens: {r:#}"
    );
    assert_eq!(r["generate"]["prompt_tokens"], 32);
    assert_eq!(r["generate"]["generated_tokens"], 16);
    assert!(r["generate"]["tokenize_ms"].as_f64().unwrap() >= 0.0);
    // The set-up's decoder (GroupQueryAttention) runs with its key/value cache in place.
    assert_eq!(r["generate"]["kv_cache_in_place"], true, "{r:#}");
    assert!(r["generate"]["tpot_p90_ms"].as_f64().unwrap() >= tpot);
    // The 4-bit weights stay 4-bit in memory: well under the 540 MB an fp32 copy takes.
    assert!(r["peak_rss_bytes"].as_u64().unwrap() < 450_000_000, "{r:#}");
    // Against the same weights in float32, at every position of the golden texts: the reference
    // recipe measured 95.8% top-1 agreement and mean KL 0.004 (on 24 tokens, so about ±4%).
    let quality = &r["quality"];
    assert_eq!(
        r["quality_reference"],
        reference.display().to_string(),
        "{r:#}"
    );
    let (top1, kl) = (
        quality["top1_agreement"].as_f64().unwrap(),
        quality["kl_mean"].as_f64().unwrap(),
    );
    assert!((0.85..1.0).contains(&top1), "top-1 agreement {top1}: {r:#}");
    assert!(kl > 0.0 && kl < 0.02, "mean KL {kl}: {r:#}");
}

#[test]
fn the_tract_engine_runs_the_same_suite_for_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let fp32 = cached("models/minilm-l6/model.fp32.onnx");
    let int8 = cached("models/minilm-l6/model.int8.onnx");
    let suite = dir.path().join("engines.toml");
    std::fs::write(
        &suite,
        format!(
            r#"
name = "engines"
models = ["{int8}"]
engines = ["onnxruntime", "tract"]
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?"]
[conditions]
idle_power_s = 0
[quality]
reference = "{fp32}"
metric = "cosine"
[[scenario]]
kind = "single-stream"
min_queries = 10
min_duration_s = 0.1
"#,
            int8 = int8.display(),
            fp32 = fp32.display()
        ),
    )
    .unwrap();
    let out = local_bench(&suite, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("built without the tract engine"),
        "the agent must be built with --features edgefleet-agent/tract (scripts/test.sh does): {stderr}"
    );
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let engines: Vec<&str> = records
        .iter()
        .map(|r| r["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["onnxruntime", "tract"]);
    let tract = &records[1];
    assert_eq!(tract["engine_version"], "0.23");
    assert!(tract["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    // Both engines compute the same int8 model: the same quality against fp32.
    let cosine = |r: &serde_json::Value| r["quality"]["cosine_mean"].as_f64().unwrap();
    assert!(
        (cosine(tract) - cosine(&records[0])).abs() < 0.005,
        "{records:#?}"
    );
}

#[test]
fn a_provider_the_library_lacks_fails_its_run_with_the_reason_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let int8 = cached("models/minilm-l6/model.int8.onnx");
    let suite = dir.path().join("providers.toml");
    std::fs::write(
        &suite,
        format!(
            r#"
name = "providers"
models = ["{int8}"]
execution_providers = ["cuda", "cpu"]
graph_optimization = "disabled"
inter_op_threads = 2
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?"]
[conditions]
idle_power_s = 0
[[scenario]]
kind = "single-stream"
min_queries = 10
min_duration_s = 0.1
"#,
            int8 = int8.display(),
        ),
    )
    .unwrap();
    let out = local_bench(&suite, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The wheel's library is CPU-only: the CUDA run fails in one line naming what it offers,
    // instead of quietly running on the CPU under CUDA's name.
    let line = stderr
        .lines()
        .find(|l| l.contains("failed"))
        .unwrap_or_else(|| panic!("no failed run: {stderr}"));
    assert!(
        line.contains("execution provider `cuda` (CUDAExecutionProvider) is not offered by the loaded ONNX Runtime 1.31.1 (it offers CPUExecutionProvider"),
        "{line}"
    );
    let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(records.len(), 1, "the CPU run still ran: {stderr}");
    assert_eq!(records[0]["execution_provider"], "CPUExecutionProvider");
    assert!(records[0]["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_quality_check_finds_or_names_the_output_it_compares() {
    // The set-up's three-output MiniLM int8: int64 `token_argmax` first, float32
    // `mean_activation` of rank 1 second, `last_hidden_state` third.
    let dir = tempfile::tempdir().unwrap();
    let fp32 = cached("models/minilm-l6/model.fp32.onnx");
    let multi = cached("models/minilm-l6/model.int8-multi.onnx");
    let run = |output: &str| {
        let suite = dir.path().join("multi.toml");
        std::fs::write(
            &suite,
            format!(
                r#"
name = "multi"
models = ["{multi}"]
engines = ["onnxruntime", "tract"]
[input]
text = ["The firmware update failed.", "Is the store open on Sunday mornings?"]
[conditions]
idle_power_s = 0
[quality]
reference = "{fp32}"
metric = "cosine"
{output}
[[scenario]]
kind = "single-stream"
min_queries = 10
min_duration_s = 0.1
"#,
                multi = multi.display(),
                fp32 = fp32.display()
            ),
        )
        .unwrap();
        let out = local_bench(&suite, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{output}: {stderr}");
        let records: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let engines: Vec<&str> = records
            .iter()
            .map(|r| r["engine"].as_str().unwrap())
            .collect();
        assert_eq!(engines, ["onnxruntime", "tract"], "{output}: {stderr}");
        records
    };
    // Without `output`, cosine finds the first float32 output of rank 2 or 3; named, that one.
    for output in ["", "output = \"last_hidden_state\""] {
        for r in run(output) {
            let cosine = r["quality"]["cosine_mean"].as_f64();
            assert!(
                cosine.is_some_and(|c| (0.98..1.0).contains(&c)),
                "{output}: {r:#}"
            );
        }
    }
    // A name the model lacks fails the quality check in one line that lists its outputs; the
    // timing result still reports.
    for r in run("output = \"no_such_output\"") {
        assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(r["quality"].is_null(), "{r:#}");
        let error = r["quality_error"].as_str().unwrap();
        assert!(
            error.contains(
                "the model has no output `no_such_output` (its outputs: `token_argmax` int64 [1, "
            ) && error.contains("`mean_activation` float32 [1], `last_hidden_state` float32 [1, ")
                && !error.contains('\n'),
            "{error}"
        );
    }
}
