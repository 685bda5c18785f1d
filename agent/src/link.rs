//! The link to the controller: dial out, say hello, hold one bidirectional stream, send
//! heartbeats and results, receive jobs; on any break, reconnect with jittered exponential
//! backoff. The controller never connects to the agent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{
    agent_message, controller_message, AgentMessage, ControllerMessage, HardwareProfile, Heartbeat,
    Hello, InstallModel, InstallResult, RollbackModel, RunJobs,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::artifacts::ArtifactStore;
use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::enrollment::Enrollment;
use crate::installer::ModelInstaller;
use crate::jobs::{self, JobContext};
use crate::ledger::{Admission, JobLedger};
use crate::outbox::Outbox;
use crate::trouble::{Reporter, Trouble};
use crate::{installs, procfs};

/// What the agent tells the controller about itself, and where it keeps its models.
pub struct Link {
    pub config: AgentConfig,
    pub channel: crate::channel::LinkChannel,
    pub agent_id: String,
    pub profile: HardwareProfile,
    pub store: ArtifactStore,
    pub installer: ModelInstaller,
    /// Finished results on disk, until they are long sent.
    pub outbox: Outbox,
}

/// Work the controller sends, carried out one piece at a time (it all shares the device).
enum Work {
    Bench(RunJobs),
    Install(InstallModel),
    Rollback(RollbackModel),
}

/// What outlives a single connection: the work queue, results not yet sent, and the commands
/// already accepted (so a reconnect that brings them again does not run them twice).
struct WorkState {
    job_tx: mpsc::UnboundedSender<Work>,
    result_rx: mpsc::UnboundedReceiver<agent_message::Body>,
    pending: VecDeque<agent_message::Body>,
    ledger: JobLedger,
    install_ledger: JobLedger<InstallResult>,
    busy: Arc<AtomicU32>,
    outbox: Outbox,
}

/// Why a session with the controller ended.
enum SessionEnd {
    Shutdown,
    /// The session was established and later closed or broken.
    Dropped {
        reason: String,
        lasted: Duration,
    },
}

/// Controller heartbeats that may go missing before the link counts as dead.
const SILENT_HEARTBEATS: u32 = 3;
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How long the controller has to answer a hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(30);

impl Link {
    /// The controller address the link is using now.
    fn address(&self) -> &str {
        let all = &self.config.controllers;
        &all[self.channel.current() % all.len()].url
    }

    /// Keeps the link up until shutdown. Jobs run on their own task, so a broken link does not
    /// interrupt a benchmark; results wait until the link is back.
    pub async fn maintain(self, shutdown: CancellationToken) {
        let (job_tx, job_rx) = mpsc::unbounded_channel();
        let (result_tx, result_rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicU32::new(0));
        let ctx = JobContext {
            config: self.config.clone(),
            agent_id: self.agent_id.clone(),
            store: self.store.clone(),
            channel: self.channel.clone(),
            installer: self.installer.clone(),
            enrollment: self.enrollment(),
        };
        let executor = tokio::spawn(run_jobs(
            ctx,
            job_rx,
            result_tx,
            busy.clone(),
            self.outbox.clone(),
            shutdown.clone(),
        ));

        let mut work = WorkState {
            job_tx,
            result_rx,
            pending: VecDeque::new(),
            ledger: JobLedger::default(),
            install_ledger: JobLedger::default(),
            busy,
            outbox: self.outbox.clone(),
        };
        work.restore();
        let mut backoff = Backoff::new(self.config.reconnect_initial, self.config.reconnect_max);
        let mut reporter = Reporter::default();
        loop {
            let address = self.address().to_string();
            let outcome = self
                .session(&self.channel.get(), &mut work, &shutdown)
                .await;
            if !matches!(outcome, Ok(SessionEnd::Shutdown)) {
                // With several controller addresses (replicas), the next try goes to the next.
                self.channel.next_address();
            }
            let delay = match outcome {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::Dropped { reason, lasted }) => {
                    reporter.cleared();
                    // Only a session that held for a while earns a fast reconnect; otherwise two
                    // devices sharing an id would push each other off several times a second.
                    if lasted >= STABLE_SESSION {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(controller = %address, %reason, retry_in_ms = delay.as_millis() as u64, "link to the controller lost; reconnecting");
                    delay
                }
                Err(status) => {
                    let delay = backoff.next_delay(&mut rand::rng());
                    // Said once when it begins or changes, not at every retry.
                    if status.code() == tonic::Code::PermissionDenied {
                        let trouble = Trouble::CertificateRefused(status.message().to_string());
                        if reporter.news(&trouble) {
                            tracing::error!(controller = %address, reason = %status.message(), retry_in_ms = delay.as_millis() as u64, "the controller refused this agent");
                        }
                    } else {
                        let trouble = crate::trouble::classify(&status);
                        if trouble == Trouble::CertificateExpired {
                            self.channel.report_expired();
                        }
                        if reporter.news(&trouble) {
                            match trouble {
                                Trouble::Other(_) | Trouble::Proxy(_) => {
                                    tracing::warn!(controller = %address, reason = %trouble, retry_in_ms = delay.as_millis() as u64, "cannot reach the controller; retrying")
                                }
                                _ => {
                                    tracing::error!(controller = %address, reason = %trouble, retry_in_ms = delay.as_millis() as u64, "cannot connect to the controller; retrying")
                                }
                            }
                        } else {
                            tracing::debug!(reason = %trouble, "still cannot connect to the controller");
                        }
                    }
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        executor.abort();
    }

    /// One connection: hello, then heartbeats, results and jobs until it breaks or shutdown.
    async fn session(
        &self,
        channel: &Channel,
        work: &mut WorkState,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(message(agent_message::Body::Hello(self.hello())))
            .await
            .expect("the receiver is alive");
        let mut client = AgentLinkClient::new(channel.clone());
        let handshake = async {
            let mut inbound = client.open(ReceiverStream::new(rx)).await?.into_inner();
            match inbound.message().await? {
                Some(ControllerMessage {
                    body: Some(controller_message::Body::Welcome(w)),
                }) => Ok((inbound, w)),
                Some(_) => Err(tonic::Status::internal(
                    "the controller did not welcome the agent",
                )),
                None => Err(tonic::Status::unavailable(
                    "the controller closed the link at once",
                )),
            }
        };
        let (mut inbound, welcome) = tokio::select! {
            r = tokio::time::timeout(WELCOME_TIMEOUT, handshake) => r.map_err(|_| {
                tonic::Status::deadline_exceeded("the controller did not answer the hello within 30 s")
            })??,
            _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
        };
        let connected_at = std::time::Instant::now();
        let dropped = |reason: String| SessionEnd::Dropped {
            reason,
            lasted: connected_at.elapsed(),
        };
        let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).max(200));
        tracing::info!(controller = %self.address(), version = %welcome.controller_version, agent_id = %self.agent_id, "connected to the controller");
        self.enrollment().observe(&welcome.controller_public_key);

        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A controller that sends heartbeats and then falls silent for three of them is gone
        // (a black hole, a dead NAT entry): reconnect now, not when TCP gives up.
        let silence = interval * SILENT_HEARTBEATS;
        let mut heard_at = tokio::time::Instant::now();
        let mut controller_beats = false;
        loop {
            // Results that could not be sent on an earlier connection go first.
            while let Some(result) = work.pending.pop_front() {
                if let Err(e) = tx.send(message(result.clone())).await {
                    if let Some(body) = e.0.body {
                        work.pending.push_front(body);
                    }
                    return Ok(dropped("the outbound stream closed".into()));
                }
                work.outbox.mark_sent(&result);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                _ = tokio::time::sleep_until(heard_at + silence), if controller_beats => {
                    return Ok(dropped(format!("no word from the controller for {:.1} s", silence.as_secs_f64())));
                }
                _ = heartbeat.tick() => {
                    let beat = Heartbeat {
                        unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                        agent_rss_bytes: procfs::own_rss_bytes().unwrap_or(0),
                        busy_jobs: work.busy.load(Ordering::Relaxed),
                    };
                    if tx.send(message(agent_message::Body::Heartbeat(beat))).await.is_err() {
                        return Ok(dropped("the outbound stream closed".into()));
                    }
                }
                Some(result) = work.result_rx.recv() => {
                    match &result {
                        agent_message::Body::JobResult(r) => work.ledger.finish(r),
                        agent_message::Body::InstallResult(r) => work.install_ledger.finish(r),
                        _ => {}
                    }
                    work.pending.push_back(result);
                }
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        heard_at = tokio::time::Instant::now();
                        match msg.body {
                            Some(controller_message::Body::Heartbeat(_)) => controller_beats = true,
                            Some(controller_message::Body::RunJobs(mut run)) => {
                                let mut resend = Vec::new();
                                run.jobs.retain(|job| match work.ledger.admit(&run.run_id, &job.job_id) {
                                    Admission::Run => true,
                                    Admission::AlreadyAccepted => false,
                                    Admission::Resend(result) => {
                                        resend.push(*result);
                                        false
                                    }
                                });
                                if !resend.is_empty() {
                                    tracing::info!(run_id = %run.run_id, results = resend.len(), "sending finished results again");
                                    work.pending.extend(resend.into_iter().map(agent_message::Body::JobResult));
                                }
                                if !run.jobs.is_empty() {
                                    tracing::info!(run_id = %run.run_id, jobs = run.jobs.len(), "received benchmark jobs");
                                    work.busy.fetch_add(run.jobs.len() as u32, Ordering::Relaxed);
                                    let _ = work.job_tx.send(Work::Bench(run));
                                }
                            }
                            Some(controller_message::Body::Install(install)) => {
                                let id = install.install_id.clone();
                                work.admit_command(&id, Work::Install(install));
                            }
                            Some(controller_message::Body::Rollback(rollback)) => {
                                let id = rollback.install_id.clone();
                                work.admit_command(&id, Work::Rollback(rollback));
                            }
                            Some(controller_message::Body::Welcome(_)) | None => {}
                        }
                    }
                    Ok(None) => return Ok(dropped("the controller closed the stream".into())),
                    Err(status) => return Ok(dropped(describe(&status))),
                },
            }
        }
    }

    fn enrollment(&self) -> Enrollment {
        Enrollment::new(&self.config.data_dir, self.config.controller_key)
    }

    fn hello(&self) -> Hello {
        Hello {
            agent_id: self.agent_id.clone(),
            name: self.config.name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            enrollment_token: self.config.enrollment_token.clone(),
            agent_version: crate::AGENT_VERSION.to_string(),
            hardware: Some(self.profile.clone()),
            artifacts: self.store.list(),
            installed: self.installer.list(),
        }
    }
}

impl WorkState {
    /// Takes back the results a previous run of the daemon kept on disk: every one answers the
    /// controller if it sends the same job again, and those never sent go out first.
    fn restore(&mut self) {
        self.outbox.prune();
        let kept = self.outbox.load();
        let unsent = kept.iter().filter(|k| !k.sent).count();
        for k in kept {
            match &k.body {
                agent_message::Body::JobResult(r) => self.ledger.finish(r),
                agent_message::Body::InstallResult(r) => self.install_ledger.finish(r),
                _ => continue,
            }
            if !k.sent {
                self.pending.push_back(k.body);
            }
        }
        if unsent > 0 {
            tracing::info!(
                results = unsent,
                "results kept on disk before a restart will be sent"
            );
        }
    }

    /// Queues an install or rollback unless it is queued already; one that finished has its
    /// result sent again.
    fn admit_command(&mut self, install_id: &str, work: Work) {
        match self.install_ledger.admit("install", install_id) {
            Admission::Run => {
                self.busy.fetch_add(1, Ordering::Relaxed);
                let _ = self.job_tx.send(work);
            }
            Admission::AlreadyAccepted => {}
            Admission::Resend(result) => self
                .pending
                .push_back(agent_message::Body::InstallResult(*result)),
        }
    }
}

/// Carries out received work one piece after another (benchmarks must not share the device).
async fn run_jobs(
    mut ctx: JobContext,
    mut jobs: mpsc::UnboundedReceiver<Work>,
    results: mpsc::UnboundedSender<agent_message::Body>,
    busy: Arc<AtomicU32>,
    outbox: Outbox,
    shutdown: CancellationToken,
) {
    // Each result is on disk before it is queued: a restart from here on loses none.
    let finish = |body: agent_message::Body| {
        outbox.keep(&body);
        let _ = results.send(body);
    };
    while let Some(work) = jobs.recv().await {
        let run = match work {
            Work::Bench(run) => run,
            Work::Install(command) => {
                let result = installs::install(&mut ctx, command).await;
                busy.fetch_sub(1, Ordering::Relaxed);
                finish(agent_message::Body::InstallResult(result));
                continue;
            }
            Work::Rollback(command) => {
                let result = installs::rollback(&ctx, &command);
                busy.fetch_sub(1, Ordering::Relaxed);
                finish(agent_message::Body::InstallResult(result));
                continue;
            }
        };
        for job in run.jobs {
            if shutdown.is_cancelled() {
                return;
            }
            let job_id = job.job_id.clone();
            tracing::info!(run_id = %run.run_id, %job_id, "job started");
            // Progress for people watching the run; not kept (a missed one loses nothing).
            let _ = results.send(agent_message::Body::JobStarted(
                edgefleet_proto::v1::JobStarted {
                    run_id: run.run_id.clone(),
                    job_id: job_id.clone(),
                },
            ));
            let result = jobs::execute(&mut ctx, &run.run_id, job).await;
            match &result.outcome {
                Some(edgefleet_proto::v1::job_result::Outcome::Error(error)) => {
                    tracing::warn!(run_id = %run.run_id, %job_id, %error, "job failed")
                }
                _ => tracing::info!(run_id = %run.run_id, %job_id, "job finished"),
            }
            busy.fetch_sub(1, Ordering::Relaxed);
            finish(agent_message::Body::JobResult(result));
        }
    }
}

fn message(body: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

/// A transport failure's message is "transport error"; the useful part is in its source chain.
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}
