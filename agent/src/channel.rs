//! The channel to the controller, shared by the link and the jobs that fetch artifacts, and
//! replaced when the agent's certificate is renewed (new connections then use the new one; the
//! live connection goes on).

use std::sync::Arc;

use tonic::transport::Channel;

/// The current channel.
#[derive(Clone)]
pub struct LinkChannel(Arc<std::sync::RwLock<Channel>>);

impl LinkChannel {
    pub fn new(channel: Channel) -> LinkChannel {
        LinkChannel(Arc::new(std::sync::RwLock::new(channel)))
    }

    pub fn get(&self) -> Channel {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, channel: Channel) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = channel;
    }
}
