//! The inputs under `fuzz/regressions/link_messages/` that once crashed the controller (each a
//! fixed bug, minimized by libFuzzer), replayed on stable as the `link_messages` fuzz target runs
//! them: a job result's latency histogram decodes or is an error.

use std::path::Path;

use base64::Engine;
use edgefleet_controller::compare::interval::Latencies;
use edgefleet_proto::v1::{agent_message, job_result, AgentMessage};
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
