//! Benchmark: a reconnect storm. N agents (default 1,000; `EDGEFLEET_STORM_AGENTS`) enrolled
//! with a real controller (release binaries, TLS) all dial it at once, each with a full mutual-TLS
//! handshake on a fresh connection, open the agent link and say hello; the figure is the time
//! until the last one is welcomed. The same storm against a plaintext (`--insecure`) controller
//! in the same run is the peer: their ratio is what TLS costs at the door.
//!
//!     cargo build --release --bins && cargo run --release -p edgefleet-e2e --example reconnect_storm

use std::time::{Duration, Instant};

use edgefleet_e2e::{sim, Controller, SIMULATED_FLEET_LIMITS};
use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{
    agent_message, controller_message, AgentMessage, CreateEnrollmentTokenRequest, Hello,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn agent_count() -> usize {
    std::env::var("EDGEFLEET_STORM_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// What one agent dials with.
#[derive(Clone)]
struct Dialer {
    address: String,
    /// CA, certificate and key (TLS), or the shared token (plaintext).
    tls: Option<(String, String, String)>,
    token: String,
    id: String,
}

impl Dialer {
    /// Connects (a full handshake on a fresh connection), opens the link and waits for Welcome.
    async fn storm_once(&self) -> Result<(), String> {
        let mut endpoint = Endpoint::from_shared(self.address.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(60));
        if let Some((ca, cert, key)) = &self.tls {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .identity(Identity::from_pem(cert, key)),
                )
                .map_err(|e| e.to_string())?;
        }
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(AgentMessage {
            body: Some(agent_message::Body::Hello(Hello {
                agent_id: self.id.clone(),
                name: self.id.clone(),
                enrollment_token: self.token.clone(),
                ..Hello::default()
            })),
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut inbound = AgentLinkClient::new(channel)
            .open(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("{s:?}"))?
            .into_inner();
        match inbound
            .message()
            .await
            .map_err(|s| s.message().to_string())?
        {
            Some(m) if matches!(m.body, Some(controller_message::Body::Welcome(_))) => {
                // Keep the link open until every agent is in, as a real fleet would.
                tokio::spawn(async move {
                    let _tx = tx;
                    while let Ok(Some(_)) = inbound.message().await {}
                });
                Ok(())
            }
            other => Err(format!("no welcome: {other:?}")),
        }
    }
}

/// Enrolls `n` agents with the TLS controller through its real API: tokens from the admin
/// service, keys made here, CSRs, certificates.
async fn enroll_all(ctl: &Controller, n: usize) -> Vec<Dialer> {
    let (ca, mut admin, channel) = sim::connect_admin(ctl).await;
    let mut link = AgentLinkClient::new(channel);
    let mut dialers = Vec::with_capacity(n);
    for i in 0..n {
        let token = admin
            .create_enrollment_token(CreateEnrollmentTokenRequest::default())
            .await
            .unwrap()
            .into_inner()
            .token;
        let enrolled = sim::enroll(&mut link, token, format!("storm-{i:05}")).await;
        dialers.push(Dialer {
            address: ctl.address.clone(),
            tls: Some((ca.clone(), enrolled.certificate_pem, enrolled.key_pem)),
            token: String::new(),
            id: enrolled.agent_id,
        });
    }
    dialers
}

/// Every dialer at once, each trying again (as agents do) after a refused or reset connection;
/// the time until the last is welcomed, and how many attempts had to be repeated.
async fn storm(dialers: &[Dialer]) -> (Duration, usize) {
    let started = Instant::now();
    let tasks: Vec<_> = dialers
        .iter()
        .cloned()
        .map(|d| {
            tokio::spawn(async move {
                let mut retries = 0;
                loop {
                    match d.storm_once().await {
                        Ok(()) => return Ok(retries),
                        Err(e) if retries == 3 => return Err(e),
                        Err(_) => {
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let mut retries = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(n) => retries += n,
            Err(e) => panic!("an agent of {} was not welcomed: {e}", dialers[0].address),
        }
    }
    (started.elapsed(), retries)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    sim::raise_open_file_limit();
    let n = agent_count();
    let work = tempfile::tempdir().unwrap();
    let tls_dir = work.path().join("tls");
    let plain_dir = work.path().join("plain");
    std::fs::create_dir_all(&tls_dir).unwrap();
    std::fs::create_dir_all(&plain_dir).unwrap();
    // One loopback source for every agent: the per-source caps of a real network are lifted.
    let tls = Controller::start_with(&tls_dir, "127.0.0.1:0", &SIMULATED_FLEET_LIMITS);
    let plain = Controller::start_insecure_with(
        &plain_dir,
        "storm",
        "127.0.0.1:0",
        &SIMULATED_FLEET_LIMITS,
    );
    println!("{n} agents, loopback, release controller");

    let enrolled_at = Instant::now();
    let tls_dialers = enroll_all(&tls, n).await;
    println!(
        "enrolled {n} agents through the API in {:.1} s",
        enrolled_at.elapsed().as_secs_f64()
    );
    let plain_dialers: Vec<Dialer> = (0..n)
        .map(|i| Dialer {
            address: plain.address.clone(),
            tls: None,
            token: "storm".into(),
            id: format!("plain-{i:05}"),
        })
        .collect();

    let (tls_time, tls_retries) = storm(&tls_dialers).await;
    let (plain_time, plain_retries) = storm(&plain_dialers).await;
    println!(
        "all {n} welcomed: TLS (full mutual-TLS handshakes) {:.2} s (goal <= 10 s, {tls_retries} retried), \
         plaintext {:.2} s ({plain_retries} retried); TLS/plaintext time {:.2}",
        tls_time.as_secs_f64(),
        plain_time.as_secs_f64(),
        tls_time.as_secs_f64() / plain_time.as_secs_f64()
    );
}
