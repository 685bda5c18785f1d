//! The channel to the controller, shared by the link and the jobs that fetch artifacts, and
//! replaced when the agent's certificate is renewed or recovered (new connections then use the
//! new one; the live connection goes on). With several controller addresses (one per replica)
//! there is one channel per address, and the link moves on to the next one when a connection
//! fails or breaks. The link also says here when the controller refused the certificate as
//! expired, so that the certificate upkeep recovers it even when this device's clock says it is
//! still valid.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tonic::transport::Channel;

/// One channel per controller address, in the config's order, and which one is in use.
#[derive(Clone)]
pub struct LinkChannel {
    channels: Arc<std::sync::RwLock<Vec<Channel>>>,
    current: Arc<AtomicUsize>,
    refused_as_expired: Arc<Notify>,
}

impl LinkChannel {
    /// `channels` holds one channel per address of [`crate::config::AgentConfig::controllers`]
    /// (at least one).
    pub fn new(channels: Vec<Channel>) -> LinkChannel {
        assert!(!channels.is_empty(), "at least one controller address");
        LinkChannel {
            channels: Arc::new(std::sync::RwLock::new(channels)),
            current: Arc::default(),
            refused_as_expired: Arc::default(),
        }
    }

    /// The channel to the address in use.
    pub fn get(&self) -> Channel {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels[self.current() % channels.len()].clone()
    }

    /// Which address is in use: an index into the config's `controllers`.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Moves on to the next address (the first after the last); nothing changes with one.
    pub fn next_address(&self) {
        let count = self
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                Some((i + 1) % count)
            });
    }

    /// Replaces every channel (new credentials), keeping the address in use.
    pub fn set(&self, channels: Vec<Channel>) {
        assert!(!channels.is_empty(), "at least one controller address");
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = channels;
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
