//! The lock held while a rollout's state is read and changed, so that the driver, agents'
//! install answers and the user's controls never interleave. Within a controller it is a tokio
//! mutex; with replicas on PostgreSQL it is also a transaction-scoped advisory lock taken on a
//! session of its own, which PostgreSQL ends (releasing the lock) when its holder stalls
//! inside it for longer than a lease (a stopped process, a frozen VM).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::store::{DbError, Store, StoreError};

/// The advisory lock's key (`rollouts` in ASCII, as a number).
const ROLLOUT_LOCK: i64 = 0x726f_6c6c_6f75_7473;

/// How long a holder may sit inside the lock before PostgreSQL ends its session, at least: with
/// replicas, twice the leader's lease, so that a leader frozen inside the lock has lost its
/// lease (and its writes are refused) before anyone else can take the lock.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// The rollout lock; cheap to clone.
#[derive(Clone)]
pub struct RolloutLock {
    local: Arc<Mutex<Session>>,
    pool: Option<Arc<crate::store::SessionPool>>,
}

#[derive(Default)]
struct Session {
    client: Option<tokio_postgres::Client>,
}

/// Held while a rollout is read and changed; released when dropped.
pub struct RolloutGuard {
    session: Option<OwnedMutexGuard<Session>>,
}

impl RolloutLock {
    pub fn new(store: &Store) -> Result<RolloutLock, StoreError> {
        RolloutLock::with_lease(store, Duration::ZERO)
    }

    /// The lock of a replica whose leader's lease is `lease`.
    pub fn with_lease(store: &Store, lease: Duration) -> Result<RolloutLock, StoreError> {
        Ok(RolloutLock {
            local: Arc::default(),
            pool: store
                .session_pool(STALL_LIMIT.max(lease * 2))?
                .map(Arc::new),
        })
    }

    /// Waits for the lock: this controller's, and with PostgreSQL every replica's.
    pub async fn lock(&self) -> Result<RolloutGuard, StoreError> {
        let mut session = self.local.clone().lock_owned().await;
        let Some(pool) = &self.pool else {
            return Ok(RolloutGuard {
                session: Some(session),
            });
        };
        // A session PostgreSQL ended (a stall, a restart) is opened again, once.
        for attempt in 0..2 {
            if session.client.as_ref().is_none_or(|c| c.is_closed()) {
                session.client = Some(pool.own_client().await?);
            }
            let client = session.client.as_ref().expect("just opened");
            // The ROLLBACK ends a transaction whose COMMIT never went out (a guard dropped
            // outside a runtime); the lock is the transaction's and goes with it.
            match client
                .batch_execute(&format!(
                    "ROLLBACK; BEGIN; SELECT pg_advisory_xact_lock({ROLLOUT_LOCK})"
                ))
                .await
            {
                Ok(()) => {
                    return Ok(RolloutGuard {
                        session: Some(session),
                    })
                }
                Err(e) if attempt == 0 && e.code().is_none() => session.client = None,
                Err(e) => return Err(StoreError::Sql(DbError::Postgres(e))),
            }
        }
        unreachable!("the second attempt returns")
    }
}

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if session.client.is_none() {
            return;
        }
        // The COMMIT goes out before the local mutex is given up (the guard moves into the
        // task), so the next holder's BEGIN always follows it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Some(client) = &session.client {
                    if let Err(e) = client.batch_execute("COMMIT").await {
                        // PostgreSQL ended the session (a stall past the limit, a restart): what
                        // was done under the lock may have interleaved with another replica.
                        tracing::warn!(error = %e, "the rollout lock's session ended before it was released");
                    }
                }
                drop(session);
            });
        }
    }
}
