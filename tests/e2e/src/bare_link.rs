//! The peer the fleet simulator weighs the controller's memory against: a bare tonic `AgentLink`
//! server with the controller's TLS and HTTP/2 settings and nothing else. It welcomes each agent,
//! sends heartbeats at the interval, and drops whatever agents send: no store, no fleet, no
//! rollouts. What it holds per idle stream is what tonic, hyper, h2 and rustls hold, so the
//! controller's memory per stream is read against it in the same run (`fleet_sim`'s last phase).

use std::path::Path;
use std::time::Duration;

use edgefleet_proto::v1::agent_link_server::{AgentLink, AgentLinkServer};
use edgefleet_proto::v1::{
    controller_message, AgentMessage, ArtifactChunk, ArtifactLocation, ControllerHeartbeat,
    ControllerMessage, EnrollReply, EnrollRequest, FetchArtifactRequest, LocateArtifactRequest,
    RecoverRequest, RenewReply, RenewRequest, Welcome,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// The first line the peer prints, followed by its address (as `edgefleet serve` does).
pub const LISTENING: &str = "bare link peer listening on ";

struct BareLink {
    heartbeat: Duration,
}

fn heartbeat() -> ControllerMessage {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ControllerMessage {
        body: Some(controller_message::Body::Heartbeat(ControllerHeartbeat {
            unix_ms,
        })),
    }
}

#[tonic::async_trait]
impl AgentLink for BareLink {
    type OpenStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn open(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let mut inbound = request.into_inner();
        inbound.message().await?;
        let (tx, rx) = mpsc::channel(32);
        let welcome = ControllerMessage {
            body: Some(controller_message::Body::Welcome(Welcome {
                controller_version: "bare-link-peer".into(),
                heartbeat_interval_ms: self.heartbeat.as_millis() as u32,
                controller_public_key: Vec::new(),
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::internal("stream gone"))?;
        let mut beats = tokio::time::interval(self.heartbeat);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = beats.tick() => {
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(Ok(heartbeat())) {
                            return;
                        }
                    }
                    message = inbound.message() => if !matches!(message, Ok(Some(_))) {
                        return;
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type FetchArtifactStream = ReceiverStream<Result<ArtifactChunk, Status>>;

    async fn fetch_artifact(
        &self,
        _: Request<FetchArtifactRequest>,
    ) -> Result<Response<Self::FetchArtifactStream>, Status> {
        Err(Status::unimplemented("the bare peer serves no artifacts"))
    }

    async fn locate_artifact(
        &self,
        _: Request<LocateArtifactRequest>,
    ) -> Result<Response<ArtifactLocation>, Status> {
        Err(Status::unimplemented("the bare peer serves no artifacts"))
    }

    async fn enroll(&self, _: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        Err(Status::unimplemented("the bare peer enrolls nobody"))
    }

    async fn renew(&self, _: Request<RenewRequest>) -> Result<Response<RenewReply>, Status> {
        Err(Status::unimplemented("the bare peer renews nothing"))
    }

    async fn recover(&self, _: Request<RecoverRequest>) -> Result<Response<RenewReply>, Status> {
        Err(Status::unimplemented("the bare peer recovers nothing"))
    }
}

/// Serves on `listen` with the server certificate and CA a controller left in `data_dir`
/// (`server.pem`, `server.key`, `ca.pem`), client certificates optional as there, and the same
/// HTTP/2 keepalive and TCP settings; prints [`LISTENING`] and the address, then serves until
/// killed.
pub async fn serve(
    listen: &str,
    data_dir: &Path,
    heartbeat: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let read = |name: &str| std::fs::read_to_string(data_dir.join(name));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("server.pem")?, read("server.key")?))
        .client_ca_root(Certificate::from_pem(read("ca.pem")?))
        .client_auth_optional(true);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(AgentLinkServer::new(BareLink { heartbeat }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}
