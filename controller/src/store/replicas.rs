//! Several controllers on one PostgreSQL database: the replicas and when each was last heard
//! from, which replica holds which agent's stream, the leader's lease (holder, epoch, expiry,
//! all judged by the database's clock, never a replica's), and agents' wake-ups (a number per
//! agent raised whenever the control plane has something for it, announced with `NOTIFY`).
//! Only the PostgreSQL backend has these tables; the claimed schedule fires are on both.

use std::collections::{HashMap, HashSet};

use super::db::{params, OptionalExtension};
use super::{Store, StoreError};

/// The channel a wake-up is announced on: `AGENT_ID:WAKE` pairs, one a line.
pub const WAKE_CHANNEL: &str = "edgefleet_wake";

/// A replica as `edgefleet controllers` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRow {
    pub id: String,
    pub address: String,
    pub started_ms: i64,
    /// How long ago (by the database's clock) the replica last said it was alive.
    pub heard_ago_ms: i64,
    /// Agents whose streams it holds, as it last counted.
    pub agents: u64,
    pub leader: bool,
}

/// A lease just taken: its epoch, and who held it before (empty when nobody ever did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub epoch: i64,
    pub previous_holder: String,
}

/// The leader's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds left (by the database's clock); negative once expired.
    pub left_ms: i64,
}

/// Wake-ups are announced in messages of at most this many agents (NOTIFY's payload is limited
/// to 8,000 bytes; an agent id is 32 characters).
const WAKES_PER_NOTIFY: usize = 150;

impl Store {
    /// Says that replica `id`, serving `address`, is alive and holds `agents` agents.
    pub fn replica_alive(&self, id: &str, address: &str, agents: u64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.execute(
            "INSERT INTO edgefleet_replicas (id, address, started_at, heard_at, agents)
             VALUES (?1, ?2, clock_timestamp(), clock_timestamp(), ?3)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                 heard_at = excluded.heard_at, agents = excluded.agents",
            params![id, address, agents as i64],
        )?;
        Ok(())
    }

    /// Forgets a replica that stops: its agents are no longer held, and the lease is given up
    /// if it held it (so another replica takes it at once, not when it expires).
    pub fn replica_gone(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("DELETE FROM agent_holders WHERE replica = ?1", params![id])?;
        tx.execute("DELETE FROM edgefleet_replicas WHERE id = ?1", params![id])?;
        tx.execute(
            "UPDATE edgefleet_leader SET expires_at = clock_timestamp() - interval '1 ms'
             WHERE holder = ?1 AND expires_at > clock_timestamp()",
            params![id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every replica heard from in the last `within_ms`, the leader marked.
    pub fn replicas(&self, within_ms: i64) -> Result<Vec<ReplicaRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_map(
            "SELECT r.id, r.address,
                    (EXTRACT(EPOCH FROM r.started_at) * 1000)::BIGINT,
                    (EXTRACT(EPOCH FROM clock_timestamp() - r.heard_at) * 1000)::BIGINT,
                    r.agents,
                    (l.holder = r.id AND l.expires_at > clock_timestamp())
             FROM edgefleet_replicas r CROSS JOIN edgefleet_leader l
             WHERE r.heard_at > clock_timestamp() - ?1 * interval '1 ms'
             ORDER BY r.id",
            params![within_ms],
            |r| {
                Ok(ReplicaRow {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    started_ms: r.get(2)?,
                    heard_ago_ms: r.get(3)?,
                    agents: r.get::<i64>(4)?.max(0) as u64,
                    leader: r.get(5)?,
                })
            },
        )?)
    }

    /// Takes the leader's lease for `ttl_ms` if nobody holds it (it expired, or was given up)
    /// or `holder` itself held it before (restarted, with no term of its own running); the new
    /// epoch if taken. Every take raises the epoch, so the writes of an earlier term (this
    /// replica's own included) are refused from now on.
    pub fn take_lease(&self, holder: &str, ttl_ms: i64) -> Result<Option<Taken>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn
            .query_row(
                "WITH before AS (SELECT holder FROM edgefleet_leader WHERE id = 1 FOR UPDATE)
                 UPDATE edgefleet_leader l
                 SET holder = ?1, epoch = l.epoch + 1,
                     expires_at = clock_timestamp() + ?2 * interval '1 ms'
                 FROM before
                 WHERE l.id = 1 AND (l.expires_at <= clock_timestamp() OR l.holder = ?1)
                 RETURNING l.epoch, before.holder",
                params![holder, ttl_ms],
                |r| {
                    Ok(Taken {
                        epoch: r.get(0)?,
                        previous_holder: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Extends the lease of `holder`'s term `epoch` by `ttl_ms` from now; false when that term
    /// is over (expired, or taken by another): the holder must stop acting as leader.
    pub fn renew_lease(&self, holder: &str, epoch: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let renewed = conn.execute(
            "UPDATE edgefleet_leader SET expires_at = clock_timestamp() + ?3 * interval '1 ms'
             WHERE id = 1 AND holder = ?1 AND epoch = ?2 AND expires_at > clock_timestamp()",
            params![holder, epoch, ttl_ms],
        )?;
        Ok(renewed == 1)
    }

    /// The lease as stored now.
    pub fn lease(&self) -> Result<LeaseRow, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT holder, epoch,
                    (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::BIGINT
             FROM edgefleet_leader WHERE id = 1",
            params![],
            |r| {
                Ok(LeaseRow {
                    holder: r.get(0)?,
                    epoch: r.get(1)?,
                    left_ms: r.get(2)?,
                })
            },
        )?)
    }

    /// Records that `replica` now holds the agent's stream `session` (newer than any other
    /// stream of it) and wakes the agent, so that a replica holding an older one closes it; the
    /// wake number given, which the new holder counts as delivered.
    pub fn hold_agent(
        &self,
        agent_id: &str,
        replica: &str,
        session: u64,
    ) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO agent_holders (agent_id, replica, session, since_at)
             VALUES (?1, ?2, ?3, clock_timestamp())
             ON CONFLICT (agent_id) DO UPDATE SET replica = excluded.replica,
                 session = excluded.session, since_at = excluded.since_at",
            params![agent_id, replica, session as i64],
        )?;
        let wake = wake_in(&mut tx, &[agent_id.to_string()])?
            .into_iter()
            .next()
            .map_or(0, |(_, w)| w);
        tx.commit()?;
        Ok(wake)
    }

    /// Forgets that `replica` holds the agent's stream `session` (it ended), unless a newer
    /// stream took its place (on this replica or another).
    pub fn release_agent(
        &self,
        agent_id: &str,
        replica: &str,
        session: u64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.execute(
            "DELETE FROM agent_holders WHERE agent_id = ?1 AND replica = ?2 AND session = ?3",
            params![agent_id, replica, session as i64],
        )?;
        Ok(())
    }

    /// Gives the lease up (a leader that could not start leading), so another replica takes it.
    pub fn resign_lease(&self, holder: &str, epoch: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.execute(
            "UPDATE edgefleet_leader SET expires_at = clock_timestamp() - interval '1 ms'
             WHERE id = 1 AND holder = ?1 AND epoch = ?2",
            params![holder, epoch],
        )?;
        Ok(())
    }

    /// For each of `agent_ids`: the replica holding its stream (if any) and whether it may
    /// still connect (not revoked or removed), in two queries.
    pub fn holders_and_standing(
        &self,
        agent_ids: &[String],
    ) -> Result<HashMap<String, (Option<String>, bool)>, StoreError> {
        let list = super::db::json_list(agent_ids);
        let ids = self.backend().json_ids(1);
        let mut conn = self.conn()?;
        let holders: HashMap<String, String> = conn
            .query_map(
                &format!(
                    "SELECT h.agent_id, h.replica FROM {ids} JOIN agent_holders h ON h.agent_id = ids.id"
                ),
                params![list],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?
            .into_iter()
            .collect();
        let standing: HashSet<String> = conn
            .query_map(
                &format!(
                    "SELECT a.id FROM {ids} JOIN agents a ON a.id = ids.id
                     WHERE a.removed_ms = 0 AND a.revoked_ms = 0"
                ),
                params![list],
                |r| r.get(0),
            )?
            .into_iter()
            .collect();
        Ok(agent_ids
            .iter()
            .map(|id| {
                let entry = (holders.get(id).cloned(), standing.contains(id));
                (id.clone(), entry)
            })
            .collect())
    }

    /// Agents whose streams are held by a replica heard from in the last `within_ms`: the
    /// fleet's online agents, whichever replica they reached.
    pub fn held_agents(&self, within_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_map(
            "SELECT h.agent_id FROM agent_holders h JOIN edgefleet_replicas r ON r.id = h.replica
             WHERE r.heard_at > clock_timestamp() - ?1 * interval '1 ms'",
            params![within_ms],
            |r| r.get(0),
        )?)
    }

    /// How many agents live replicas hold.
    pub fn held_agent_count(&self, within_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM agent_holders h JOIN edgefleet_replicas r ON r.id = h.replica
             WHERE r.heard_at > clock_timestamp() - ?1 * interval '1 ms'",
            params![within_ms],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Whether a live replica holds the agent's stream.
    pub fn agent_held(&self, agent_id: &str, within_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM agent_holders h JOIN edgefleet_replicas r
                            ON r.id = h.replica
                            WHERE h.agent_id = ?1
                              AND r.heard_at > clock_timestamp() - ?2 * interval '1 ms')",
            params![agent_id, within_ms],
            |r| r.get(0),
        )?)
    }

    /// Wakes agents: the control plane stored something for them (a command, jobs, their
    /// revocation), and whichever replica holds each sends them what is pending. Raises each
    /// one's wake number and announces it on [`WAKE_CHANNEL`] (delivered when this commits).
    pub fn wake_agents(&self, agent_ids: &[String]) -> Result<(), StoreError> {
        if agent_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        wake_in(&mut tx, agent_ids)?;
        tx.commit()?;
        Ok(())
    }

    /// Announces `payload` on `channel` to every replica listening (PostgreSQL's `NOTIFY`).
    pub fn announce(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.query_row(
            "SELECT pg_notify(?1, ?2)::text",
            params![channel, payload],
            |_| Ok(()),
        )?;
        Ok(())
    }

    /// Wake numbers raised in the last `within_ms` of the agents `replica` holds (its sweep, in
    /// case an announcement was lost).
    pub fn recent_wakes(
        &self,
        replica: &str,
        within_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_map(
            "SELECT w.agent_id, w.wake FROM agent_wakes w
             JOIN agent_holders h ON h.agent_id = w.agent_id AND h.replica = ?1
             WHERE w.woken_at > clock_timestamp() - ?2 * interval '1 ms'",
            params![replica, within_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Claims a schedule's fire planned for `planned_ms`: true for the one caller that fires it,
    /// false for every later one (another controller fired it, or this one did before).
    pub fn claim_fire(
        &self,
        schedule: &str,
        planned_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let claimed = conn.execute(
            "INSERT INTO schedule_fire_claims (schedule, planned_ms, claimed_ms)
             VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![schedule, planned_ms, now_ms],
        )?;
        Ok(claimed == 1)
    }
}

/// Raises the wake number of each agent and announces them, inside `conn`'s transaction.
fn wake_in(
    conn: &mut super::db::Conn<'_>,
    agent_ids: &[String],
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut unique: Vec<&str> = agent_ids.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    let mut woken = Vec::with_capacity(unique.len());
    for batch in unique.chunks(1000) {
        woken.extend(conn.query_map(
            "INSERT INTO agent_wakes (agent_id, wake, woken_at)
             SELECT id, nextval('agent_wake_numbers'), clock_timestamp()
             FROM unnest(string_to_array(?1, E'\\n')) AS id
             ON CONFLICT (agent_id) DO UPDATE SET wake = excluded.wake,
                 woken_at = excluded.woken_at
             RETURNING agent_id, wake",
            params![batch.join("\n")],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?);
    }
    for batch in woken.chunks(WAKES_PER_NOTIFY) {
        let payload = batch
            .iter()
            .map(|(id, wake)| format!("{id}:{wake}"))
            .collect::<Vec<_>>()
            .join("\n");
        conn.query_row(
            "SELECT pg_notify(?1, ?2)::text",
            params![WAKE_CHANNEL, payload],
            |_| Ok(()),
        )?;
    }
    Ok(woken)
}

/// The `AGENT_ID:WAKE` lines of one announcement (a malformed line is skipped: the sweep
/// finds its agent anyway).
pub fn parse_wakes(payload: &str) -> Vec<(String, i64)> {
    payload
        .lines()
        .filter_map(|pair| {
            let (id, wake) = pair.rsplit_once(':')?;
            Some((id.to_string(), wake.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn wake_announcements_are_read_line_by_line() {
        assert_eq!(
            super::parse_wakes("a1:5\nb:2:7\nbroken\nc:x"),
            vec![("a1".to_string(), 5), ("b:2".to_string(), 7)]
        );
    }
}
