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

#[test]
fn link_regressions_decode_or_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/link_messages");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        // The first byte is the target's choice of message; 0 is an AgentMessage.
        let Some((0, message)) = bytes.split_first() else {
            continue;
        };
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
    assert!(
        replayed >= 2,
        "{replayed} histograms replayed from {}",
        dir.display()
    );
}

#[test]
fn admin_regressions_are_refused_from_their_text() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/admin_messages");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        // The first byte is the target's choice of request; 4 is AddScheduleRequest.
        let Some((4, request)) = bytes.split_first() else {
            continue;
        };
        let request = AddScheduleRequest::decode(request).unwrap();
        let refused = CronSpec::parse(&request.cron).unwrap_err().to_string();
        assert!(
            refused.contains("has an empty item in its list"),
            "{refused}"
        );
        replayed += 1;
    }
    assert!(replayed >= 1, "nothing replayed from {}", dir.display());
}
