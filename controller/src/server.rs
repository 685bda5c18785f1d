//! Serving the agent link and the admin service on one already-bound listener until shutdown,
//! with the rollout driver running beside them.

use std::future::Future;

use edgefleet_proto::v1::admin_server::AdminServer;
use edgefleet_proto::v1::agent_link_server::AgentLinkServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::admin_service::AdminService;
use crate::link_service::LinkService;
use crate::Controller;

/// Largest admin message (model uploads arrive in chunks well below this).
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Serves until `shutdown` completes. Taking a bound listener lets tests bind port 0.
pub async fn serve(
    listener: TcpListener,
    controller: Controller,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // Agent streams never end by themselves: closing them is what lets the server drain.
    let fleet = controller.fleet.clone();
    let stop_driver = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::rollout_driver::drive(
        controller.clone(),
        stop_driver.clone(),
    ));
    let shutdown = async move {
        shutdown.await;
        stop_driver.cancel();
        fleet.close_all();
    };
    let link = AgentLinkServer::new(LinkService::new(controller.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(controller))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(256 << 20);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(link)
        .add_service(admin)
        .serve_with_incoming_shutdown(
            // No Nagle: a reply's last small frame must not wait for the agent's delayed ACK
            // (measured: 40 ms stalls on one artifact chunk in five).
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
