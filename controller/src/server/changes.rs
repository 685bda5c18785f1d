//! What changed, for whoever watches: the console's open pages. A change is a topic
//! (`rollout/ID`, `fleet`, `regressions`, ...) published where the state changes (the rollout
//! driver, install answers, a user's control, agents joining and leaving); with several
//! controllers on one database each replica announces its own changes with PostgreSQL's
//! `NOTIFY` and publishes the others', so a console on any replica is live.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::Heard;

/// The PostgreSQL channel replicas announce their changes on.
pub const CHANGES_CHANNEL: &str = "edgefleet_changes";

/// Changes waiting for a slow watcher before it is told it missed some.
const BACKLOG: usize = 4096;

/// Changes announced together, at most this often.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);

/// A NOTIFY payload stays under PostgreSQL's 8,000-byte limit; past it, "everything changed".
const MAX_PAYLOAD: usize = 7000;

/// The topic every fleet membership change is published under.
pub const FLEET: &str = "fleet";
/// Regressions found or acknowledged.
pub const REGRESSIONS: &str = "regressions";
/// The topic that matches every watcher (a relayed announcement too long to list its topics).
pub const EVERYTHING: &str = "*";

/// One change.
#[derive(Debug, Clone)]
pub struct Change {
    pub topic: Arc<str>,
    /// Heard from another replica (not announced again).
    pub relayed: bool,
}

impl Change {
    /// Whether a watcher of `watched` should look again: the same topic, a topic under a
    /// watched prefix ending in `/` (`rollout/` for every rollout), or everything.
    pub fn concerns(&self, watched: &str) -> bool {
        let topic = &*self.topic;
        topic == watched
            || topic == EVERYTHING
            || (watched.ends_with('/') && topic.starts_with(watched))
    }
}

/// Where changes are published and watched.
#[derive(Clone)]
pub struct Changes {
    tx: broadcast::Sender<Change>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Changes {
    /// Says that `topic` changed (nothing happens when nobody watches).
    pub fn publish(&self, topic: impl Into<Arc<str>>) {
        let _ = self.tx.send(Change {
            topic: topic.into(),
            relayed: false,
        });
    }

    /// The rollout's topic.
    pub fn rollout(&self, rollout_id: &str) {
        self.publish(rollout_topic(rollout_id));
    }

    /// Changes from now on.
    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    fn relay(&self, topic: &str) {
        let _ = self.tx.send(Change {
            topic: topic.into(),
            relayed: true,
        });
    }
}

/// The topic of one rollout's changes.
pub fn rollout_topic(rollout_id: &str) -> String {
    format!("rollout/{rollout_id}")
}

/// With replicas: announces this replica's changes (deduplicated, every 100 ms at most) and
/// publishes the other replicas' announcements here, until `stop`.
pub(crate) async fn relay(ctl: super::Controller, stop: CancellationToken) {
    let Some(replica) = ctl.replica.clone() else {
        return;
    };
    let Some(mut heard) = ctl.store.listen(CHANGES_CHANNEL) else {
        return;
    };
    let me = replica.id().to_string();
    let mut local = ctl.changes.watch();
    let mut pending: BTreeSet<Arc<str>> = BTreeSet::new();
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            change = local.recv() => match change {
                Ok(change) if !change.relayed => { pending.insert(change.topic); }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => { pending.insert(EVERYTHING.into()); }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = heard.recv() => match message {
                Some(Heard::Payload(payload)) => {
                    if let Some((from, topics)) = payload.split_once('\n') {
                        if from != me {
                            for topic in topics.lines() {
                                ctl.changes.relay(topic);
                            }
                        }
                    }
                }
                // (Re)connected: what was announced meanwhile is lost; watchers look again.
                Some(Heard::Listening) => ctl.changes.relay(EVERYTHING),
                None => return,
            },
            _ = tick.tick(), if !pending.is_empty() => {
                let payload = announcement(&me, std::mem::take(&mut pending));
                let store = ctl.store.clone();
                let sent = tokio::task::spawn_blocking(move || store.announce(CHANGES_CHANNEL, &payload)).await;
                if let Ok(Err(e)) = sent {
                    tracing::debug!(error = %e, "cannot announce changes to the other replicas");
                }
            }
        }
    }
}

/// `REPLICA\nTOPIC\nTOPIC...`, or `REPLICA\n*` when the topics would not fit.
fn announcement(replica: &str, topics: BTreeSet<Arc<str>>) -> String {
    let mut payload = format!("{replica}\n");
    let listed = topics.iter().map(|t| t.len() + 1).sum::<usize>();
    if topics.contains(EVERYTHING) || payload.len() + listed > MAX_PAYLOAD {
        payload.push_str(EVERYTHING);
        return payload;
    }
    let topics: Vec<&str> = topics.iter().map(|t| &**t).collect();
    payload.push_str(&topics.join("\n"));
    payload
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{admission, replicas::ReplicaSettings, Controller, Security, Settings};

    fn replica(dir: &std::path::Path, url: &str, id: &str) -> Controller {
        let settings = Settings {
            security: Security::Insecure {
                shared_token: "t".into(),
            },
            heartbeat_interval: Duration::from_secs(5),
            limits: admission::ConnectionLimits::default(),
            retention: None,
            max_stream_age: None,
        };
        Controller::open_on(&dir.join(id), Some(url), None, settings)
            .unwrap()
            .as_replica(ReplicaSettings {
                id: id.into(),
                address: format!("{id}:1"),
                lease: Duration::from_secs(10),
            })
            .unwrap()
    }

    /// Waits for a change on `watcher` that `matches`, for at most 30 s.
    async fn heard(
        watcher: &mut broadcast::Receiver<Change>,
        matches: impl Fn(&Change) -> bool,
    ) -> Change {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match watcher.recv().await {
                    Ok(change) if matches(&change) => return change,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("the feed closed"),
                }
            }
        })
        .await
        .expect("the change within 30 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_on_one_replica_reaches_the_watchers_of_another_through_postgresql() {
        let url = edgefleet_test_postgres::cluster().database("changes");
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            replica(dir.path(), &url, "a"),
            replica(dir.path(), &url, "b"),
        );
        let mut on_a = a.changes.watch();
        let mut on_b = b.changes.watch();
        let stop = CancellationToken::new();
        tokio::spawn(relay(a.clone(), stop.clone()));
        tokio::spawn(relay(b.clone(), stop.clone()));
        // Each says "everything changed" once it listens (what was announced before is lost).
        heard(&mut on_a, |c| c.relayed && &*c.topic == EVERYTHING).await;
        heard(&mut on_b, |c| c.relayed && &*c.topic == EVERYTHING).await;

        a.changes.rollout("r1");
        let got = heard(&mut on_b, |c| c.relayed).await;
        assert_eq!(&*got.topic, "rollout/r1");
        assert!(got.concerns("rollout/r1"));
        // A replica is not told its own changes again: b hears a's, then a hears b's next one
        // with no echo of its own before it (one channel's notifications arrive in order).
        a.changes.publish(REGRESSIONS);
        assert_eq!(&*heard(&mut on_b, |c| c.relayed).await.topic, REGRESSIONS);
        b.changes.publish(FLEET);
        let next = heard(&mut on_a, |c| c.relayed).await;
        assert_eq!(
            &*next.topic, FLEET,
            "a heard its own change again: {next:?}"
        );
        stop.cancel();
    }

    #[test]
    fn an_announcement_lists_its_topics_or_says_everything_when_they_do_not_fit() {
        let few: BTreeSet<Arc<str>> = ["fleet".into(), "rollout/r1".into()].into();
        assert_eq!(announcement("a:1", few), "a:1\nfleet\nrollout/r1");
        let many: BTreeSet<Arc<str>> = (0..1000)
            .map(|i| Arc::from(format!("rollout/{i:020}")))
            .collect();
        assert_eq!(announcement("a:1", many), "a:1\n*");
    }

    #[test]
    fn a_watcher_hears_its_topic_and_everything() {
        let changes = Changes::default();
        let mut watcher = changes.watch();
        changes.rollout("r1");
        changes.relay(EVERYTHING);
        let first = watcher.try_recv().unwrap();
        assert!(first.concerns("rollout/r1") && first.concerns("rollout/"));
        assert!(!first.concerns("rollout/r2") && !first.concerns("fleet"));
        assert!(watcher.try_recv().unwrap().concerns("fleet"));
    }
}
