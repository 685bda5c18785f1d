//! Several controllers on one PostgreSQL database, each a replica any agent, admin call or
//! report may reach. Each one says every few seconds that it is alive and how many agents it
//! holds; one of them holds the leader's lease and runs the work that must happen once (the
//! rollout driver, the scheduler's fires, judging what finished while nobody led, retention),
//! with a store whose every write the database refuses once that lease is over (the fence:
//! `Store::fenced`). Commands reach an agent through the store: whoever makes one wakes the
//! agent (`Store::wake_agents`, announced with `NOTIFY`), and the replica holding its stream
//! sends it everything pending, as it does when the agent connects; a sweep every two seconds
//! covers a lost announcement. An agent's newest stream wins: the replica holding an older one
//! closes it when the agent's wake-up says another replica holds it now.
//!
//! With SQLite there is one controller, always the leader, and none of this runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Controller;
use crate::store::{parse_wakes, Heard, Store, StoreError, WAKE_CHANNEL};

/// How a replica calls itself and how long the leader's lease lasts.
#[derive(Debug, Clone)]
pub struct ReplicaSettings {
    /// Unique among the replicas (`serve --replica-id`, by default HOST:PORT).
    pub id: String,
    /// The address the replica serves, as `edgefleet controllers` shows it.
    pub address: String,
    /// How long a lease lasts unless renewed; renewed every fifth of it (at least every 2 s).
    pub lease: Duration,
}

/// A replica agents are online on when it was heard from within this time.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(10);

/// How often a replica looks for wake-ups whose announcement it may have missed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How far back a sweep looks (and further after the listening connection was cut).
const SWEEP_WINDOW: Duration = Duration::from_secs(30);
const RELISTEN_WINDOW: Duration = Duration::from_secs(600);

/// What this replica sends an agent whose stream it holds goes out one pass at a time, each
/// reading the store afresh, so that an install never overtakes the rollback that follows it.
pub(super) struct Delivery {
    /// The stream (the fleet's session number).
    session: u64,
    /// The wake number the last pass acted on; held by the pass going on.
    delivered: Arc<tokio::sync::Mutex<i64>>,
}

/// Delivery passes run at once on a replica, at most: each reads the store on a connection of
/// the pool (16), and thousands at once (a run's wake-ups) would only queue for them.
const PASSES_AT_ONCE: usize = 12;

/// This replica's part of a running controller.
pub struct Replica {
    pub settings: ReplicaSettings,
    /// Per agent whose stream this replica holds.
    deliveries: Mutex<HashMap<String, Arc<Delivery>>>,
    /// Told when a write of the leader's loops was refused by the fence.
    fenced: tokio::sync::Notify,
    /// Delivery passes in progress.
    passes: Arc<tokio::sync::Semaphore>,
}

impl Replica {
    pub fn new(settings: ReplicaSettings) -> Arc<Replica> {
        Arc::new(Replica {
            settings,
            deliveries: Mutex::default(),
            fenced: tokio::sync::Notify::new(),
            passes: Arc::new(tokio::sync::Semaphore::new(PASSES_AT_ONCE)),
        })
    }

    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// Notes an agent's new stream `session`, whose first pass (what is pending as it
    /// connects) counts as having acted on wake number `wake`; that pass holds the returned
    /// guard while it reads and sends.
    pub(super) fn joined(
        &self,
        agent_id: &str,
        session: u64,
        wake: i64,
    ) -> tokio::sync::OwnedMutexGuard<i64> {
        let delivered = Arc::new(tokio::sync::Mutex::new(wake));
        let first_pass = delivered
            .clone()
            .try_lock_owned()
            .expect("a new delivery is unlocked");
        self.lock().insert(
            agent_id.to_string(),
            Arc::new(Delivery { session, delivered }),
        );
        first_pass
    }

    /// Forgets the agent's stream `session`, unless a newer one took its place.
    pub(super) fn left(&self, agent_id: &str, session: u64) {
        let mut deliveries = self.lock();
        if deliveries
            .get(agent_id)
            .is_some_and(|d| d.session == session)
        {
            deliveries.remove(agent_id);
        }
    }

    fn delivery(&self, agent_id: &str) -> Option<Arc<Delivery>> {
        self.lock().get(agent_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Delivery>>> {
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reports a store error of the leader's loops: a fenced write makes the replica step down now
/// rather than at its next renewal. Returns whether it was one.
pub(crate) fn fenced(ctl: &Controller, error: &StoreError) -> bool {
    if !error.is_fenced() {
        return false;
    }
    if let Some(replica) = &ctl.replica {
        replica.fenced.notify_one();
    }
    true
}

/// Runs this replica's part until `stop`: liveness and the lease, the leader's work while it
/// holds the lease (on a store fenced to its term), and wake-ups.
pub(super) async fn run(ctl: Controller, stop: CancellationToken) {
    let Some(replica) = ctl.replica.clone() else {
        return;
    };
    tokio::spawn(hear_wakes(ctl.clone(), stop.clone()));
    let lease_ms = replica.settings.lease.as_millis() as i64;
    // The lease on a connection of its own: a replica whose pool is busy with a run's results
    // must not lose the lease waiting for one.
    let lease_store = match ctl.store.with_own_connections(1) {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the lease's own connection; using the pool");
            ctl.store.clone()
        }
    };
    // Renewed every fifth of the lease, and alive at least every two seconds (others count a
    // replica's agents online while it was heard from in the last ten).
    let mut ticks = tokio::time::interval((replica.settings.lease / 5).min(Duration::from_secs(2)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term: Option<(i64, CancellationToken)> = None;
    loop {
        let mut fenced = false;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
            _ = replica.fenced.notified() => fenced = true,
        }
        let store = lease_store.clone();
        let (id, address) = (
            replica.settings.id.clone(),
            replica.settings.address.clone(),
        );
        let agents = ctl.fleet.len() as u64;
        let leading = term.as_ref().map(|(epoch, _)| *epoch);
        // The store's calls block: off the async threads, so a slow database holds up no link.
        let outcome = tokio::task::spawn_blocking(move || {
            store.replica_alive(&id, &address, agents)?;
            match leading {
                // A refused write (`fenced`) may be an earlier term's task: the renewal decides.
                Some(epoch) => Ok::<_, StoreError>(
                    store
                        .renew_lease(&id, epoch, lease_ms)?
                        .then_some((epoch, false)),
                ),
                None => Ok(store.take_lease(&id, lease_ms)?.map(|taken| {
                    // Fires the previous leader left undone run now; after this replica's own
                    // restart they count as missed, as with a single controller.
                    let late = !taken.previous_holder.is_empty() && taken.previous_holder != id;
                    (taken.epoch, late)
                })),
            }
        })
        .await;
        let now_leading = match outcome {
            Ok(Ok(taken)) => taken,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot reach the database to renew this replica's lease");
                // Still leading only while the lease may still be ours: the fence decides.
                leading.map(|epoch| (epoch, false))
            }
            Err(_) => leading.map(|epoch| (epoch, false)),
        };
        match (&term, now_leading) {
            (Some((epoch, _)), Some((now, _))) if *epoch == now => {}
            (Some((epoch, _)), _) => {
                let (epoch, stop_term) = (*epoch, term.take().expect("leading").1);
                tracing::warn!(replica = %replica.settings.id, epoch, reason = if fenced { "its writes were refused: the lease is over" } else { "the lease could not be renewed in time" }, "stepped down as leader");
                crate::metrics::leading(false);
                stop_leading(&ctl, stop_term).await;
            }
            (None, Some((epoch, took_over))) => match start_leading(&ctl, epoch, took_over).await {
                Ok(stop_term) => {
                    tracing::info!(replica = %replica.settings.id, epoch, "leading: the rollout driver, schedules and housekeeping run here");
                    crate::metrics::leading(true);
                    term = Some((epoch, stop_term));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start leading; giving the lease up");
                    let (store, id) = (lease_store.clone(), replica.settings.id.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || store.resign_lease(&id, epoch)).await;
                }
            },
            (None, None) => {}
        }
        // After the renewal and on the lease's connection: a report waiting for a pool that a
        // reconnecting fleet keeps busy must not make the renewal late.
        if term.is_some() {
            report_fleet(&lease_store).await;
        }
    }
    if let Some((_, stop_term)) = term.take() {
        stop_leading(&ctl, stop_term).await;
    }
    let store = lease_store;
    let id = replica.settings.id.clone();
    // Its agents are free at once, and the lease too if it held it.
    let _ = tokio::task::spawn_blocking(move || store.replica_gone(&id)).await;
}

/// The fleet-wide figures, reported by the leader alone: agents online on any replica, and
/// replicas alive.
async fn report_fleet(store: &Store) {
    let store = store.clone();
    let within = ALIVE_WITHIN.as_millis() as i64;
    let counted = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>((
            store.held_agent_count(within)? as usize,
            store.replicas(within)?.len(),
        ))
    })
    .await;
    if let Ok(Ok((agents, replicas))) = counted {
        crate::metrics::fleet(agents, replicas);
    }
}

/// Starts the leader's loops for lease term `epoch`, on a store fenced to it.
/// (`took_over`: another replica led before.)
async fn start_leading(
    ctl: &Controller,
    epoch: i64,
    took_over: bool,
) -> Result<CancellationToken, StoreError> {
    let replica = ctl.replica.as_ref().expect("a replica leads");
    // A leader stopped in the middle of a write (SIGSTOP, a frozen VM) loses its session, and
    // what its write held, after a lease: by then its lease is over too.
    let fenced_store = ctl
        .store
        .fenced(replica.id(), epoch, replica.settings.lease)?;
    let leader = Controller {
        store: fenced_store,
        ..ctl.clone()
    };
    let stop = CancellationToken::new();
    // Fires due in the last two leases were the previous leader's to run: they run now (each
    // fire is claimed once, so none runs twice).
    let late_grace = if took_over {
        replica.settings.lease * 2
    } else {
        Duration::ZERO
    };
    super::lead(leader, stop.clone(), late_grace).await;
    Ok(stop)
}

async fn stop_leading(ctl: &Controller, stop: CancellationToken) {
    stop.cancel();
    ctl.schedules.shutdown().await;
}

/// Acts on agents' wake-ups: announced ones as they come, and a sweep every two seconds (a
/// longer one after the listening connection was cut).
async fn hear_wakes(ctl: Controller, stop: CancellationToken) {
    let Some(mut heard) = ctl.store.listen(WAKE_CHANNEL) else {
        return;
    };
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let window = tokio::select! {
            _ = stop.cancelled() => return,
            _ = sweep.tick() => SWEEP_WINDOW,
            message = heard.recv() => match message {
                Some(Heard::Payload(payload)) => {
                    wake(&ctl, parse_wakes(&payload), Pass::Announced).await;
                    continue;
                }
                Some(Heard::Listening) => RELISTEN_WINDOW,
                None => return,
            },
        };
        let store = ctl.store.clone();
        let within = window.as_millis() as i64;
        let me = ctl
            .replica
            .as_ref()
            .map_or(String::new(), |r| r.id().to_string());
        match tokio::task::spawn_blocking(move || store.recent_wakes(&me, within)).await {
            Ok(Ok(wakes)) => wake(&ctl, wakes, Pass::Swept).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot look for agents' wake-ups"),
            Err(_) => {}
        }
    }
}

/// How a wake-up was found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Announced: acted on, after the pass in progress for that agent if there is one.
    Announced,
    /// By the sweep: skipped while a pass for that agent is in progress (the next sweep finds
    /// it again if that pass read the store too early).
    Swept,
}

/// For each wake-up of an agent this replica holds that it has not acted on: closes the stream
/// if another replica holds a newer one or the agent was revoked, and otherwise sends it
/// everything pending (the agent skips what it has). Agents whose pass can start now are read
/// together, a few hundred a pass (a run wakes thousands); an agent with a pass in progress gets
/// a pass of its own after it.
async fn wake(ctl: &Controller, wakes: Vec<(String, i64)>, how: Pass) {
    let Some(replica) = &ctl.replica else {
        return;
    };
    let mut ready = Vec::new();
    for (agent_id, number) in wakes {
        let Some(delivery) = replica.delivery(&agent_id) else {
            continue;
        };
        // The sweep finds every recent wake-up again: most were acted on already.
        match delivery.delivered.clone().try_lock_owned() {
            Ok(delivered) if *delivered >= number => {}
            Ok(delivered) => ready.push(Waiting {
                agent_id,
                number,
                delivered,
            }),
            Err(_) if how == Pass::Swept => {}
            Err(_) => {
                let ctl = ctl.clone();
                tokio::spawn(async move {
                    let delivered = delivery.delivered.clone().lock_owned().await;
                    if *delivered < number {
                        let waiting = Waiting {
                            agent_id,
                            number,
                            delivered,
                        };
                        deliver(ctl, vec![waiting]).await;
                    }
                });
            }
        }
    }
    while !ready.is_empty() {
        let batch: Vec<Waiting> = ready.drain(..ready.len().min(AGENTS_PER_PASS)).collect();
        tokio::spawn(deliver(ctl.clone(), batch));
    }
}

/// Agents one delivery pass reads together, at most.
const AGENTS_PER_PASS: usize = 500;

/// An agent whose pass may start: its wake-up's number, and its delivery's lock, held.
struct Waiting {
    agent_id: String,
    number: i64,
    delivered: tokio::sync::OwnedMutexGuard<i64>,
}

/// One delivery pass for `batch`: reads what each agent needs, then acts on it.
async fn deliver(ctl: Controller, batch: Vec<Waiting>) {
    let Some(replica) = ctl.replica.clone() else {
        return;
    };
    let Ok(_pass) = replica.passes.clone().acquire_owned().await else {
        return;
    };
    let ids: Vec<String> = batch.iter().map(|w| w.agent_id.clone()).collect();
    let (ctl2, me) = (ctl.clone(), replica.id().to_string());
    let found = tokio::task::spawn_blocking(move || next_steps(&ctl2, &ids, &me)).await;
    let mut steps = match found {
        Ok(Ok(steps)) => steps,
        // Not acted on: the sweep finds the wake-ups again.
        Ok(Err(e)) => {
            tracing::warn!(agents = batch.len(), error = %e, "cannot act on agents' wake-ups; the sweep tries again");
            return;
        }
        Err(_) => return,
    };
    for mut waiting in batch {
        let agent_id = waiting.agent_id.clone();
        match steps.remove(&agent_id) {
            Some(Step::Send(pending)) if pending.is_empty() => *waiting.delivered = waiting.number,
            // Each agent's messages on its own task: a slow stream holds up no other agent.
            Some(Step::Send(pending)) => {
                let ctl = ctl.clone();
                tokio::spawn(async move {
                    for message in pending {
                        if !ctl.fleet.send(&agent_id, message).await {
                            return; // the stream ended: its next one gets everything
                        }
                    }
                    *waiting.delivered = waiting.number;
                });
            }
            Some(Step::Moved(holder)) => {
                tracing::info!(%agent_id, newer_on = %holder, "the agent connected to another replica; closing its older stream here");
                ctl.fleet.close(&agent_id);
                *waiting.delivered = waiting.number;
            }
            Some(Step::Revoked) => {
                tracing::warn!(%agent_id, "the agent was revoked or removed; closing its stream");
                ctl.fleet.close(&agent_id);
                *waiting.delivered = waiting.number;
            }
            None => {}
        }
    }
}

/// What a delivery pass does for an agent whose stream this replica holds.
enum Step {
    /// Send it everything pending.
    Send(Vec<edgefleet_proto::v1::ControllerMessage>),
    /// Close its stream: the agent has a newer one on this other replica.
    Moved(String),
    /// Close its stream: the agent was revoked or removed.
    Revoked,
}

/// Reads what a delivery pass must do for each of `agent_ids` on replica `me`, in a few
/// queries for all of them (blocking store calls).
fn next_steps(
    ctl: &Controller,
    agent_ids: &[String],
    me: &str,
) -> Result<HashMap<String, Step>, StoreError> {
    let standing = ctl.store.holders_and_standing(agent_ids)?;
    let mut steps = HashMap::new();
    let mut here = Vec::new();
    for (agent_id, (holder, may_connect)) in standing {
        match holder {
            Some(holder) if holder != me => {
                steps.insert(agent_id, Step::Moved(holder));
            }
            _ if !may_connect => {
                steps.insert(agent_id, Step::Revoked);
            }
            _ => here.push(agent_id),
        }
    }
    let mut commands = super::rollout_driver::commands_for_agents(ctl, &here)?;
    let mut jobs = ctl.store.pending_jobs_of(&here)?;
    for agent_id in here {
        let pending = super::link::with_jobs(
            commands.remove(&agent_id).unwrap_or_default(),
            jobs.remove(&agent_id).unwrap_or_default(),
            &agent_id,
        );
        steps.insert(agent_id, Step::Send(pending));
    }
    Ok(steps)
}
