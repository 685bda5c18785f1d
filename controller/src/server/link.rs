//! The agent link service, what happens when an agent connects: its hello is checked, its stream
//! joins the fleet, unfinished jobs and rollout commands go out again, and its heartbeats,
//! results and install answers are recorded; artifact bytes are served from any offset.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use edgefleet_proto::v1::agent_link_server::AgentLink;
use edgefleet_proto::v1::{
    agent_message, controller_message, job_result, AgentMessage, ArtifactChunk, BenchJob,
    ControllerMessage, FetchArtifactRequest, Hello, RunJobs, Welcome,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{rollout_driver, Controller, CONTROLLER_VERSION};
use crate::clock::now_ms;
use crate::store::{AgentModelRow, Recorded};

/// The largest artifact chunk served per request (agents ask for 4 MiB).
pub const CHUNK_BYTES: u64 = 8 << 20;

/// A chunk travels in pieces of this size, each written by the agent as it arrives.
const PIECE_BYTES: u64 = 256 << 10;

/// How long an agent has to say hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

pub struct LinkService {
    controller: Controller,
}

impl LinkService {
    pub fn new(controller: Controller) -> Self {
        LinkService { controller }
    }

    fn check_hello(&self, hello: &Hello) -> Result<(), Status> {
        if !tokens_match(
            &hello.enrollment_token,
            &self.controller.settings.enrollment_token,
        ) {
            tracing::warn!(agent = %hello.name, agent_id = %hello.agent_id, "refused an agent: wrong enrollment token");
            return Err(Status::permission_denied(
                "enrollment token rejected: the agent's token does not match this controller's (check enrollment_token in the agent config)",
            ));
        }
        if hello.agent_id.trim().is_empty() || hello.name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the hello must carry an agent id and a name",
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AgentLink for LinkService {
    type OpenStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let peer = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 15 s"))??;
        let hello = match first.and_then(|m| m.body) {
            Some(agent_message::Body::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the link must be a hello",
                ))
            }
        };
        self.check_hello(&hello)?;

        let ctl = &self.controller;
        let labels: BTreeMap<String, String> = hello.labels.clone().into_iter().collect();
        let hardware = hello.hardware.clone().unwrap_or_default();
        ctl.store
            .upsert_agent(
                &hello.agent_id,
                &hello.name,
                &labels,
                &hello.agent_version,
                &hardware,
                now_ms(),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        let installed: Vec<AgentModelRow> = hello
            .installed
            .iter()
            .map(|m| AgentModelRow {
                agent_id: hello.agent_id.clone(),
                name: m.name.clone(),
                active_version: m.active_version.clone(),
                versions: m.versions.clone(),
            })
            .collect();
        ctl.store
            .record_installed(&hello.agent_id, &installed, None, now_ms())
            .map_err(|e| Status::internal(e.to_string()))?;

        let (tx, rx) = mpsc::channel(32);
        let welcome = ControllerMessage {
            body: Some(controller_message::Body::Welcome(Welcome {
                controller_version: CONTROLLER_VERSION.to_string(),
                heartbeat_interval_ms: ctl.settings.heartbeat_interval.as_millis() as u32,
                controller_public_key: ctl.signer.public_key().to_vec(),
            })),
        };
        tx.send(Ok(welcome)).await.expect("the receiver is alive");
        if ctl.fleet.is_online(&hello.agent_id) {
            tracing::warn!(agent = %hello.name, agent_id = %hello.agent_id, "an agent with this id is already connected; the new connection replaces it (two devices sharing one data directory?)");
        }
        let session = ctl.fleet.join(&hello.agent_id, tx.clone());
        // Jobs planned for this agent that never reported back (it was offline, or restarted
        // mid-run) go out again; the agent skips any it already has. Sent from a task: the
        // stream's buffer only drains once this call has returned it.
        // A stored row that cannot be read keeps nothing else from going out; it is logged.
        let pending = ctl.store.pending_jobs(&hello.agent_id).unwrap_or_else(|e| {
            tracing::error!(agent = %hello.name, error = %e, "cannot resend unfinished jobs");
            Vec::new()
        });
        let commands =
            rollout_driver::commands_for_agent(ctl, &hello.agent_id).unwrap_or_else(|e| {
                tracing::error!(agent = %hello.name, error = %e, "cannot resend rollout commands");
                Vec::new()
            });
        let name = hello.name.clone();
        tokio::spawn(async move {
            for command in commands {
                if tx.send(Ok(command)).await.is_err() {
                    return;
                }
            }
            for (run_id, jobs) in group_by_run(pending) {
                tracing::info!(agent = %name, %run_id, jobs = jobs.len(), "resending unfinished jobs");
                let message = ControllerMessage {
                    body: Some(controller_message::Body::RunJobs(RunJobs { run_id, jobs })),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(agent = %hello.name, agent_id = %hello.agent_id, peer = ?peer, "agent connected");

        let ctl = ctl.clone();
        tokio::spawn(async move {
            let agent_id = hello.agent_id;
            let reason = loop {
                match inbound.message().await {
                    Ok(Some(msg)) => handle(&ctl, &agent_id, msg).await,
                    Ok(None) => break "closed by the agent".to_string(),
                    Err(status) => break status.message().to_string(),
                }
            };
            ctl.fleet.leave(&agent_id, session);
            let _ = ctl.store.touch_agent(&agent_id, now_ms());
            tracing::info!(agent = %hello.name, %agent_id, %reason, "agent disconnected");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type FetchArtifactStream = ReceiverStream<Result<ArtifactChunk, Status>>;

    async fn fetch_artifact(
        &self,
        request: Request<FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        let size = ctl
            .store
            .artifact_size(&req.sha256)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no artifact {}", req.sha256)))?;
        let path = ctl
            .artifacts
            .path(&req.sha256)
            .ok_or_else(|| Status::invalid_argument("not a sha256 digest"))?;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end of the {size}-byte artifact",
                req.offset
            )));
        }
        let want = match req.max_bytes {
            0 => CHUNK_BYTES,
            n => n.min(CHUNK_BYTES),
        }
        .min(size - req.offset);
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Status::internal(format!("cannot read artifact {}: {e}", req.sha256)))?;
        // Pieces are read on a blocking thread while earlier ones are on their way: the agent
        // hashes and writes one while the next is read and sent.
        let (tx, rx) = mpsc::channel(2);
        let fleet = ctl.fleet.clone();
        tokio::task::spawn_blocking(move || {
            let mut send_pieces = || -> std::io::Result<()> {
                file.seek(SeekFrom::Start(req.offset))?;
                let end = req.offset + want;
                let mut at = req.offset;
                // At least one piece: an empty one when the agent asks from the end.
                loop {
                    // Read into spare capacity: no zeroing pass over bytes about to be overwritten.
                    let mut piece = Vec::with_capacity(PIECE_BYTES.min(end - at) as usize);
                    (&mut file)
                        .take(PIECE_BYTES.min(end - at))
                        .read_to_end(&mut piece)?;
                    let len = piece.len() as u64;
                    fleet.add_served(&req.agent_id, &req.sha256, len);
                    let chunk = ArtifactChunk {
                        offset: at,
                        data: piece.into(),
                        total_size: size,
                    };
                    at += len;
                    // Done when the agent went away, the chunk is sent, or the file ended early.
                    if tx.blocking_send(Ok(chunk)).is_err() || len == 0 || at >= end {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = send_pieces() {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "cannot read artifact {}: {e}",
                    req.sha256
                ))));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// (run id, job) pairs, in order, grouped into one batch per run.
fn group_by_run(jobs: Vec<(String, BenchJob)>) -> Vec<(String, Vec<BenchJob>)> {
    let mut groups: Vec<(String, Vec<BenchJob>)> = Vec::new();
    for (run_id, job) in jobs {
        match groups.last_mut() {
            Some((last, batch)) if *last == run_id => batch.push(job),
            _ => groups.push((run_id, vec![job])),
        }
    }
    groups
}

/// Applies one message from an agent.
async fn handle(ctl: &Controller, agent_id: &str, msg: AgentMessage) {
    match msg.body {
        Some(agent_message::Body::InstallResult(result)) => {
            rollout_driver::on_install_result(ctl, agent_id, result).await
        }
        Some(agent_message::Body::Heartbeat(_)) => {
            if let Err(e) = ctl.store.touch_agent(agent_id, now_ms()) {
                tracing::warn!(%agent_id, error = %e, "cannot record heartbeat");
            }
        }
        Some(agent_message::Body::JobResult(result)) => {
            let recorded = match &result.outcome {
                Some(job_result::Outcome::Measurement(m)) => {
                    ctl.store
                        .record_measurement(agent_id, &result.run_id, &result.job_id, m)
                }
                Some(job_result::Outcome::Error(e)) => {
                    ctl.store
                        .record_failure(agent_id, &result.run_id, &result.job_id, e)
                }
                None => ctl.store.record_failure(
                    agent_id,
                    &result.run_id,
                    &result.job_id,
                    "the agent sent an empty result",
                ),
            };
            match recorded {
                Ok(Recorded::Stored) => {
                    tracing::info!(%agent_id, run_id = %result.run_id, job_id = %result.job_id, "result stored")
                }
                Ok(Recorded::Duplicate) => {
                    tracing::debug!(%agent_id, job_id = %result.job_id, "duplicate result ignored")
                }
                Ok(Recorded::UnknownJob) => {
                    tracing::warn!(%agent_id, run_id = %result.run_id, job_id = %result.job_id, "result for a job this agent was not given; ignored")
                }
                Err(e) => tracing::error!(%agent_id, error = %e, "cannot store result"),
            }
        }
        Some(agent_message::Body::Hello(_)) | None => {}
    }
}

/// Compares tokens in time independent of where they differ.
fn tokens_match(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_must_match_exactly() {
        assert!(super::tokens_match("secret", "secret"));
        assert!(!super::tokens_match("secret", "secreT"));
        assert!(!super::tokens_match("secret", "secret2"));
        assert!(!super::tokens_match("", "secret"));
    }
}
