//! Every message the link service (`AgentLink`) accepts from an agent, decoded with prost, and the
//! handling that needs no server: the enrollment token, the CSR an agent enrolls or renews with
//! (parsed and issued by the controller's CA), the digest a fetch names, and the latency
//! histogram of a job result (decoded when results are compared). The first byte picks the
//! message; nothing panics.

#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use edgefleet_controller::compare::interval::Latencies;
use edgefleet_controller::registry::artifact_dir::ArtifactDir;
use edgefleet_controller::trust::authority::Authority;
use edgefleet_proto::tokens::EnrollmentToken;
use edgefleet_proto::v1::{
    agent_message, job_result, AgentMessage, EnrollRequest, FetchArtifactRequest, RenewRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A CA and an artifact folder made once per process, in a temporary folder.
fn controller() -> &'static (Authority, ArtifactDir, PathBuf) {
    static HELD: OnceLock<(Authority, ArtifactDir, PathBuf)> = OnceLock::new();
    HELD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edgefleet-fuzz-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let authority = Authority::load_or_create(&dir, &["localhost".to_string()])
            .expect("a CA in the temporary folder");
        let root = dir.join("artifacts");
        let artifacts = ArtifactDir::open(&root).expect("an artifact folder");
        (authority, artifacts, root)
    })
}

fn issue(csr_pem: &str) {
    let (authority, _, _) = controller();
    if let Ok(issued) =
        authority.issue_agent(csr_pem, "0123456789abcdef", Duration::from_secs(3600))
    {
        assert!(issued.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let Ok(message) = AgentMessage::decode(bytes) else {
                return;
            };
            match message.body {
                Some(agent_message::Body::Hello(hello)) => {
                    let _: BTreeMap<String, String> = hello.labels.into_iter().collect();
                }
                Some(agent_message::Body::JobResult(result)) => {
                    if let Some(job_result::Outcome::Measurement(m)) = result.outcome {
                        // As `records` stores it and `compare` reads it back.
                        let text =
                            base64::engine::general_purpose::STANDARD.encode(&m.latency_histogram);
                        let _ = Latencies::from_hdr_base64([text.as_str()]);
                    }
                }
                Some(agent_message::Body::InstallResult(_) | agent_message::Body::Heartbeat(_))
                | None => {}
            }
        }
        1 => {
            let Ok(request) = EnrollRequest::decode(bytes) else {
                return;
            };
            if let Ok(token) = EnrollmentToken::parse(&request.token) {
                assert_eq!(EnrollmentToken::parse(&token.encode()), Ok(token));
            }
            issue(&request.csr_pem);
        }
        2 => {
            if let Ok(request) = RenewRequest::decode(bytes) {
                issue(&request.csr_pem);
            }
        }
        _ => {
            if let Ok(request) = FetchArtifactRequest::decode(bytes) {
                let (_, artifacts, root) = controller();
                if let Some(path) = artifacts.path(&request.sha256) {
                    // A digest names a file directly inside the artifact folder.
                    assert_eq!(path.parent(), Some(root.as_path()));
                }
            }
        }
    }
});
