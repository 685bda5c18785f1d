//! Table-driven checks of suite parsing: what a good suite turns into, and where each bad one is
//! caught.

use std::time::Duration;

use crate::{Input, ScenarioKind, Suite};

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
    assert_eq!(suite.models.len(), 2);
    assert_eq!(suite.models[1].to_string(), "m@2");
    assert!(
        matches!(&suite.input, Input::Text { sentences, sequence_length: None } if sentences.len() == 2)
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
    assert_eq!(suite.quality, None);
    let checked = Suite::parse(
        &format!("{GOOD}\n[quality]\nreference = \"m@1\"\nmetric = \"cosine\"\n"),
        "q.toml",
    )
    .unwrap();
    let q = checked.quality.unwrap();
    assert_eq!(
        (q.reference.to_string(), q.metric.as_str()),
        ("m@1".to_string(), "cosine")
    );
    assert_eq!(q.golden.len(), 2, "the input sentences by default");
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
    }
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
