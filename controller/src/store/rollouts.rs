//! Rollout state in SQLite: rollouts (with their typed spec), their targets (one per agent), gate
//! runs and verdicts, and the event log. Everything a controller restart needs to resume.

use super::db::{params, OptionalExtension};
use edgefleet_proto::v1::Workload;
use prost::Message;

use super::{decode_json, decode_proto, decode_state, Store, StoreError};
use crate::rollout::gate::AgentVerdict;
use crate::rollout::{RolloutSpec, RolloutState, TargetState};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRow {
    pub id: String,
    pub model_name: String,
    pub model_version: String,
    /// What it was asked to do (stored as JSON, read back typed).
    pub spec: RolloutSpec,
    /// The gate's workload from a suite; `None`: the built-in text workload.
    pub gate_workload: Option<Workload>,
    pub state: RolloutState,
    pub reason: String,
    pub current_wave: u32,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One agent's part in a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub rollout_id: String,
    pub agent_id: String,
    pub wave: u32,
    pub state: TargetState,
    pub error: String,
    /// The version that was active before (what a rollback returns to; empty: none).
    pub previous_version: String,
    pub health: String,
    pub updated_ms: i64,
    /// The install's transfer: bytes fetched and when it started and finished (agent clock).
    pub fetched_bytes: u64,
    pub fetch_started_ms: i64,
    pub fetch_finished_ms: i64,
}

/// A wave's gate benchmark and, once decided, its verdicts.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRow {
    pub rollout_id: String,
    pub wave: u32,
    pub run_id: String,
    /// `None` while the gate's benchmark runs.
    pub verdicts: Option<Vec<AgentVerdict>>,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at_ms: i64,
    pub agent_id: Option<String>,
    pub message: String,
}

const ROLLOUT_COLUMNS: &str = "id, model_name, model_version, spec, gate_workload, state, reason, current_wave, created_ms, updated_ms";

const TARGET_COLUMNS: &str = "rollout_id, agent_id, wave, state, error, previous_version, health, updated_ms, fetched_bytes, fetch_started_ms, fetch_finished_ms";

/// A rollout row with its stored text and blobs not yet decoded.
struct RawRollout {
    id: String,
    model_name: String,
    model_version: String,
    spec: String,
    gate_workload: Vec<u8>,
    state: String,
    reason: String,
    current_wave: u32,
    created_ms: i64,
    updated_ms: i64,
}

impl RawRollout {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawRollout> {
        Ok(RawRollout {
            id: r.get(0)?,
            model_name: r.get(1)?,
            model_version: r.get(2)?,
            spec: r.get(3)?,
            gate_workload: r.get(4)?,
            state: r.get(5)?,
            reason: r.get(6)?,
            current_wave: r.get(7)?,
            created_ms: r.get(8)?,
            updated_ms: r.get(9)?,
        })
    }

    fn decode(self) -> Result<RolloutRow, StoreError> {
        let id = self.id;
        Ok(RolloutRow {
            spec: decode_json(&self.spec, "rollouts", &id)?,
            gate_workload: if self.gate_workload.is_empty() {
                None
            } else {
                Some(decode_proto(&self.gate_workload, "rollouts", &id)?)
            },
            state: decode_state(&self.state, "rollouts", &id)?,
            id,
            model_name: self.model_name,
            model_version: self.model_version,
            reason: self.reason,
            current_wave: self.current_wave,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// A target row with its state not yet decoded.
struct RawTarget {
    row: TargetRow,
    state: String,
}

impl RawTarget {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawTarget> {
        Ok(RawTarget {
            row: TargetRow {
                rollout_id: r.get(0)?,
                agent_id: r.get(1)?,
                wave: r.get(2)?,
                state: TargetState::Waiting,
                error: r.get(4)?,
                previous_version: r.get(5)?,
                health: r.get(6)?,
                updated_ms: r.get(7)?,
                fetched_bytes: r.get::<i64>(8)? as u64,
                fetch_started_ms: r.get(9)?,
                fetch_finished_ms: r.get(10)?,
            },
            state: r.get(3)?,
        })
    }

    fn decode(self) -> Result<TargetRow, StoreError> {
        let key = format!("{}, {}", self.row.rollout_id, self.row.agent_id);
        Ok(TargetRow {
            state: decode_state(&self.state, "rollout_targets", key)?,
            ..self.row
        })
    }
}

impl Store {
    /// Creates a rollout and its targets in one transaction.
    pub fn insert_rollout(
        &self,
        rollout: &RolloutRow,
        targets: &[TargetRow],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                rollout.id,
                rollout.model_name,
                rollout.model_version,
                serde_json::to_string(&rollout.spec).expect("a spec serializes"),
                rollout
                    .gate_workload
                    .as_ref()
                    .map(Message::encode_to_vec)
                    .unwrap_or_default(),
                rollout.state.as_str(),
                rollout.reason,
                i64::from(rollout.current_wave),
                rollout.created_ms,
                rollout.updated_ms,
            ],
        )?;
        for t in targets {
            tx.execute(
                &format!("INSERT INTO rollout_targets ({TARGET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    t.rollout_id,
                    t.agent_id,
                    i64::from(t.wave),
                    t.state.as_str(),
                    t.error,
                    t.previous_version,
                    t.health,
                    t.updated_ms,
                    t.fetched_bytes as i64,
                    t.fetch_started_ms,
                    t.fetch_finished_ms
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// How many rollouts are in each state (for the metrics).
    pub fn rollout_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        super::count_by_state(&mut self.conn()?, "rollouts")
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_ms DESC, id"
        ))?;
        let raw = stmt
            .query_map(params![], RawRollout::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawRollout::decode).collect()
    }

    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRow>, StoreError> {
        let raw = self
            .conn()?
            .query_row(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                params![id],
                RawRollout::read,
            )
            .optional()?;
        raw.map(RawRollout::decode).transpose()
    }

    /// Sets a rollout's state, reason and current wave.
    pub fn update_rollout(
        &self,
        id: &str,
        state: RolloutState,
        reason: &str,
        current_wave: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE rollouts SET state = ?2, reason = ?3, current_wave = ?4, updated_ms = ?5 WHERE id = ?1",
            params![id, state.as_str(), reason, i64::from(current_wave), now_ms],
        )?;
        Ok(())
    }

    pub fn targets(&self, rollout_id: &str) -> Result<Vec<TargetRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {TARGET_COLUMNS} FROM rollout_targets WHERE rollout_id = ?1 ORDER BY wave, agent_id"
        ))?;
        let raw = stmt
            .query_map(params![rollout_id], RawTarget::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawTarget::decode).collect()
    }

    /// One agent's target in a rollout (an install answer touches only its own row: loading
    /// every target per answer made a 10,000-agent rollout quadratic).
    pub fn target(
        &self,
        rollout_id: &str,
        agent_id: &str,
    ) -> Result<Option<TargetRow>, StoreError> {
        let mut conn = self.conn()?;
        let raw = conn
            .query_row(
                &format!(
                    "SELECT {TARGET_COLUMNS} FROM rollout_targets WHERE rollout_id = ?1 AND agent_id = ?2"
                ),
                params![rollout_id, agent_id],
                RawTarget::read,
            )
            .optional()?;
        raw.map(RawTarget::decode).transpose()
    }

    /// Writes a target's state back.
    pub fn update_target(&self, t: &TargetRow) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE rollout_targets SET state = ?3, error = ?4, previous_version = ?5, health = ?6,
                 updated_ms = ?7, fetched_bytes = ?8, fetch_started_ms = ?9, fetch_finished_ms = ?10
             WHERE rollout_id = ?1 AND agent_id = ?2",
            params![
                t.rollout_id,
                t.agent_id,
                t.state.as_str(),
                t.error,
                t.previous_version,
                t.health,
                t.updated_ms,
                t.fetched_bytes as i64,
                t.fetch_started_ms,
                t.fetch_finished_ms
            ],
        )?;
        Ok(())
    }

    /// Starts wave `wave` of a rollout, in one transaction: its waiting targets become
    /// `installing` (stamped `now_ms`) and their agents may fetch `files`. The agents moved, in
    /// order. (Two statements and one INSERT per 256 grants, whatever the wave's size.)
    pub fn start_wave(
        &self,
        rollout_id: &str,
        wave: u32,
        files: &[String],
        now_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let mut moved: Vec<String> = tx.query_map(
            "UPDATE rollout_targets SET state = 'installing', updated_ms = ?3
             WHERE rollout_id = ?1 AND wave = ?2 AND state = 'waiting' RETURNING agent_id",
            params![rollout_id, i64::from(wave), now_ms],
            |r| r.get(0),
        )?;
        moved.sort();
        let grants: Vec<&dyn super::db::Param> = moved
            .iter()
            .flat_map(|agent| {
                files
                    .iter()
                    .map(move |sha| [agent as &dyn super::db::Param, sha])
            })
            .flatten()
            .collect();
        tx.insert_rows(
            "INSERT INTO agent_artifacts (agent_id, sha256)",
            "(?, ?)",
            "ON CONFLICT DO NOTHING",
            &grants,
        )?;
        tx.commit()?;
        Ok(moved)
    }

    /// Completes wave `wave` of a rollout: its installed and gating targets become `done`
    /// (stamped `now_ms`), in one statement. How many.
    pub fn complete_wave(
        &self,
        rollout_id: &str,
        wave: u32,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        Ok(self.conn()?.execute(
            "UPDATE rollout_targets SET state = 'done', updated_ms = ?3
             WHERE rollout_id = ?1 AND wave = ?2 AND state IN ('installed', 'gating')",
            params![rollout_id, i64::from(wave), now_ms],
        )?)
    }

    /// Targets of this agent waiting on a command (install or rollback), with their rollouts.
    pub fn commands_for_agent(
        &self,
        agent_id: &str,
    ) -> Result<Vec<(RolloutRow, TargetRow)>, StoreError> {
        Ok(self
            .commands_for_agents(&[agent_id.to_string()])?
            .remove(agent_id)
            .unwrap_or_default())
    }

    /// [`Store::commands_for_agent`] for several agents in one query, by agent (an agent with
    /// none is left out).
    pub fn commands_for_agents(
        &self,
        agent_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<(RolloutRow, TargetRow)>>, StoreError> {
        let list = super::db::json_list(agent_ids);
        let raw = {
            let mut conn = self.conn()?;
            let mut stmt = conn.prepare(&format!(
                "SELECT {TARGET_COLUMNS} FROM {} JOIN rollout_targets t ON t.agent_id = ids.id
                 WHERE t.state IN ('installing', 'rolling_back')",
                self.backend().json_ids(1)
            ))?;
            let rows = stmt.query_map(params![list], RawTarget::read)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        let mut rollouts = std::collections::HashMap::new();
        let mut out: std::collections::HashMap<String, Vec<_>> = Default::default();
        for t in raw {
            let t = t.decode()?;
            if !rollouts.contains_key(&t.rollout_id) {
                let rollout = self.rollout(&t.rollout_id)?;
                rollouts.insert(t.rollout_id.clone(), rollout);
            }
            if let Some(r) = &rollouts[&t.rollout_id] {
                out.entry(t.agent_id.clone())
                    .or_default()
                    .push((r.clone(), t));
            }
        }
        Ok(out)
    }

    /// Records that a wave's gate benchmark runs as `run_id` (no verdicts yet).
    pub fn insert_gate(&self, rollout_id: &str, wave: u32, run_id: &str) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO rollout_gates (rollout_id, wave, run_id, verdicts) VALUES (?1, ?2, ?3, '')",
            params![rollout_id, i64::from(wave), run_id],
        )?;
        Ok(())
    }

    pub fn gates(&self, rollout_id: &str) -> Result<Vec<GateRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT rollout_id, wave, run_id, verdicts FROM rollout_gates WHERE rollout_id = ?1 ORDER BY wave",
        )?;
        let raw = stmt
            .query_map(params![rollout_id], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<u32>(1)?,
                    r.get::<String>(2)?,
                    r.get::<String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(rollout_id, wave, run_id, verdicts)| {
                let verdicts = match verdicts.as_str() {
                    "" => None,
                    text => Some(decode_json(
                        text,
                        "rollout_gates",
                        format!("{rollout_id}, wave {}", wave + 1),
                    )?),
                };
                Ok(GateRow {
                    rollout_id,
                    wave,
                    run_id,
                    verdicts,
                })
            })
            .collect()
    }

    pub fn set_gate_verdicts(
        &self,
        rollout_id: &str,
        wave: u32,
        verdicts: &[AgentVerdict],
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE rollout_gates SET verdicts = ?3 WHERE rollout_id = ?1 AND wave = ?2",
            params![
                rollout_id,
                i64::from(wave),
                serde_json::to_string(verdicts).expect("verdicts serialize")
            ],
        )?;
        Ok(())
    }

    pub fn log_event(
        &self,
        rollout_id: Option<&str>,
        agent_id: Option<&str>,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO events (at_ms, rollout_id, agent_id, message) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms, rollout_id, agent_id, message],
        )?;
        Ok(())
    }

    /// A rollout's events, oldest first.
    pub fn events(&self, rollout_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT at_ms, agent_id, message FROM events WHERE rollout_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![rollout_id], |r| {
            Ok(EventRow {
                at_ms: r.get(0)?,
                agent_id: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
