//! The inputs under `fuzz/regressions/` that once crashed or stalled the controller (each a fixed
//! bug), replayed on stable as their fuzz targets run them: a job result's latency histogram
//! decodes or is an error (`link_messages`); a schedule's cron text that could only be refused
//! after a search to the year 5000 is refused from its text (`admin_messages`).

use std::path::Path;

use base64::Engine;
use edgefleet_controller::compare::interval::Latencies;
use edgefleet_controller::schedule::CronSpec;
use edgefleet_proto::v1::{agent_message, job_result, AddScheduleRequest, AgentMessage};
use prost::Message;

/// The saved inputs of a fuzz target whose first byte (the target's choice of message) is
/// `choice`, without that byte.
fn saved_inputs(target: &str, choice: u8) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .filter_map(|bytes| {
            bytes
                .split_first()
                .filter(|(c, _)| **c == choice)
                .map(|(_, rest)| rest.to_vec())
        })
        .collect()
}

#[test]
fn link_regressions_decode_or_are_refused() {
    let mut replayed = 0;
    // 0 is an AgentMessage.
    for message in saved_inputs("link_messages", 0) {
        let message = message.as_slice();
        let Ok(message) = AgentMessage::decode(message) else {
            continue;
        };
        if let Some(agent_message::Body::JobResult(result)) = message.body {
            if let Some(job_result::Outcome::Measurement(m)) = result.outcome {
                let text = base64::engine::general_purpose::STANDARD.encode(&m.latency_histogram);
                assert!(Latencies::from_hdr_base64([text.as_str()]).is_err());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= 2, "{replayed} histograms replayed");
}

#[test]
fn admin_regressions_are_refused_from_their_text() {
    let mut replayed = 0;
    // 4 is AddScheduleRequest.
    for request in saved_inputs("admin_messages", 4) {
        let request = AddScheduleRequest::decode(request.as_slice()).unwrap();
        let refused = CronSpec::parse(&request.cron).unwrap_err().to_string();
        assert!(
            refused.contains("has an empty item in its list"),
            "{refused}"
        );
        replayed += 1;
    }
    assert!(replayed >= 1, "no schedule request replayed");
}
