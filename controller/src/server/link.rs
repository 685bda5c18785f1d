//! The agent link service, what happens when an agent connects: its hello is checked, its stream
//! joins the fleet, unfinished jobs and rollout commands go out again, and its heartbeats,
//! results and install answers are recorded; artifact bytes are served from any offset.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use edgefleet_proto::tokens::{secret_hash, EnrollmentToken};
use edgefleet_proto::v1::agent_link_server::AgentLink;
use edgefleet_proto::v1::{
    agent_message, controller_message, job_result, AgentMessage, ArtifactChunk, ArtifactLocation,
    BenchJob, ControllerHeartbeat, ControllerMessage, EnrollReply, EnrollRequest,
    FetchArtifactRequest, Hello, LocateArtifactRequest, RecoverRequest, RenewReply, RenewRequest,
    RunJobs, Welcome,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::fleet::{Outbound, Outbox};
use super::{rollout_driver, Controller, Security, CONTROLLER_VERSION};
use crate::clock::now_ms;
use crate::store::{AgentModelRow, Recorded};
use crate::trust::authority::Authority;
use crate::trust::identity;

/// The size of an artifact this agent may fetch: only what the controller sent it (a manifest to
/// install, a job's model or input); bytes are counted under the certificate's identity.
fn authorized_artifact(ctl: &Controller, agent_id: &str, sha256: &str) -> Result<u64, Status> {
    // The database out of reach is UNAVAILABLE: the agent's transfer tries again.
    let status = |e: crate::store::StoreError| {
        if e.is_transient() {
            Status::unavailable(e.to_string())
        } else {
            Status::internal(e.to_string())
        }
    };
    if !ctl.store.may_fetch(agent_id, sha256).map_err(status)? {
        tracing::warn!(%agent_id, %sha256, "refused a fetch of an artifact never sent to this agent");
        return Err(Status::permission_denied(format!(
            "artifact {sha256} was not sent to this agent"
        )));
    }
    ctl.store
        .artifact_size(sha256)
        .map_err(status)?
        .ok_or_else(|| Status::not_found(format!("no artifact {sha256}")))
}

/// The largest artifact chunk served per request (agents ask for 4 MiB).
pub const CHUNK_BYTES: u64 = 8 << 20;

/// A chunk travels in pieces of this size, each written by the agent as it arrives.
const PIECE_BYTES: u64 = 256 << 10;

/// How long an agent has to say hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);

pub struct LinkService {
    controller: Controller,
    /// Refused recoveries are logged within this budget: any client may ask.
    recovery_log: std::sync::Mutex<super::admission::LogBudget>,
}

impl LinkService {
    pub fn new(controller: Controller) -> Self {
        LinkService {
            controller,
            recovery_log: std::sync::Mutex::new(super::admission::LogBudget::new(
                20,
                Duration::from_secs(60),
            )),
        }
    }

    /// Who is calling. With TLS: the agent its client certificate names, which must be enrolled
    /// here and not revoked (checked on every call). With `--insecure`: `None`, and the agent's
    /// own word (its hello, its request) is all there is.
    fn caller<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        match self.certified_id(request)? {
            None => Ok(None),
            Some(agent_id) => enrolled_caller(&self.controller, agent_id).map(Some),
        }
    }

    /// [`Self::caller`] with the store's check on a blocking thread: for the link's opening,
    /// which a whole fleet calls at once after a replica dies, while the async threads must go
    /// on serving the links already open (and renewing the leader's lease).
    async fn caller_off_thread<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let Some(agent_id) = self.certified_id(request)? else {
            return Ok(None);
        };
        let ctl = self.controller.clone();
        tokio::task::spawn_blocking(move || enrolled_caller(&ctl, agent_id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Some)
    }

    /// The agent id the caller's client certificate names (`None` with `--insecure`), not yet
    /// checked against the store.
    fn certified_id<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        if self.controller.authority.is_none() {
            return Ok(None);
        }
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "the agent link needs the agent's client certificate; enroll the device first (edgefleet-agent run --enroll-token TOKEN)",
            )
        })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        identity::agent_id_of(leaf)
            .map(Some)
            .map_err(|e| Status::unauthenticated(e.to_string()))
    }

    /// The hello of an `--insecure` controller's agent: the shared token and an id.
    fn check_insecure_hello(&self, hello: &Hello, shared_token: &str) -> Result<(), Status> {
        if !tokens_match(&hello.enrollment_token, shared_token) {
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

    /// The CA, for calls only a TLS controller answers.
    fn authority(&self) -> Result<&Authority, Status> {
        self.controller.authority.as_deref().ok_or_else(|| {
            Status::failed_precondition(
                "this controller runs --insecure: its agents present the shared token instead of enrolling",
            )
        })
    }

    /// An agent enrolled before the controller kept certificates' keys presents its current
    /// certificate: its key is recorded, so that only it (and its successors) can recover the
    /// agent later.
    fn adopt_certificate(ctl: &Controller, agent_id: &str, leaf: &[u8]) {
        let known = ctl
            .store
            .agent_trust(agent_id)
            .ok()
            .flatten()
            .is_some_and(|trust| !trust.key_sha256.is_empty());
        if known {
            return;
        }
        if let Some((key, not_after_ms)) = super::tls::key_and_expiry(leaf) {
            if let Err(e) = ctl.store.record_certificate(agent_id, &key, not_after_ms) {
                tracing::warn!(%agent_id, error = %e, "cannot record the agent's certificate");
            }
        }
    }

    /// Keeps what the store knows of the certificate an agent holds now.
    fn record_certificate(
        &self,
        agent_id: &str,
        issued: &crate::trust::authority::IssuedCertificate,
    ) -> Result<(), Status> {
        self.controller
            .store
            .record_certificate(
                agent_id,
                &super::tls::key_sha256_of_pem(&issued.pem),
                issued.not_after_ms,
            )
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn cert_lifetime(&self) -> Duration {
        match &self.controller.settings.security {
            Security::Tls {
                agent_cert_lifetime,
                ..
            } => *agent_cert_lifetime,
            Security::Insecure { .. } => Duration::ZERO,
        }
    }
}

/// `agent_id` as a caller: enrolled here and not revoked (checked on every call).
fn enrolled_caller(ctl: &Controller, agent_id: String) -> Result<String, Status> {
    match ctl
        .store
        .agent_revoked_ms(&agent_id)
        .map_err(|e| Status::internal(e.to_string()))?
    {
        // The handshake already took this connection out of the unauthenticated counts.
        Some(0) => Ok(agent_id),
        Some(_) => {
            tracing::warn!(%agent_id, "refused a revoked agent");
            Err(Status::permission_denied(format!(
                "agent {agent_id} was revoked; enroll the device again with a new token"
            )))
        }
        None => Err(Status::permission_denied(format!(
            "agent {agent_id} is not enrolled with this controller"
        ))),
    }
}

/// What an opening link's hello changes in the store (on a blocking thread): a certificate
/// from before the controller kept keys adopted, the agent's enrolled name and labels put in its
/// hello (its certificate says who it is), the agent and its installed models recorded. The
/// hello as the link goes on with it.
fn record_hello(
    ctl: &Controller,
    certified: Option<String>,
    leaf: Option<Vec<u8>>,
    mut hello: Hello,
) -> Result<Hello, Status> {
    let mut labels: BTreeMap<String, String> = hello.labels.clone().into_iter().collect();
    if let Some(agent_id) = &certified {
        if let Some(leaf) = &leaf {
            LinkService::adopt_certificate(ctl, agent_id, leaf);
        }
        let enrolled = ctl
            .store
            .agent(agent_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::permission_denied("not enrolled"))?;
        if !hello.agent_id.is_empty() && hello.agent_id != *agent_id {
            tracing::warn!(claimed = %hello.agent_id, %agent_id, "an agent's hello names another id; its certificate wins");
        }
        hello.agent_id = agent_id.clone();
        hello.name = enrolled.name;
        labels = enrolled.labels;
    }
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
    Ok(hello)
}

/// An agent's new stream, in the fleet (and the replica's deliveries) from `join` on: taken
/// out again if its opening does not get as far as serving it (an error, or the agent gone
/// while the store was asked).
struct JoinedUntilServed {
    ctl: Controller,
    agent_id: String,
    session: u64,
    served: bool,
}

impl Drop for JoinedUntilServed {
    fn drop(&mut self) {
        if !self.served {
            self.ctl.fleet.leave(&self.agent_id, self.session);
            if let Some(replica) = &self.ctl.replica {
                replica.left(&self.agent_id, self.session);
            }
        }
    }
}

#[tonic::async_trait]
impl AgentLink for LinkService {
    type OpenStream = Outbound;

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let peer = request.remote_addr();
        // The store's calls of an opening run on blocking threads (a whole fleet opens at once
        // after a replica dies; the async threads go on serving the open links).
        let certified = self.caller_off_thread(&request).await?;
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|leaf| leaf.to_vec()));
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
        let ctl = &self.controller;
        match (&certified, ctl.settings.insecure_token()) {
            (Some(_), _) => {}
            (None, Some(shared_token)) => {
                self.check_insecure_hello(&hello, shared_token)?;
                ctl.admission.authenticated(peer);
            }
            (None, None) => unreachable!("a TLS controller names every caller"),
        }
        let hello = {
            let ctl = ctl.clone();
            tokio::task::spawn_blocking(move || record_hello(&ctl, certified, leaf, hello))
                .await
                .map_err(|e| Status::internal(e.to_string()))??
        };

        let (tx, outbound) = Outbound::channel(32);
        let welcome = ControllerMessage {
            body: Some(controller_message::Body::Welcome(Welcome {
                controller_version: CONTROLLER_VERSION.to_string(),
                heartbeat_interval_ms: ctl.settings.heartbeat_interval.as_millis() as u32,
                controller_public_key: ctl.signer.public_key().to_vec(),
            })),
        };
        tx.send(Box::new(welcome))
            .await
            .expect("the receiver is alive");
        if ctl.fleet.is_online(&hello.agent_id) {
            tracing::warn!(agent = %hello.name, agent_id = %hello.agent_id, "an agent with this id is already connected; the new connection replaces it (two devices sharing one data directory?)");
        }
        let session = ctl.fleet.join(&hello.agent_id, tx.clone());
        let mut joined = JoinedUntilServed {
            ctl: ctl.clone(),
            agent_id: hello.agent_id.clone(),
            session,
            served: false,
        };
        // Jobs planned for this agent that never reported back (it was offline, or restarted
        // mid-run) go out again; the agent skips any it already has. Sent from a task: the
        // stream's buffer only drains once this call has returned it.
        let (first_pass, pending) = {
            let (ctl, agent_id) = (ctl.clone(), hello.agent_id.clone());
            tokio::task::spawn_blocking(move || {
                // With replicas, this stream is the agent's newest: a replica holding an older
                // one closes it, and what is pending from now on is sent from here, a pass at a
                // time, the first pass (below) counting as acting on the wake read here.
                let first_pass = match &ctl.replica {
                    None => None,
                    Some(replica) => {
                        let wake = ctl.store.hold_agent(&agent_id, replica.id(), session)?;
                        Some(replica.joined(&agent_id, session, wake))
                    }
                };
                Ok::<_, crate::store::StoreError>((first_pass, pending_messages(&ctl, &agent_id)))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                Status::unavailable(format!("the controller cannot reach its database: {e}"))
            })?
        };
        let beats_tx = tx.clone();
        tokio::spawn(async move {
            let _first_pass = first_pass;
            for message in pending {
                if tx.send(Box::new(message)).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(agent = %hello.name, agent_id = %hello.agent_id, peer = ?peer, "agent connected");

        let closed = ctl.fleet.closed_signal(&hello.agent_id, session);
        joined.served = true;
        tokio::spawn(serve_link(
            ctl.clone(),
            Link {
                agent_id: hello.agent_id,
                name: hello.name,
                session,
                inbound,
                outbound: beats_tx,
                closed,
            },
        ));
        Ok(Response::new(outbound))
    }

    type FetchArtifactStream = ReceiverStream<Result<ArtifactChunk, Status>>;

    async fn fetch_artifact(
        &self,
        request: Request<FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        let certified = self.caller(&request)?;
        let req = request.into_inner();
        if req.offset == 0 {
            crate::metrics::transfer_started();
        }
        let ctl = &self.controller;
        let agent_id = certified.unwrap_or_else(|| req.agent_id.clone());
        let size = authorized_artifact(ctl, &agent_id, &req.sha256)?;
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
        let (tx, rx) = mpsc::channel(2);
        let fleet = ctl.fleet.clone();
        let Some(file) = ctl.artifacts.local_file(&req.sha256, size).await else {
            // In an object store: the chunk is read with one range GET, then sent in pieces.
            let artifacts = ctl.artifacts.clone();
            tokio::spawn(async move {
                let chunk = match artifacts
                    .read(&req.sha256, req.offset..req.offset + want)
                    .await
                {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::warn!(sha256 = %req.sha256, error = %e, "cannot read an artifact for an agent");
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "cannot read artifact {}: {e}",
                                req.sha256
                            ))))
                            .await;
                        return;
                    }
                };
                let mut at = req.offset;
                let mut pieces = chunk.chunks(PIECE_BYTES as usize).peekable();
                if pieces.peek().is_none() {
                    let _ = tx
                        .send(Ok(ArtifactChunk {
                            offset: at,
                            data: Default::default(),
                            total_size: size,
                        }))
                        .await;
                    return;
                }
                for piece in pieces {
                    let len = piece.len() as u64;
                    fleet.add_served(&agent_id, &req.sha256, len);
                    crate::metrics::bytes_served(len);
                    let chunk = ArtifactChunk {
                        offset: at,
                        data: chunk.slice_ref(piece),
                        total_size: size,
                    };
                    at += len;
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            });
            return Ok(Response::new(ReceiverStream::new(rx)));
        };
        let mut file = file
            .map_err(|e| Status::internal(format!("cannot read artifact {}: {e}", req.sha256)))?;
        // Pieces are read on a blocking thread while earlier ones are on their way: the agent
        // hashes and writes one while the next is read and sent.
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
                    fleet.add_served(&agent_id, &req.sha256, len);
                    crate::metrics::bytes_served(len);
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

    async fn locate_artifact(
        &self,
        request: Request<LocateArtifactRequest>,
    ) -> Result<Response<ArtifactLocation>, Status> {
        let certified = self.caller(&request)?;
        let req = request.into_inner();
        let ctl = &self.controller;
        let agent_id = certified.unwrap_or_else(|| req.agent_id.clone());
        let size = authorized_artifact(ctl, &agent_id, &req.sha256)?;
        let presigned = ctl
            .artifacts
            .presigned_url(&req.sha256)
            .await
            .map_err(|e| {
                tracing::warn!(sha256 = %req.sha256, error = %e, "cannot presign an artifact URL");
                Status::unavailable(format!(
                    "cannot presign a URL for artifact {}: {e}",
                    req.sha256
                ))
            })?;
        let location = match presigned {
            Some(p) => {
                crate::metrics::url_presigned();
                ArtifactLocation {
                    url: p.url,
                    expires_unix_ms: p.expires_unix_ms,
                    size,
                }
            }
            None => ArtifactLocation {
                url: String::new(),
                expires_unix_ms: 0,
                size,
            },
        };
        Ok(Response::new(location))
    }

    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollReply>, Status> {
        let authority = self.authority()?;
        let peer = request.remote_addr();
        let req = request.into_inner();
        let token = EnrollmentToken::parse(&req.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if token.ca_sha256 != authority.ca_sha256() {
            return Err(Status::permission_denied(
                "the enrollment token was made by another controller (it pins another CA)",
            ));
        }
        let agent_id = uuid::Uuid::new_v4().simple().to_string();
        // The certificate first: a CSR that does not parse must not use up the token.
        let issued = authority
            .issue_agent(&req.csr_pem, &agent_id, self.cert_lifetime())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let asked_labels: BTreeMap<String, String> = req.labels.into_iter().collect();
        let asked_name = if req.name.trim().is_empty() {
            agent_id[..8].to_string()
        } else {
            req.name
        };
        let enrolled = self
            .controller
            .store
            .enroll_agent(
                &secret_hash(&token.secret),
                &agent_id,
                &asked_name,
                req.name_is_hostname,
                &asked_labels,
                now_ms(),
            )
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|refusal| {
                tracing::warn!(name = %asked_name, reason = %refusal, "refused an enrollment");
                Status::permission_denied(refusal.to_string())
            })?;
        self.controller.admission.authenticated(peer);
        self.record_certificate(&agent_id, &issued)?;
        tracing::info!(agent = %enrolled.name, %agent_id, "agent enrolled");
        Ok(Response::new(EnrollReply {
            agent_id,
            name: enrolled.name,
            labels: enrolled.labels.into_iter().collect(),
            certificate_pem: issued.pem,
            ca_pem: authority.ca_pem().to_string(),
            not_after_unix_ms: issued.not_after_ms,
        }))
    }

    async fn renew(&self, request: Request<RenewRequest>) -> Result<Response<RenewReply>, Status> {
        let authority = self.authority()?;
        let agent_id = self
            .caller(&request)?
            .expect("a TLS controller names every caller");
        let issued = authority
            .issue_agent(
                &request.into_inner().csr_pem,
                &agent_id,
                self.cert_lifetime(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.record_certificate(&agent_id, &issued)?;
        tracing::info!(%agent_id, "agent certificate renewed");
        Ok(Response::new(RenewReply {
            certificate_pem: issued.pem,
            not_after_unix_ms: issued.not_after_ms,
        }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RenewReply>, Status> {
        let authority = self.authority()?;
        let window = match &self.controller.settings.security {
            Security::Tls {
                recovery_window, ..
            } => *recovery_window,
            Security::Insecure { .. } => Duration::ZERO,
        };
        let peer = request.remote_addr();
        let req = request.into_inner();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem).map_err(|e| {
            Status::invalid_argument(format!(
                "the certificate signing request is not usable: {e}"
            ))
        })?;
        let cert_der = crate::trust::authority::der_of(&req.certificate_pem)
            .ok_or_else(|| Status::invalid_argument("the expired certificate is not PEM"))?;
        use rcgen::PublicKeyData;
        let recoverable = super::tls::recoverable_certificate(
            authority,
            &self.controller.store,
            &cert_der,
            csr.public_key.der_bytes(),
            window,
            now_ms(),
        )
        .map_err(|refusal| {
            if let Some(left_out) = self.recovery_log.lock().expect("log budget").take(std::time::Instant::now()) {
                tracing::warn!(reason = %refusal, left_out, "refused to recover an agent's expired certificate");
            }
            Status::permission_denied(refusal.to_string())
        })?;
        let agent_id = recoverable.agent_id;
        let issued = authority
            .issue_agent(&req.csr_pem, &agent_id, self.cert_lifetime())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.record_certificate(&agent_id, &issued)?;
        self.controller.admission.authenticated(peer);
        tracing::info!(
            agent = %recoverable.name,
            %agent_id,
            expired = %crate::clock::rfc3339(recoverable.not_after_ms),
            "agent recovered: its expired certificate was traded for a new one"
        );
        Ok(Response::new(RenewReply {
            certificate_pem: issued.pem,
            not_after_unix_ms: issued.not_after_ms,
        }))
    }
}

/// What an agent should get (again) as it connects: installs and rollbacks it has not
/// answered, then the jobs it has no result for, one batch per run. A stored row that cannot be
/// read keeps nothing else from going out; it is logged.
pub(super) fn pending_messages(ctl: &Controller, agent_id: &str) -> Vec<ControllerMessage> {
    let commands = rollout_driver::commands_for_agent(ctl, agent_id).unwrap_or_else(|e| {
        tracing::error!(%agent_id, error = %e, "cannot resend rollout commands");
        Vec::new()
    });
    let pending = ctl.store.pending_jobs(agent_id).unwrap_or_else(|e| {
        tracing::error!(%agent_id, error = %e, "cannot resend unfinished jobs");
        Vec::new()
    });
    with_jobs(commands, pending, agent_id)
}

/// Commands, then one `RunJobs` per run.
pub(super) fn with_jobs(
    mut messages: Vec<ControllerMessage>,
    pending: Vec<(String, BenchJob)>,
    agent_id: &str,
) -> Vec<ControllerMessage> {
    for (run_id, jobs) in group_by_run(pending) {
        tracing::info!(%agent_id, %run_id, jobs = jobs.len(), "resending unfinished jobs");
        messages.push(ControllerMessage {
            body: Some(controller_message::Body::RunJobs(RunJobs { run_id, jobs })),
        });
    }
    messages
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

/// Heartbeats an agent may miss before its link counts as dead (on both sides).
pub(crate) const SILENT_HEARTBEATS: u32 = 3;

/// One connected agent's stream, both ways.
struct Link {
    agent_id: String,
    name: String,
    session: u64,
    inbound: Streaming<AgentMessage>,
    outbound: Outbox,
    /// Cancelled when the controller closes the link (revocation, a newer connection, shutdown).
    closed: CancellationToken,
}

/// The one task of a connected agent, for as long as its link lives: applies what the agent
/// sends, sends the controller's heartbeats, and ends the link when either side closes it or the
/// agent falls silent for three heartbeats (a black hole, a dead NAT entry: TCP may still believe
/// in the connection). One task and a small future per agent, since ten thousand of them stay
/// parked for days: a message's handling is boxed, so its state exists only while it runs.
async fn serve_link(ctl: Controller, mut link: Link) {
    let interval = ctl.settings.heartbeat_interval;
    let silence = interval * SILENT_HEARTBEATS;
    let mut beats = tokio::time::interval(interval);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(silence);
    tokio::pin!(deadline);
    // A stream past its age ends, up to a fifth later, so that agents connected together do
    // not all come back together. Its connection was told to go away (HTTP/2 GOAWAY) at that
    // age, so the agent comes back on a new connection, which a balancer may send elsewhere.
    let aged = ctl
        .settings
        .max_stream_age
        .map(|age| age.mul_f64(1.0 + 0.2 * rand::random::<f64>()));
    let old_age = tokio::time::sleep(aged.unwrap_or(Duration::from_secs(86_400 * 365)));
    tokio::pin!(old_age);
    let reason = loop {
        // What woke the task is decided first and the message boxed, so that nothing of the
        // size of an `AgentMessage` is held across the handling's await.
        let message = tokio::select! {
            _ = link.closed.cancelled() => break "closed by the controller".to_string(),
            _ = beats.tick() => {
                let beat = ControllerMessage {
                    body: Some(controller_message::Body::Heartbeat(ControllerHeartbeat {
                        unix_ms: now_ms() as u64,
                    })),
                };
                // An agent whose queue is full is not reading: a beat more would only wait
                // behind the others, and it must not hold up what the agent sends.
                match link.outbound.try_send(Box::new(beat)) {
                    Err(mpsc::error::TrySendError::Closed(_)) => break "closed by the agent".to_string(),
                    _ => continue,
                }
            }
            () = &mut deadline => {
                break format!("no word from the agent for {:.1} s", silence.as_secs_f64());
            }
            () = &mut old_age, if aged.is_some() => {
                crate::metrics::stream_aged_out();
                break "the stream reached its maximum age; the agent reconnects".to_string();
            }
            message = link.inbound.message() => match message {
                Ok(Some(message)) => Box::new(message),
                Ok(None) => break "closed by the agent".to_string(),
                Err(status) => break status.message().to_string(),
            },
        };
        deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + silence);
        if let Some(reason) = Box::pin(handle(&ctl, &link.agent_id, *message)).await {
            break reason;
        }
    };
    link.closed.cancel();
    ctl.fleet.leave(&link.agent_id, link.session);
    if let Some(replica) = &ctl.replica {
        // Unless a newer stream of the agent took its place, here or on another replica.
        replica.left(&link.agent_id, link.session);
        if let Err(e) = ctl
            .store
            .release_agent(&link.agent_id, replica.id(), link.session)
        {
            tracing::debug!(agent_id = %link.agent_id, error = %e, "cannot record that the agent left");
        }
    }
    let _ = ctl.store.touch_agent(&link.agent_id, now_ms());
    tracing::info!(agent = %link.name, agent_id = %link.agent_id, %reason, "agent disconnected");
}

/// Writes when agents were last heard from, once a second in one transaction, and once more when
/// `stop` is cancelled. One UPDATE a heartbeat cost 20% of a core at 10,000 agents (2,000 a
/// second at the 5 s default).
pub(super) async fn record_last_seen(ctl: Controller, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(LAST_SEEN_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.cancelled() => true,
        };
        let seen = ctl.fleet.take_seen();
        if !seen.is_empty() {
            let started = std::time::Instant::now();
            if let Err(e) = ctl.store.touch_agents(&seen) {
                tracing::warn!(agents = seen.len(), error = %e, "cannot record when agents were last heard from");
            }
            crate::metrics::store_time("heartbeats", started.elapsed());
        }
        if stopping {
            return;
        }
    }
}

/// How often heard-from times are written to the store.
const LAST_SEEN_EVERY: Duration = Duration::from_secs(1);

/// Applies one message from an agent; `Some(reason)` when the link must close.
///
/// A result the store could not take because its database was out of reach (down, restarting)
/// closes the link: the agent keeps every result it sent, and its next hello brings again every
/// job the store has no result for, which it answers from what it kept. Nothing is lost and
/// nothing stored twice. A result the database refused is logged (asking again would not help).
async fn handle(ctl: &Controller, agent_id: &str, msg: AgentMessage) -> Option<String> {
    match msg.body {
        Some(agent_message::Body::InstallResult(result)) => {
            if let Some(reason) = rollout_driver::on_install_result(ctl, agent_id, result).await {
                return Some(reason);
            }
        }
        Some(agent_message::Body::Heartbeat(_)) => {
            crate::metrics::heartbeat();
            ctl.fleet.saw(agent_id, now_ms());
        }
        Some(agent_message::Body::JobResult(result)) => {
            let started = std::time::Instant::now();
            let measured = matches!(result.outcome, Some(job_result::Outcome::Measurement(_)));
            // PostgreSQL: with the other results waiting, in one transaction (a run's results
            // arrive by the thousand); SQLite: here, in process.
            let finished = crate::store::FinishedJob {
                agent_id: agent_id.to_string(),
                run_id: result.run_id.clone(),
                job_id: result.job_id.clone(),
                outcome: match &result.outcome {
                    Some(job_result::Outcome::Measurement(m)) => Ok(m.clone()),
                    // PostgreSQL's text holds no NUL character; a reason is for people to read.
                    Some(job_result::Outcome::Error(e)) => Err(e.replace('\0', "\u{fffd}")),
                    None => Err("the agent sent an empty result".to_string()),
                },
            };
            let recorded = match ctl.result_writer() {
                Some(writer) => writer.record(finished).await,
                None => match &finished.outcome {
                    Ok(m) => ctl.store.record_measurement(
                        agent_id,
                        &finished.run_id,
                        &finished.job_id,
                        m,
                    ),
                    Err(e) => {
                        ctl.store
                            .record_failure(agent_id, &finished.run_id, &finished.job_id, e)
                    }
                },
            };
            crate::metrics::store_time("record_result", started.elapsed());
            match recorded {
                Ok(Recorded::Stored) => {
                    crate::metrics::job_result(measured);
                    tracing::info!(%agent_id, run_id = %result.run_id, job_id = %result.job_id, "result stored");
                    super::judge::if_finished(ctl, &result.run_id);
                }
                Ok(Recorded::Duplicate) => {
                    tracing::debug!(%agent_id, job_id = %result.job_id, "duplicate result ignored")
                }
                Ok(Recorded::UnknownJob) => {
                    tracing::warn!(%agent_id, run_id = %result.run_id, job_id = %result.job_id, "result for a job this agent was not given; ignored")
                }
                Err(e) if e.is_transient() => {
                    tracing::error!(%agent_id, error = %e, "cannot store result; closing the link so the agent sends it again");
                    return Some(format!("the store could not take a result: {e}"));
                }
                Err(e) => tracing::error!(%agent_id, error = %e, "cannot store result"),
            }
        }
        Some(agent_message::Body::JobStarted(started)) => {
            match ctl
                .store
                .job_started(agent_id, &started.run_id, &started.job_id, now_ms())
            {
                Ok(true) => {
                    tracing::debug!(%agent_id, run_id = %started.run_id, job_id = %started.job_id, "job started")
                }
                Ok(false) => {
                    tracing::debug!(%agent_id, job_id = %started.job_id, "start of a job not pending for this agent; ignored")
                }
                Err(e) => tracing::warn!(%agent_id, error = %e, "cannot note a job's start"),
            }
        }
        Some(agent_message::Body::Hello(_)) => {
            tracing::warn!(%agent_id, "a second hello on an open link; ignored")
        }
        None => tracing::warn!(%agent_id, "an empty message on the link; ignored"),
    }
    None
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
