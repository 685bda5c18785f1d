//! Pure decisions about benchmark runs: which agents a selector picks, and which jobs each agent
//! gets for a suite. No I/O here; the admin service carries the decisions out.

use std::collections::BTreeMap;

use std::path::PathBuf;

use edgefleet_proto::v1::{
    workload, ArtifactRef, AudioInput, BenchJob, ImageInput, ModelSpec, TextInput, Workload,
};
use edgefleet_suites::{Input, PlannedRun, ScenarioKind, Suite};

use crate::store::{AgentRow, ModelRow};

use crate::selector::Condition;

/// Whether an agent meets every condition. A condition on a key the agent lacks fails for `=`
/// and holds for `!=`.
pub fn matches(agent: &AgentRow, conditions: &[Condition]) -> bool {
    conditions.iter().all(|c| {
        let hw = &agent.hardware;
        let actual = match c.key.as_str() {
            "name" => Some(agent.name.clone()),
            "id" => Some(agent.id.clone()),
            "arch" => Some(hw.arch.clone()),
            "cpu_model" => Some(hw.cpu_model.clone()),
            "cores" => Some(hw.cpu_cores.to_string()),
            "os" => Some(hw.os.clone()),
            "hostname" => Some(hw.hostname.clone()),
            label => agent.labels.get(label).cloned(),
        };
        (actual.as_deref() == Some(c.value.as_str())) != c.negated
    })
}

/// The jobs of a suite for one agent, in the suite's order, with job ids unique within the run.
/// `models` holds every model the suite names, its quality references included; `inputs` every
/// input file it names (as written), stored as an artifact.
pub fn jobs_for_agent(
    suite: &Suite,
    models: &BTreeMap<String, ModelRow>,
    inputs: &BTreeMap<PathBuf, ArtifactRef>,
    agent_index: usize,
) -> Vec<BenchJob> {
    suite
        .plan()
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let model = &models[&run.model.to_string()];
            let quality = run.quality();
            BenchJob {
                job_id: format!("a{agent_index:03}-j{i:03}"),
                model: Some(model_spec(model)),
                reference: quality.map(|q| model_spec(&models[&q.reference.to_string()])),
                workload: Some(workload_for(suite, run, inputs)),
            }
        })
        .collect()
}

/// What one planned run asks the agent to do (its quality check included, when it has one).
pub fn workload_for(
    suite: &Suite,
    run: &PlannedRun<'_>,
    inputs: &BTreeMap<PathBuf, ArtifactRef>,
) -> Workload {
    let quality = run.quality();
    let server = match run.scenario.kind {
        ScenarioKind::Server {
            target_qps,
            p99_bound,
            seed,
            peak_search,
        } => Some((target_qps, p99_bound, seed, peak_search)),
        _ => None,
    };
    Workload {
        scenario: run.scenario.kind.as_str().to_string(),
        threads: run.threads.get(),
        warmup_queries: run.scenario.warmup_queries,
        min_queries: run.scenario.min_queries.get(),
        min_duration_ms: run.scenario.min_duration.as_millis() as u64,
        max_duration_ms: run.scenario.max_duration.as_millis() as u64,
        repetitions: run.scenario.repetitions.get(),
        engine: run.engine.to_string(),
        execution_provider: run.provider.to_string(),
        graph_optimization: suite.onnxruntime.graph_optimization.clone(),
        inter_op_threads: suite.onnxruntime.inter_op_threads.get(),
        batch: run.scenario.kind.batch(),
        target_qps: server.map_or(0.0, |s| s.0),
        p99_bound_ms: server.map_or(0.0, |s| s.1.as_secs_f64() * 1000.0),
        seed: server.map_or(0, |s| s.2),
        peak_search: server.is_some_and(|s| s.3),
        prompt_tokens: match run.scenario.kind {
            ScenarioKind::Generate { prompt_tokens, .. } => prompt_tokens.get(),
            _ => 0,
        },
        generate_tokens: match run.scenario.kind {
            ScenarioKind::Generate {
                generate_tokens, ..
            } => generate_tokens.get(),
            _ => 0,
        },
        idle_power_s: suite.conditions.idle_power.as_secs_f64(),
        max_start_temp_c: suite.conditions.max_start_temp_c,
        max_wait_s: suite.conditions.max_wait.as_secs_f64(),
        quality_metric: quality.map_or_else(String::new, |q| q.metric.clone()),
        golden: quality.map_or_else(Vec::new, |q| q.golden.clone()),
        quality_output: quality.and_then(|q| q.output.clone()).unwrap_or_default(),
        input: Some(workload_input(&run.group.input, inputs)),
    }
}

/// A group's input as the agent receives it: input files become artifact references.
fn workload_input(input: &Input, files: &BTreeMap<PathBuf, ArtifactRef>) -> workload::Input {
    let refs = |names: &[PathBuf]| names.iter().map(|n| files[n].clone()).collect();
    match input {
        Input::Text {
            sentences,
            sequence_length,
        } => workload::Input::Text(TextInput {
            sentences: sentences.clone(),
            sequence_length: sequence_length.map_or(0, |n| n.get()),
        }),
        Input::Audio(a) => workload::Input::Audio(AudioInput {
            files: refs(&a.files),
            sample_rate: a.sample_rate.get(),
            chunk_samples: a.chunk_samples.get(),
            context_samples: a.context_samples,
        }),
        Input::Image(i) => workload::Input::Image(ImageInput {
            files: refs(&i.files),
            width: i.width.get(),
            height: i.height.get(),
            resize: i.resize.as_str().to_string(),
            mean: i.mean.to_vec(),
            std: i.std.to_vec(),
        }),
    }
}

pub fn model_spec(model: &ModelRow) -> ModelSpec {
    ModelSpec {
        name: model.name.clone(),
        version: model.version.clone(),
        quantization: model.quantization.clone(),
        files: model.artifact_refs(),
    }
}

/// The hardware target key results are grouped by.
pub fn target_key(hw: &edgefleet_proto::v1::HardwareProfile) -> String {
    let gib = (hw.memory_bytes as f64 / (1u64 << 30) as f64).round();
    format!("{}/{}/{}c/{gib}GiB", hw.arch, hw.cpu_model, hw.cpu_cores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_condition;
    use edgefleet_proto::v1::HardwareProfile;

    fn agent(name: &str, arch: &str, labels: &[(&str, &str)]) -> AgentRow {
        AgentRow {
            id: format!("id-{name}"),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            agent_version: "0.1.0".into(),
            hardware: HardwareProfile {
                arch: arch.into(),
                cpu_cores: 4,
                ..HardwareProfile::default()
            },
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    #[test]
    fn selectors_match_labels_and_hardware_fields() {
        let pi = agent("pi", "aarch64", &[("hw", "rpi5"), ("site", "store-42")]);
        let gw = agent("gw", "x86_64", &[("site", "lab")]);
        let cases: &[(&[&str], [bool; 2])] = &[
            (&[], [true, true]),
            (&["hw=rpi5"], [true, false]),
            (&["arch=x86_64"], [false, true]),
            (&["site!=lab"], [true, false]),
            (&["hw!=rpi5"], [false, true]),
            (&["hw=rpi5", "site!=lab"], [true, false]),
            (&["cores=4", "name=gw"], [false, true]),
            (&["missing=x"], [false, false]),
        ];
        for (selectors, want) in cases {
            let conds: Vec<_> = selectors
                .iter()
                .map(|s| parse_condition(s).unwrap())
                .collect();
            assert_eq!(
                [matches(&pi, &conds), matches(&gw, &conds)],
                *want,
                "{selectors:?}"
            );
        }
    }

    #[test]
    fn bad_selectors_are_refused() {
        for bad in ["hw", "=x", " =x", "a b=c"] {
            assert!(parse_condition(bad).is_err(), "{bad}");
        }
        assert!(parse_condition("empty=").is_ok());
    }

    #[test]
    fn a_suite_becomes_one_job_per_model_scenario_and_thread_count() {
        let suite = Suite::parse(
            "name = \"s\"\nmodels = [\"m@1\", \"m@2\"]\n[input]\ntext = [\"hi\"]\n[[scenario]]\nkind = \"single-stream\"\nthreads = [1, 2]\n",
            "s.toml",
        )
        .unwrap();
        let model = |v: &str| ModelRow {
            name: "m".into(),
            version: v.into(),
            quantization: "fp32".into(),
            opset: 17,
            signature_json: "{}".into(),
            files: vec![],
            created_ms: 0,
            manifest: vec![],
            manifest_signature: vec![],
        };
        let models = BTreeMap::from([
            ("m@1".to_string(), model("1")),
            ("m@2".to_string(), model("2")),
        ]);
        let jobs = jobs_for_agent(&suite, &models, &BTreeMap::new(), 3);
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[0].job_id, "a003-j000");
        let threads: Vec<u32> = jobs
            .iter()
            .map(|j| j.workload.as_ref().unwrap().threads)
            .collect();
        assert_eq!(threads, [1, 2, 1, 2]);
        assert_eq!(jobs[3].model.as_ref().unwrap().version, "2");
    }

    #[test]
    fn groups_get_their_own_input_files_and_reference() {
        let suite = Suite::parse(
            r#"
name = "s"
[[scenario]]
kind = "single-stream"
[[group]]
name = "audio"
models = ["vad@fp32", "vad@int8"]
[group.input]
kind = "audio"
files = ["speech.wav"]
context_samples = 64
[group.quality]
reference = "vad@fp32"
metric = "classes"
output = "output"
[[group]]
name = "image"
models = ["rec@int8"]
[group.input]
kind = "image"
files = ["a.png", "b.png"]
width = 320
height = 48
resize = "pad"
mean = 0.5
std = [0.5, 0.25, 0.5]
"#,
            "s.toml",
        )
        .unwrap();
        let model = |name: &str, v: &str| ModelRow {
            name: name.into(),
            version: v.into(),
            quantization: v.into(),
            opset: 17,
            signature_json: "{}".into(),
            files: vec![],
            created_ms: 0,
            manifest: vec![],
            manifest_signature: vec![],
        };
        let models = BTreeMap::from([
            ("vad@fp32".to_string(), model("vad", "fp32")),
            ("vad@int8".to_string(), model("vad", "int8")),
            ("rec@int8".to_string(), model("rec", "int8")),
        ]);
        let artifact = |name: &str, sha: char| {
            (
                PathBuf::from(name),
                ArtifactRef {
                    file_name: name.into(),
                    sha256: sha.to_string().repeat(64),
                    size_bytes: 10,
                },
            )
        };
        let inputs = BTreeMap::from([
            artifact("speech.wav", 'a'),
            artifact("a.png", 'b'),
            artifact("b.png", 'c'),
        ]);
        let jobs = jobs_for_agent(&suite, &models, &inputs, 0);
        assert_eq!(jobs.len(), 3);
        let workload = |i: usize| jobs[i].workload.clone().unwrap();
        assert!(jobs[0].reference.is_none(), "the reference itself");
        assert_eq!(jobs[1].reference.as_ref().unwrap().version, "fp32");
        assert_eq!(workload(1).quality_metric, "classes");
        assert_eq!(workload(1).quality_output, "output");
        assert_eq!(workload(2).quality_output, "", "no quality check");
        let Some(workload::Input::Audio(audio)) = workload(1).input else {
            panic!("{:?}", workload(1).input)
        };
        assert_eq!(
            (
                audio.sample_rate,
                audio.chunk_samples,
                audio.context_samples
            ),
            (16000, 512, 64)
        );
        assert_eq!(audio.files[0].sha256, "a".repeat(64));
        assert!(
            jobs[2].reference.is_none(),
            "the image group has no quality check"
        );
        let Some(workload::Input::Image(image)) = workload(2).input else {
            panic!("{:?}", workload(2).input)
        };
        let shas: Vec<&str> = image.files.iter().map(|f| &f.sha256[..1]).collect();
        assert_eq!(shas, ["b", "c"]);
        assert_eq!(
            (image.width, image.height, image.resize.as_str()),
            (320, 48, "pad")
        );
        assert_eq!(
            (image.mean, image.std),
            (vec![0.5; 3], vec![0.5, 0.25, 0.5])
        );
    }
}
