//! Table-driven checks of suite parsing: what a good suite turns into, and where each bad one is
//! caught. Long because it holds one case per field the format checks.

use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::{Input, Resize, ScenarioKind, Suite};

const GOOD: &str = r#"
name = "t"
models = ["m@1", "m@2"]

[input]
text = ["hello world", "second sentence"]

[[scenario]]
kind = "single-stream"
threads = [1, 2]
warmup = 3
min_queries = 10
min_duration_s = 0.5
max_duration_s = 2
repetitions = 3
"#;

#[test]
fn a_good_suite_becomes_typed_values() {
    let suite = Suite::parse(GOOD, "good.toml").expect("valid suite");
    assert_eq!(suite.name, "t");
    assert_eq!(suite.groups.len(), 1);
    let group = &suite.groups[0];
    assert_eq!(group.models.len(), 2);
    assert_eq!(group.models[1].to_string(), "m@2");
    assert!(
        matches!(&group.input, Input::Text { sentences, sequence_length: None } if sentences.len() == 2)
    );
    let s = &suite.scenarios[0];
    assert_eq!(s.kind, ScenarioKind::SingleStream);
    assert_eq!(
        s.threads.iter().map(|t| t.get()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(s.min_duration, Duration::from_millis(500));
    assert_eq!(s.max_duration, Duration::from_secs(2));
    assert_eq!(s.repetitions.get(), 3);
    assert_eq!(
        suite.plan().len(),
        4,
        "2 models x 1 scenario x 2 thread counts"
    );
    assert_eq!(suite.sha256.len(), 64);
    assert_eq!(suite.conditions, crate::Conditions::default());
    let guarded = Suite::parse(
        &format!(
            "{GOOD}\n[conditions]\nidle_power_s = 0\nmax_start_temp_c = 55\nmax_wait_s = 30\n"
        ),
        "g.toml",
    )
    .unwrap();
    assert_eq!(guarded.conditions.idle_power, Duration::ZERO);
    assert_eq!(guarded.conditions.max_start_temp_c, Some(55.0));
    assert_eq!(guarded.conditions.max_wait, Duration::from_secs(30));
    assert_eq!(suite.groups[0].quality, None);
    let checked = Suite::parse(
        &format!("{GOOD}\n[quality]\nreference = \"m@1\"\nmetric = \"cosine\"\n"),
        "q.toml",
    )
    .unwrap();
    let q = checked.groups[0].quality.clone().unwrap();
    assert_eq!(
        (q.reference.to_string(), q.metric.as_str()),
        ("m@1".to_string(), "cosine")
    );
    assert_eq!(q.golden.len(), 2, "the input sentences by default");
    assert_eq!(q.output, None, "the agent picks the output by default");
    let named = Suite::parse(
        &format!("{GOOD}\n[quality]\nreference = \"m@1\"\nmetric = \"cosine\"\noutput = \"last_hidden_state\"\n"),
        "q.toml",
    )
    .unwrap();
    assert_eq!(
        named.groups[0].quality.as_ref().unwrap().output.as_deref(),
        Some("last_hidden_state")
    );
    let empty = Suite::parse(
        &format!("{GOOD}\n[quality]\nreference = \"m@1\"\nmetric = \"cosine\"\noutput = \" \"\n"),
        "q.toml",
    )
    .unwrap_err();
    assert!(
        empty
            .to_string()
            .contains("q.toml:20: field `quality.output`: must name a model output, not be empty"),
        "{empty}"
    );
    let bad = Suite::parse(
        &format!("{GOOD}\n[quality]\nreference = \"m@1\"\nmetric = \"bleu\"\n"),
        "q.toml",
    )
    .unwrap_err();
    assert!(
        bad.to_string()
            .contains("q.toml:19: field `quality.metric`: unknown metric `bleu`"),
        "{bad}"
    );
}

#[test]
fn every_scenario_kind_parses_with_its_own_settings() {
    let with = |scenario: &str| {
        let text = GOOD.replace("kind = \"single-stream\"", scenario);
        Suite::parse(&text, "s.toml").map(|s| s.scenarios[0].kind)
    };
    assert_eq!(
        with("kind = \"multi-stream\"\nsamples_per_query = 8").unwrap(),
        ScenarioKind::MultiStream {
            samples_per_query: 8.try_into().unwrap()
        }
    );
    assert_eq!(with("kind = \"offline\"").unwrap().batch(), 32);
    assert_eq!(
        with("kind = \"offline\"\nbatch_size = 4").unwrap().batch(),
        4
    );
    let server =
        with("kind = \"server\"\ntarget_qps = 50.5\np99_bound_ms = 20\npeak_search = true")
            .unwrap();
    assert_eq!(
        server,
        ScenarioKind::Server {
            target_qps: 50.5,
            p99_bound: Duration::from_millis(20),
            seed: 1,
            peak_search: true
        }
    );
    assert_eq!(server.batch(), 1);
    assert_eq!(
        with("kind = \"generate\"\nprompt_tokens = 32\ngenerate_tokens = 64").unwrap(),
        ScenarioKind::Generate {
            prompt_tokens: 32.try_into().unwrap(),
            generate_tokens: 64.try_into().unwrap()
        }
    );
    assert!(with("kind = \"generate\"\nprompt_tokens = 32")
        .unwrap_err()
        .to_string()
        .contains("needs `generate_tokens`"));
}

#[test]
fn shipped_suites_are_valid() {
    for (name, text) in crate::SHIPPED {
        let suite = Suite::parse(text, name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(suite.name, name);
        for file in suite.input_files() {
            // scripts/setup.sh links the generated inputs there.
            assert!(file.starts_with("inputs"), "{name}: {}", file.display());
        }
    }
    let kinds = |name: &str| -> Vec<&'static str> {
        let (_, text) = crate::SHIPPED.iter().find(|(n, _)| *n == name).unwrap();
        let suite = Suite::parse(text, name).unwrap();
        suite.groups.iter().map(|g| g.input.kind()).collect()
    };
    assert_eq!(kinds("audio-vad"), ["audio"]);
    assert_eq!(kinds("vision-ocr"), ["image", "image"]);
}

/// Replaces `from` in the good suite with `to` and checks the error's line, field and message.
fn check(from: &str, to: &str, line: usize, field: &str, message: &str) {
    assert!(
        GOOD.contains(from),
        "test is wrong: `{from}` not in the suite"
    );
    let text = GOOD.replacen(from, to, 1);
    let err = Suite::parse(&text, "bad.toml").expect_err(&format!("`{to}` must be refused"));
    assert_eq!(err.origin, "bad.toml");
    assert_eq!(err.line, Some(line), "line for `{to}`: {err}");
    assert_eq!(err.field.as_deref(), Some(field), "field for `{to}`: {err}");
    assert!(err.message.contains(message), "message for `{to}`: {err}");
}

#[test]
fn bad_suites_name_line_and_field() {
    // (replace, with, line, field, message)
    let cases = [
        (
            "warmup = 3",
            "warmup = 3\nwarmpu = 4",
            12,
            "warmpu",
            "unknown field",
        ),
        (
            "min_duration_s = 0.5",
            "min_duration_s = 0",
            13,
            "scenario.min_duration_s",
            "more than 0",
        ),
        (
            "min_duration_s = 0.5",
            "min_duration_s = -1",
            13,
            "scenario.min_duration_s",
            "more than 0",
        ),
        (
            "max_duration_s = 2",
            "max_duration_s = 0.1",
            14,
            "scenario.max_duration_s",
            "shorter than",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"burst\"",
            9,
            "scenario.kind",
            "unknown scenario `burst`",
        ),
        (
            "threads = [1, 2]",
            "threads = [1, 0]",
            10,
            "scenario.threads",
            "whole number",
        ),
        (
            "threads = [1, 2]",
            "threads = []",
            10,
            "scenario.threads",
            "no thread count",
        ),
        (
            "min_queries = 10",
            "min_queries = -5",
            12,
            "scenario.min_queries",
            "whole number",
        ),
        ("\"m@1\", ", "\"m1\", ", 3, "models", "not name@version"),
        ("\"m@2\"", "\"m@1\"", 3, "models", "listed twice"),
        (
            "\"m@2\"",
            "\"m@active\"",
            3,
            "models",
            "`m@active` cannot name a model: version `active` is reserved",
        ),
        (
            "\"m@2\"",
            "\"..@2\"",
            3,
            "models",
            "model name `..` must not be `.` or `..`",
        ),
        (
            "\"hello world\", ",
            "\"\", ",
            6,
            "input.text",
            "no empty ones",
        ),
        (
            "warmup = 3",
            "warmup = \"three\"",
            11,
            "warmup",
            "invalid type",
        ),
        ("name = \"t\"\n", "", 1, "name", "missing field"),
        (
            "kind = \"single-stream\"",
            "kind = \"multi-stream\"",
            9,
            "scenario.samples_per_query",
            "needs `samples_per_query`",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"single-stream\"\nbatch_size = 4",
            10,
            "scenario.batch_size",
            "does not apply to a single-stream",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"server\"\np99_bound_ms = 20",
            9,
            "scenario.target_qps",
            "needs `target_qps`",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"server\"\ntarget_qps = 0\np99_bound_ms = 20",
            10,
            "scenario.target_qps",
            "more than 0",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"server\"\ntarget_qps = 5\np99_bound_ms = -1",
            11,
            "scenario.p99_bound_ms",
            "more than 0 ms",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"multi-stream\"\nsamples_per_query = 0",
            10,
            "scenario.samples_per_query",
            "whole number",
        ),
        (
            "repetitions = 3",
            "repetitions = 0",
            15,
            "scenario.repetitions",
            "from 1 to 100, not 0",
        ),
        (
            "repetitions = 3",
            "repetitions = 1000",
            15,
            "scenario.repetitions",
            "from 1 to 100, not 1000",
        ),
    ];
    for (from, to, line, field, message) in cases {
        check(from, to, line, field, message);
    }
}

#[test]
fn an_unreadable_file_names_its_path() {
    let err = Suite::load(std::path::Path::new("/nonexistent/suite.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/suite.toml: cannot read the suite"),
        "{err}"
    );
}

const AUDIO: &str = r#"
name = "a"
models = ["vad@fp32", "vad@int8"]

[input]
kind = "audio"
files = ["speech.wav"]
sample_rate = 16000
chunk_samples = 512
context_samples = 64

[quality]
reference = "vad@fp32"
metric = "classes"

[[scenario]]
kind = "single-stream"
"#;

const IMAGE: &str = r#"
name = "i"
models = ["rec@fp32"]

[input]
kind = "image"
files = ["line-1.png", "line-2.png"]
width = 320
height = 48
resize = "pad"
mean = 0.5
std = [0.5, 0.5, 0.5]

[[scenario]]
kind = "single-stream"
"#;

#[test]
fn audio_and_image_inputs_become_typed_values() {
    let suite = Suite::parse(AUDIO, "a.toml").unwrap();
    let Input::Audio(audio) = &suite.groups[0].input else {
        panic!("{:?}", suite.groups[0].input)
    };
    assert_eq!(audio.files, [PathBuf::from("speech.wav")]);
    assert_eq!(
        (
            audio.sample_rate.get(),
            audio.chunk_samples.get(),
            audio.context_samples
        ),
        (16000, 512, 64)
    );
    let q = suite.groups[0].quality.as_ref().unwrap();
    assert!(
        q.golden.is_empty(),
        "audio compares the models on its files"
    );
    assert_eq!(suite.input_files(), [Path::new("speech.wav")]);

    let defaults = Suite::parse(
        &AUDIO
            .replace("sample_rate = 16000\n", "")
            .replace("context_samples = 64\n", ""),
        "a.toml",
    )
    .unwrap();
    let Input::Audio(audio) = &defaults.groups[0].input else {
        panic!()
    };
    assert_eq!((audio.sample_rate.get(), audio.context_samples), (16000, 0));

    let suite = Suite::parse(IMAGE, "i.toml").unwrap();
    let Input::Image(image) = &suite.groups[0].input else {
        panic!()
    };
    assert_eq!(
        (image.width.get(), image.height.get(), image.resize),
        (320, 48, Resize::Pad)
    );
    assert_eq!((image.mean, image.std), ([0.5; 3], [0.5; 3]));
    assert_eq!(suite.groups[0].input.kind(), "image");
    let stretched = Suite::parse(
        &IMAGE
            .replace("resize = \"pad\"\n", "")
            .replace("mean = 0.5\n", ""),
        "i.toml",
    )
    .unwrap();
    let Input::Image(image) = &stretched.groups[0].input else {
        panic!()
    };
    assert_eq!((image.resize, image.mean), (Resize::Stretch, [0.0; 3]));
}

/// Like [`check`], on another suite.
fn check_in(suite: &str, from: &str, to: &str, line: usize, field: &str, message: &str) {
    assert!(
        suite.contains(from),
        "test is wrong: `{from}` not in the suite"
    );
    let err = Suite::parse(&suite.replacen(from, to, 1), "bad.toml")
        .expect_err(&format!("`{to}` must be refused"));
    assert_eq!(err.line, Some(line), "line for `{to}`: {err}");
    assert_eq!(err.field.as_deref(), Some(field), "field for `{to}`: {err}");
    assert!(err.message.contains(message), "message for `{to}`: {err}");
}

#[test]
fn bad_audio_and_image_inputs_name_line_and_field() {
    let audio_cases = [
        (
            "kind = \"audio\"",
            "kind = \"video\"",
            6,
            "input.kind",
            "unknown input kind `video` (supported: text, audio, image)",
        ),
        (
            "files = [\"speech.wav\"]",
            "files = []",
            7,
            "input.files",
            "lists no file",
        ),
        (
            "files = [\"speech.wav\"]",
            "files = [\"a.wav\", \"a.wav\"]",
            7,
            "input.files",
            "listed twice",
        ),
        (
            "files = [\"speech.wav\"]\n",
            "",
            5,
            "input.files",
            "audio input needs `files`",
        ),
        (
            "files = [\"speech.wav\"]",
            "files = [\"/etc/passwd\"]",
            7,
            "input.files",
            "`/etc/passwd` is absolute; input files are named relative to the suite's folder, inside it",
        ),
        (
            "files = [\"speech.wav\"]",
            "files = [\"../secret.wav\"]",
            7,
            "input.files",
            "`../secret.wav` goes up with `..`",
        ),
        (
            "files = [\"speech.wav\"]",
            "files = [\"speech.wav\", \"inputs/../../x.wav\"]",
            7,
            "input.files",
            "`inputs/../../x.wav` goes up with `..`",
        ),
        (
            "sample_rate = 16000",
            "sample_rate = 0",
            8,
            "input.sample_rate",
            "from 1000 to 384000 Hz, not 0",
        ),
        (
            "chunk_samples = 512",
            "chunk_samples = 0",
            9,
            "input.chunk_samples",
            "whole number",
        ),
        (
            "chunk_samples = 512",
            "chunk_samples = 2000000",
            9,
            "input.chunk_samples",
            "at most a minute",
        ),
        (
            "context_samples = 64",
            "context_samples = -1",
            10,
            "input.context_samples",
            "0 or more",
        ),
        (
            "context_samples = 64",
            "context_samples = 64\nwidth = 32",
            11,
            "input.width",
            "does not apply to audio input",
        ),
        (
            "context_samples = 64",
            "context_samples = 64\ntext = [\"hi\"]",
            11,
            "input.text",
            "does not apply to audio input",
        ),
        (
            "metric = \"classes\"",
            "metric = \"classes\"\ngolden = [\"hi\"]",
            15,
            "quality.golden",
            "audio input compares the models on its input files",
        ),
        (
            "kind = \"single-stream\"",
            "kind = \"generate\"\nprompt_tokens = 4\ngenerate_tokens = 4",
            17,
            "scenario.kind",
            "a generate scenario needs text input",
        ),
    ];
    for (from, to, line, field, message) in audio_cases {
        check_in(AUDIO, from, to, line, field, message);
    }
    let image_cases = [
        (
            "width = 320",
            "width = 0",
            8,
            "input.width",
            "from 1 to 16384 pixels, not 0",
        ),
        (
            "height = 48",
            "height = 100000",
            9,
            "input.height",
            "from 1 to 16384 pixels, not 100000",
        ),
        (
            "height = 48\n",
            "",
            5,
            "input.height",
            "image input needs `height`",
        ),
        (
            "files = [\"line-1.png\", \"line-2.png\"]",
            "files = [\"line-1.png\", \"/home/me/.ssh/id_ed25519\"]",
            7,
            "input.files",
            "`/home/me/.ssh/id_ed25519` is absolute",
        ),
        (
            "files = [\"line-1.png\", \"line-2.png\"]",
            "files = [\"./line-1.png\", \"a/../../line-2.png\"]",
            7,
            "input.files",
            "`a/../../line-2.png` goes up with `..`",
        ),
        (
            "resize = \"pad\"",
            "resize = \"crop\"",
            10,
            "input.resize",
            "unknown resize `crop` (supported: stretch, pad)",
        ),
        (
            "std = [0.5, 0.5, 0.5]",
            "std = [0.5, 0, 0.5]",
            12,
            "input.std",
            "each more than 0",
        ),
        (
            "mean = 0.5",
            "mean = [0.5, 0.5]",
            11,
            "input.mean",
            "one value or three",
        ),
        (
            "mean = 0.5",
            "sample_rate = 8000",
            11,
            "input.sample_rate",
            "does not apply to image input",
        ),
        (
            "kind = \"image\"",
            "kind = \"text\"",
            7,
            "input.files",
            "does not apply to text input",
        ),
    ];
    for (from, to, line, field, message) in image_cases {
        check_in(IMAGE, from, to, line, field, message);
    }
}

#[test]
fn loading_a_suite_checks_its_input_files_beside_it() {
    let dir = std::env::temp_dir().join(format!("edgefleet-suite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("image.toml");
    std::fs::write(&path, IMAGE).unwrap();
    std::fs::write(dir.join("line-1.png"), b"png").unwrap();
    let err = Suite::load(&path).unwrap_err();
    assert_eq!(err.line, Some(7), "{err}");
    assert_eq!(err.field.as_deref(), Some("input.files"));
    assert!(
        err.message.contains(&format!(
            "`line-2.png` is not a file (looked at {})",
            dir.join("line-2.png").display()
        )),
        "{err}"
    );
    std::fs::write(dir.join("line-2.png"), b"png").unwrap();
    let suite = Suite::load(&path).unwrap();
    assert_eq!(suite.input_files().len(), 2);
    // Parsing alone (the controller's side) does not look for files.
    assert!(Suite::parse(&IMAGE.replace("line-1", "elsewhere"), "x.toml").is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn input_files_outside_the_suites_folder_are_refused_before_anything_is_read() {
    let dir = std::env::temp_dir().join(format!("edgefleet-escape-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("suite")).unwrap();
    // The file exists, so only the path itself can be why the suite is refused.
    std::fs::write(dir.join("secret.wav"), b"not for upload").unwrap();
    let path = dir.join("suite/escape.toml");
    std::fs::write(&path, AUDIO.replace("speech.wav", "../secret.wav")).unwrap();
    let err = Suite::load(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:7: field `input.files`: `../secret.wav` goes up with `..`; input files are named \
             relative to the suite's folder, inside it",
            path.display()
        )
    );
    let absolute = dir.join("secret.wav").display().to_string();
    std::fs::write(&path, AUDIO.replace("speech.wav", &absolute)).unwrap();
    let err = Suite::load(&path).unwrap_err();
    assert!(err.message.contains("is absolute"), "{err}");
    // Inside the folder, a leading `./` is fine.
    std::fs::write(dir.join("suite/speech.wav"), b"wav").unwrap();
    std::fs::write(&path, AUDIO.replace("speech.wav", "./speech.wav")).unwrap();
    assert!(Suite::load(&path).is_ok());
    // Inside a group, the field says so.
    check_in(
        GROUPS,
        "files = [\"line.png\"]",
        "files = [\"../line.png\"]",
        24,
        "group.input.files",
        "`../line.png` goes up with `..`",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const GROUPS: &str = r#"
name = "ocr"

[[scenario]]
kind = "single-stream"

[[group]]
name = "det"
models = ["det@fp32", "det@int8"]
[group.input]
kind = "image"
files = ["page.png"]
width = 640
height = 320
[group.quality]
reference = "det@fp32"
metric = "cosine"

[[group]]
name = "rec"
models = ["rec@fp32", "rec@int8"]
[group.input]
kind = "image"
files = ["line.png"]
width = 320
height = 48
[group.quality]
reference = "rec@fp32"
metric = "ctc"
"#;

#[test]
fn groups_give_models_their_own_input_and_reference() {
    let suite = Suite::parse(GROUPS, "g.toml").unwrap();
    let names: Vec<&str> = suite.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["det", "rec"]);
    assert_eq!(suite.models().count(), 4);
    let plan = suite.plan();
    assert_eq!(plan.len(), 4);
    let rec_int8 = &plan[3];
    assert_eq!(rec_int8.model.to_string(), "rec@int8");
    assert_eq!(rec_int8.group.name, "rec");
    assert_eq!(rec_int8.quality().unwrap().metric, "ctc");
    assert_eq!(
        rec_int8.quality().unwrap().reference.to_string(),
        "rec@fp32"
    );
    assert!(
        plan[2].quality().is_none(),
        "the reference is not compared with itself"
    );
    assert_eq!(
        suite.input_files(),
        [Path::new("page.png"), Path::new("line.png")]
    );

    let cases = [
        (
            "name = \"rec\"",
            "name = \"det\"",
            20,
            "group.name",
            "not another group's",
        ),
        (
            "\"rec@fp32\", \"rec@int8\"",
            "\"rec@fp32\", \"rec@fp32\"",
            21,
            "group.models",
            "listed twice",
        ),
        (
            "metric = \"ctc\"",
            "metric = \"bleu\"",
            29,
            "group.quality.metric",
            "unknown metric `bleu`",
        ),
        (
            "width = 320",
            "width = -1",
            25,
            "group.input.width",
            "pixels",
        ),
        (
            "name = \"ocr\"",
            "name = \"ocr\"\nmodels = [\"m@1\"]",
            8,
            "group",
            "inside each group, not at the top",
        ),
    ];
    for (from, to, line, field, message) in cases {
        check_in(GROUPS, from, to, line, field, message);
    }
    let twice =
        Suite::parse(&GROUPS.replace("\"rec@int8\"", "\"det@int8\""), "g.toml").unwrap_err();
    assert!(
        twice.to_string().contains("`det@int8` is in two groups"),
        "{twice}"
    );
}

#[test]
fn onnxruntime_runs_repeat_on_every_execution_provider() {
    let suite = Suite::parse(
        &GOOD.replace(
            "name = \"t\"",
            "name = \"t\"\nengines = [\"onnxruntime\", \"tract\"]\nexecution_providers = [\"CPU\", \"cuda\"]\ngraph_optimization = \"basic\"\ninter_op_threads = 2",
        ),
        "p.toml",
    )
    .unwrap();
    assert_eq!(suite.onnxruntime.execution_providers, ["cpu", "cuda"]);
    assert_eq!(suite.onnxruntime.graph_optimization, "basic");
    assert_eq!(suite.onnxruntime.inter_op_threads.get(), 2);
    let runs: Vec<(&str, &str)> = suite
        .plan()
        .iter()
        .filter(|r| r.model.to_string() == "m@1" && r.threads.get() == 1)
        .map(|r| (r.engine, r.provider))
        .collect();
    assert_eq!(
        runs,
        [
            ("onnxruntime", "cpu"),
            ("onnxruntime", "cuda"),
            ("tract", "cpu")
        ]
    );

    let defaults = Suite::parse(GOOD, "good.toml").unwrap();
    assert_eq!(defaults.onnxruntime.execution_providers, ["cpu"]);
    assert_eq!(defaults.onnxruntime.graph_optimization, "all");
    assert_eq!(defaults.onnxruntime.inter_op_threads.get(), 1);
}

#[test]
fn bad_onnxruntime_settings_name_line_and_field() {
    let cases = [
        (
            "name = \"t\"\nexecution_providers = [\"cpu\", \"gpu\"]",
            3,
            "execution_providers",
            "unknown execution provider `gpu` (supported: cpu, cuda,",
        ),
        (
            "name = \"t\"\nexecution_providers = []",
            3,
            "execution_providers",
            "lists no execution provider",
        ),
        (
            "name = \"t\"\nexecution_providers = [\"cuda\", \"CUDA\"]",
            3,
            "execution_providers",
            "`cuda` is listed twice",
        ),
        (
            "name = \"t\"\ngraph_optimization = \"max\"",
            3,
            "graph_optimization",
            "unknown level `max` (supported: disabled, basic, extended, all)",
        ),
        (
            "name = \"t\"\ninter_op_threads = 0",
            3,
            "inter_op_threads",
            "must be at least 1, not 0",
        ),
    ];
    for (to, line, field, message) in cases {
        check("name = \"t\"", to, line, field, message);
    }
}
