//! The channel to the controller, shared by the link and the jobs that fetch artifacts, and
//! replaced when the agent's certificate is renewed or recovered (new connections then use the
//! new one; the live connection goes on). The link also says here when the controller refused
//! the certificate as expired, so that the certificate upkeep recovers it even when this
//! device's clock says it is still valid.

use std::sync::Arc;

use tokio::sync::Notify;
use tonic::transport::Channel;

/// The current channel.
#[derive(Clone)]
pub struct LinkChannel {
    channel: Arc<std::sync::RwLock<Channel>>,
    refused_as_expired: Arc<Notify>,
}

impl LinkChannel {
    pub fn new(channel: Channel) -> LinkChannel {
        LinkChannel {
            channel: Arc::new(std::sync::RwLock::new(channel)),
            refused_as_expired: Arc::default(),
        }
    }

    pub fn get(&self) -> Channel {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, channel: Channel) {
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = channel;
    }

    /// The controller refused this agent's certificate as expired.
    pub fn report_expired(&self) {
        self.refused_as_expired.notify_one();
    }

    /// Waits until the controller refuses the certificate as expired.
    pub async fn expired_reported(&self) {
        self.refused_as_expired.notified().await;
    }
}
