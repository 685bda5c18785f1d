//! The gate's parsing, judging and fail-closed verdicts, as tables of cases.

use super::*;

#[test]
fn gates_parse_and_bad_ones_say_why() {
    let g = parse_gate("p90<=1.10x, energy<=1.2x,quality>=0.99").unwrap();
    assert_eq!(g.len(), 3);
    assert_eq!(
        g[0],
        GateLimit {
            metric: GateMetric::P90,
            limit: 1.10
        }
    );
    assert_eq!(g[2].comparison(), ">=");
    for (bad, why) in [
        ("latency<=1.1x", "unknown gate metric `latency`"),
        ("p90<=1.1", "ratio such as 1.10x"),
        ("p90>=1.1x", "p90<=RATIOx"),
        ("quality<=0.9", "quality>=VALUE"),
        ("quality>=2", "(0, 1]"),
        ("p90", "not METRIC"),
        ("p90<=1.1x,p90<=1.2x", "twice"),
    ] {
        let err = parse_gate(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn the_gate_stops_a_slower_candidate_and_passes_a_faster_one() {
    let limits = parse_gate("p90<=1.10x,energy<=1.10x,quality>=0.99").unwrap();
    let fast = Measured {
        p90_ms: 2.0,
        quality: Some(0.994),
        ..Measured::default()
    };
    let slow = Measured {
        p90_ms: 5.0,
        quality: Some(0.994),
        ..Measured::default()
    };
    let judged = judge(&limits, &slow, &fast);
    assert_eq!(judged[0].outcome, "breached");
    assert_eq!(judged[0].value, Some(2.5));
    assert_eq!(judged[1].outcome, "unmeasured");
    assert_eq!(judged[2].outcome, "passed");
    let judged = judge(&limits, &fast, &slow);
    assert!(judged.iter().all(|j| j.outcome != "breached"), "{judged:?}");
    let worse = Measured {
        quality: Some(0.9),
        ..fast.clone()
    };
    assert_eq!(judge(&limits, &worse, &slow)[2].outcome, "breached");
}

#[test]
fn a_gate_that_cannot_measure_what_it_gates_fails_closed() {
    let limits = parse_gate("p90<=1.10x,quality>=0.99").unwrap();
    let measured = Measured {
        p90_ms: 2.0,
        ..Measured::default()
    };
    // No quality figure (the check failed, or read a metric the gate does not know).
    let judged = judge(&limits, &measured, &measured);
    assert_eq!(judged[1].outcome, GateOutcome::Breached);
    // No latency (a zero the worker could never measure): not a pass either.
    let zero = Measured::default();
    assert_eq!(judge(&limits, &zero, &measured)[0].outcome, "breached");

    let rounds = |quality| AgentRounds {
        candidate: vec![
            Measured {
                quality,
                ..measured.clone()
            };
            GATE_ROUNDS
        ],
        active: vec![measured.clone(); GATE_ROUNDS],
        errors: Vec::new(),
    };
    let names = BTreeMap::from([("a1".to_string(), "edge-a".to_string())]);
    let wave = judge_wave(
        &limits,
        BTreeMap::from([("a1".to_string(), rounds(None))]),
        &names,
    );
    assert!(!wave.verdicts[0].passed);
    assert_eq!(
        wave.breaches,
        ["edge-a: quality not measured (quality was not measured)"]
    );
    let wave = judge_wave(
        &limits,
        BTreeMap::from([("a1".to_string(), rounds(Some(0.995)))]),
        &names,
    );
    assert!(wave.breaches.is_empty(), "{:?}", wave.breaches);

    // Two rounds instead of three: the benchmark did not complete.
    let mut short = rounds(Some(0.995));
    short.active.pop();
    short.errors.push("a000-r2-active: worker crashed".into());
    let wave = judge_wave(&limits, BTreeMap::from([("a1".to_string(), short)]), &names);
    assert_eq!(
        wave.breaches,
        ["edge-a: gate benchmark failed: a000-r2-active: worker crashed"]
    );
}

#[test]
fn a_measurement_without_latency_cannot_be_judged() {
    let err = Measured::from_measurement(&Measurement::default()).unwrap_err();
    assert!(err.to_string().contains("no latency"), "{err}");
}

#[test]
fn a_quality_gate_names_the_metric_its_suite_measured() {
    let limits = parse_gate("quality>=0.9").unwrap();
    let measurement = |key: &str| Measured {
        p90_ms: 1.0,
        quality: Some(0.9458),
        quality_metric: Some(key.to_string()),
        ..Measured::default()
    };
    for (key, words) in [
        ("exact_match", "decisions alike"),
        ("text_exact_match", "text lines read alike"),
        ("cosine_mean", "mean cosine"),
        ("top1_agreement", "top-1 agreement"),
    ] {
        let judged = judge(&limits, &measurement(key), &Measured::default());
        assert_eq!(
            judged[0].detail,
            format!("candidate vs active output, {words}")
        );
    }
}
