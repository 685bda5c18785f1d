//! Every request the admin service accepts, decoded with prost, and the validation each handler
//! runs before it touches the store: the bearer token, suites, selectors, a rollout's flags, cron
//! expressions, comparison metrics and thresholds, roles, model and file names. The first byte
//! picks the request; nothing panics.

#![no_main]

use edgefleet_controller::compare::{self, Metric};
use edgefleet_controller::rollout::{RolloutSpec, SpecText};
use edgefleet_controller::schedule::CronSpec;
use edgefleet_controller::selector::{parse_condition, parse_selector};
use edgefleet_controller::trust::tokens::Role;
use edgefleet_proto::tokens::AdminToken;
use edgefleet_proto::v1::*;
use edgefleet_suites::{names, ModelRef, Suite};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn suite(text: &str, origin: &str) {
    let origin = if origin.is_empty() { "suite" } else { origin };
    if let Ok(suite) = Suite::parse(text, origin) {
        let _ = suite.plan();
    }
}

fn conditions(select: &[String]) {
    for s in select {
        let _ = parse_condition(s);
    }
}

/// Decodes `bytes` as `M`, or stops the run.
macro_rules! decode {
    ($m:ty, $bytes:expr) => {
        match <$m>::decode($bytes) {
            Ok(m) => m,
            Err(_) => return,
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 25 {
        // The `authorization: Bearer …` value every call brings.
        0 => {
            if let Ok(text) = std::str::from_utf8(bytes) {
                if let Ok(token) = AdminToken::parse(text) {
                    assert_eq!(AdminToken::parse(&token.encode()), Ok(token));
                }
            }
        }
        1 => {
            let r = decode!(AddModelRequest, bytes);
            if let Some(add_model_request::Part::Header(h)) = r.part {
                let ok = names::model_name(&h.name)
                    .and_then(|()| names::version(&h.version))
                    .and_then(|()| names::file_names(h.files.iter().map(|f| f.file_name.as_str())));
                if ok.is_ok() {
                    let _ = format!("{}@{}", h.name, h.version).parse::<ModelRef>();
                }
            }
        }
        2 => {
            let r = decode!(StartBenchRequest, bytes);
            suite(&r.suite_toml, &r.suite_origin);
            conditions(&r.select);
        }
        3 => {
            let r = decode!(StartRolloutRequest, bytes);
            let spec = RolloutSpec::parse(&SpecText {
                select: &r.select,
                waves: &r.waves,
                success: &r.success,
                abort_after: &r.abort_after,
                gate: &r.gate,
                health_check: &r.health_check,
            });
            if let Ok(spec) = spec {
                let _ = parse_selector(&spec.select);
                let _ = (spec.waves_text(), spec.gate_text(), spec.gated());
                // Stored as JSON in `rollouts.spec` and read back.
                let json = serde_json::to_string(&spec).expect("a spec serializes");
                let back: RolloutSpec =
                    serde_json::from_str(&json).expect("a stored spec reads back");
                assert_eq!(back.waves_text(), spec.waves_text());
            }
            if !r.gate_suite_toml.is_empty() {
                suite(&r.gate_suite_toml, &r.gate_suite_origin);
            }
        }
        4 => {
            let r = decode!(AddScheduleRequest, bytes);
            if let Ok(cron) = CronSpec::parse(&r.cron) {
                let _ = cron.next_after(0);
            }
            suite(&r.suite_toml, &r.suite_origin);
            let _ = parse_selector(&r.select);
        }
        5 => {
            let r = decode!(CompareRequest, bytes);
            if let Ok(metric) = Metric::parse(&r.metric) {
                let options = compare::Options {
                    metric,
                    threshold: r.threshold.unwrap_or(0.05),
                    by_model: false,
                };
                let _ = compare::compare(&r.a, &[], &r.b, &[], options);
            }
            conditions(&r.select);
        }
        6 => {
            let r = decode!(CreateAdminTokenRequest, bytes);
            let _ = r.role.parse::<Role>();
        }
        7 => {
            let r = decode!(GetResultsRequest, bytes);
            conditions(&r.select);
        }
        8 => drop(decode!(CreateEnrollmentTokenRequest, bytes)),
        9 => drop(decode!(ListAgentsRequest, bytes)),
        10 => drop(decode!(ListModelsRequest, bytes)),
        11 => drop(decode!(GetRunRequest, bytes)),
        12 => drop(decode!(ModelRequest, bytes)),
        13 => drop(decode!(RemoveModelRequest, bytes)),
        14 => drop(decode!(ListRolloutsRequest, bytes)),
        15 => drop(decode!(ControlRolloutRequest, bytes)),
        16 => drop(decode!(AgentRequest, bytes)),
        17 => drop(decode!(ListAdminTokensRequest, bytes)),
        18 => drop(decode!(RevokeAdminTokenRequest, bytes)),
        19 => drop(decode!(SetBaselineRequest, bytes)),
        20 => drop(decode!(ListBaselinesRequest, bytes)),
        21 => drop(decode!(ListRegressionsRequest, bytes)),
        22 => drop(decode!(AcknowledgeRegressionRequest, bytes)),
        23 => drop(decode!(ListSchedulesRequest, bytes)),
        _ => drop(decode!(ScheduleRequest, bytes)),
    }
});
