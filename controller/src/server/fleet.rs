//! The agents connected right now: for each, the sender of its stream. Online means "has an open
//! stream"; the database keeps everything else about an agent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use edgefleet_proto::v1::ControllerMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The sending half of an agent's stream. Messages wait in it boxed: every connected agent's
/// queue holds slots for 32 messages from the start, and a box takes 8 bytes of a slot where a
/// `Result<ControllerMessage, Status>` takes 104 (3 KB an agent, 30 MB at 10,000).
pub type Outbox = mpsc::Sender<Box<ControllerMessage>>;

/// The stream tonic sends to an agent: its [`Outbox`]'s messages, unboxed.
pub struct Outbound(mpsc::Receiver<Box<ControllerMessage>>);

impl Outbound {
    /// An agent's queue of `capacity` messages: the half the controller sends into, and the
    /// stream tonic sends from.
    pub fn channel(capacity: usize) -> (Outbox, Outbound) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Outbound(rx))
    }
}

impl tokio_stream::Stream for Outbound {
    type Item = Result<ControllerMessage, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|message| message.map(|boxed| Ok(*boxed)))
    }
}

/// The live half of the fleet.
#[derive(Clone, Default)]
pub struct Fleet {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    /// Artifact bytes served per (agent id, sha256) since this controller started.
    served: Arc<Mutex<HashMap<(String, String), u64>>>,
    /// When each agent was last heard from, not yet written to the store: heartbeats are
    /// written once a second in one transaction ([`Fleet::take_seen`]), not one by one.
    seen: Arc<Mutex<HashMap<String, i64>>>,
    /// Where joins and leaves are published (the console's online counts).
    changes: super::changes::Changes,
}

struct Session {
    id: u64,
    tx: Outbox,
    /// Cancelled when the controller closes this stream (revocation, shutdown).
    closed: CancellationToken,
}

impl Fleet {
    /// An empty fleet whose joins and leaves are published to `changes`.
    pub fn publishing_to(changes: super::changes::Changes) -> Fleet {
        Fleet {
            changes,
            ..Fleet::default()
        }
    }

    /// Registers a new stream for the agent, replacing an older one (a reconnect that arrived
    /// before the old stream was noticed as dead). Returns a session number for [`Fleet::leave`].
    pub fn join(&self, agent_id: &str, tx: Outbox) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let old = self.lock().insert(
            agent_id.to_string(),
            Session {
                id,
                tx,
                closed: CancellationToken::new(),
            },
        );
        if let Some(old) = old {
            old.closed.cancel();
        }
        crate::metrics::agents_connected(self.lock().len());
        self.changes.publish(super::changes::FLEET);
        id
    }

    /// What is cancelled when the controller closes this session's stream.
    pub fn closed_signal(&self, agent_id: &str, session: u64) -> CancellationToken {
        match self.lock().get(agent_id) {
            Some(s) if s.id == session => s.closed.clone(),
            // Replaced or closed already.
            _ => {
                let closed = CancellationToken::new();
                closed.cancel();
                closed
            }
        }
    }

    /// Ends an agent's stream now (it was revoked); it may not come back.
    pub fn close(&self, agent_id: &str) {
        let mut map = self.lock();
        if let Some(session) = map.remove(agent_id) {
            session.closed.cancel();
            self.changes.publish(super::changes::FLEET);
        }
        crate::metrics::agents_connected(map.len());
    }

    /// Forgets the stream, unless a newer one has taken its place.
    pub fn leave(&self, agent_id: &str, session: u64) {
        let mut map = self.lock();
        if map.get(agent_id).is_some_and(|s| s.id == session) {
            map.remove(agent_id);
            self.changes.publish(super::changes::FLEET);
        }
        crate::metrics::agents_connected(map.len());
    }

    /// Ends every agent's stream (on shutdown); agents will reconnect to whoever serves next.
    pub fn close_all(&self) {
        for (_, session) in self.lock().drain() {
            session.closed.cancel();
        }
        crate::metrics::agents_connected(0);
    }

    pub fn is_online(&self, agent_id: &str) -> bool {
        self.lock().contains_key(agent_id)
    }

    /// How many agents have a stream open here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The agents with a stream open here.
    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.lock().keys().cloned().collect()
    }

    /// Sends a command to an agent; false if it is not connected or its stream is gone.
    pub async fn send(&self, agent_id: &str, message: ControllerMessage) -> bool {
        let tx = self.lock().get(agent_id).map(|s| s.tx.clone());
        match tx {
            Some(tx) => tx.send(Box::new(message)).await.is_ok(),
            None => false,
        }
    }

    /// Notes that the agent was heard from at `unix_ms` (its store row is written later).
    pub fn saw(&self, agent_id: &str, unix_ms: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(agent_id) {
            Some(at) => *at = (*at).max(unix_ms),
            None => {
                seen.insert(agent_id.to_string(), unix_ms);
            }
        }
    }

    /// The agents heard from since the last call, with when (for the store).
    pub fn take_seen(&self) -> Vec<(String, i64)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.drain().collect()
    }

    /// Counts artifact bytes sent to an agent.
    pub fn add_served(&self, agent_id: &str, sha256: &str, bytes: u64) {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        *served
            .entry((agent_id.to_string(), sha256.to_string()))
            .or_default() += bytes;
    }

    /// Bytes of this artifact sent to this agent since the controller started (a resumed
    /// transfer counts only what was sent again).
    pub fn served(&self, agent_id: &str, sha256: &str) -> u64 {
        let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        served
            .get(&(agent_id.to_string(), sha256.to_string()))
            .copied()
            .unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
