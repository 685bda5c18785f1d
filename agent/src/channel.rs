//! The channel to the controller, shared by the link and the jobs that fetch artifacts, and
//! replaced when the agent's certificate is renewed or recovered (new connections then use the
//! new one; the live connection goes on). With several controller addresses (one per replica)
//! there is one channel per address, each agent goes through them in an order of its own, drawn
//! at start (so a fleet given the same list spreads over the replicas, and a dead replica's
//! agents over the others), and the link moves on to the next one when a connection fails or
//! breaks. The link also says here when the controller refused the certificate as
//! expired, so that the certificate upkeep recovers it even when this device's clock says it is
//! still valid.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tonic::transport::Channel;

/// One channel per controller address, in the config's order, the order this agent tries them
/// in, and which one is in use.
#[derive(Clone)]
pub struct LinkChannel {
    channels: Arc<std::sync::RwLock<Vec<Channel>>>,
    /// The addresses' indexes in the order this agent goes through them.
    order: Arc<Vec<usize>>,
    /// Where in `order` the agent is.
    position: Arc<AtomicUsize>,
    refused_as_expired: Arc<Notify>,
}

impl LinkChannel {
    /// `channels` holds one channel per address of [`crate::config::AgentConfig::controllers`]
    /// (at least one).
    pub fn new(channels: Vec<Channel>) -> LinkChannel {
        assert!(!channels.is_empty(), "at least one controller address");
        use rand::seq::SliceRandom;
        let mut order: Vec<usize> = (0..channels.len()).collect();
        order.shuffle(&mut rand::rng());
        LinkChannel {
            channels: Arc::new(std::sync::RwLock::new(channels)),
            order: Arc::new(order),
            position: Arc::default(),
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
        self.order[self.position.load(Ordering::Relaxed) % self.order.len()]
    }

    /// Moves on to the next address in this agent's order (the first after the last); nothing
    /// changes with one.
    pub fn next_address(&self) {
        let count = self.order.len();
        let _ = self
            .position
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

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(n: usize) -> Vec<Channel> {
        (0..n)
            .map(|i| {
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", 1000 + i))
                    .unwrap()
                    .connect_lazy()
            })
            .collect()
    }

    #[tokio::test]
    async fn agents_given_one_list_start_apart_and_each_goes_through_every_address() {
        let mut starts = [0usize; 3];
        for _ in 0..600 {
            let link = LinkChannel::new(channels(3));
            starts[link.current()] += 1;
            let mut seen = vec![link.current()];
            for _ in 0..2 {
                link.next_address();
                seen.push(link.current());
            }
            seen.sort();
            assert_eq!(seen, [0, 1, 2], "every address once before any again");
            link.next_address();
            assert_eq!(link.current(), link.order[0], "then round again");
        }
        // 600 agents over 3 addresses: about 200 start at each (below 100 is 1 in 10^13).
        assert!(starts.iter().all(|s| *s >= 100), "{starts:?}");
        let single = LinkChannel::new(channels(1));
        single.next_address();
        assert_eq!(single.current(), 0);
    }
}
