//! Rollout state in SQLite: rollouts, their targets (one per agent), gate runs and verdicts, what
//! each agent has installed, and the event log. Everything a controller restart needs to resume.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRow {
    pub id: String,
    pub model_name: String,
    pub model_version: String,
    pub selector: String,
    pub waves: String,
    pub success: String,
    pub abort_after: String,
    pub gate: String,
    /// The gate's workload from a suite (an encoded `edgefleet.v1.Workload`); empty: the
    /// built-in text workload.
    pub gate_workload: Vec<u8>,
    pub health_check: String,
    /// running | paused | succeeded | aborted | rolled_back
    pub state: String,
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
    /// See [`crate::rollout::state`].
    pub state: String,
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

/// A wave's gate benchmark and, once decided, its verdicts (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct GateRow {
    pub rollout_id: String,
    pub wave: u32,
    pub run_id: String,
    pub verdicts: String,
}

/// What an agent reported installed.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentModelRow {
    pub agent_id: String,
    pub name: String,
    pub active_version: String,
    pub versions: Vec<String>,
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub at_ms: i64,
    pub agent_id: Option<String>,
    pub message: String,
}

const ROLLOUT_COLUMNS: &str = "id, model_name, model_version, selector, waves, success, abort_after, gate, health_check, state, reason, current_wave, created_ms, updated_ms, gate_workload";

fn rollout_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RolloutRow> {
    Ok(RolloutRow {
        id: r.get(0)?,
        model_name: r.get(1)?,
        model_version: r.get(2)?,
        selector: r.get(3)?,
        waves: r.get(4)?,
        success: r.get(5)?,
        abort_after: r.get(6)?,
        gate: r.get(7)?,
        health_check: r.get(8)?,
        state: r.get(9)?,
        reason: r.get(10)?,
        current_wave: r.get(11)?,
        created_ms: r.get(12)?,
        updated_ms: r.get(13)?,
        gate_workload: r.get(14)?,
    })
}

fn target_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TargetRow> {
    Ok(TargetRow {
        rollout_id: r.get(0)?,
        agent_id: r.get(1)?,
        wave: r.get(2)?,
        state: r.get(3)?,
        error: r.get(4)?,
        previous_version: r.get(5)?,
        health: r.get(6)?,
        updated_ms: r.get(7)?,
        fetched_bytes: r.get::<_, i64>(8)? as u64,
        fetch_started_ms: r.get(9)?,
        fetch_finished_ms: r.get(10)?,
    })
}

impl Store {
    /// Creates a rollout and its targets in one transaction.
    pub fn insert_rollout(
        &self,
        rollout: &RolloutRow,
        targets: &[TargetRow],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO rollouts ({ROLLOUT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
            params![
                rollout.id,
                rollout.model_name,
                rollout.model_version,
                rollout.selector,
                rollout.waves,
                rollout.success,
                rollout.abort_after,
                rollout.gate,
                rollout.health_check,
                rollout.state,
                rollout.reason,
                rollout.current_wave,
                rollout.created_ms,
                rollout.updated_ms,
                rollout.gate_workload
            ],
        )?;
        for t in targets {
            insert_target(&tx, t)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every rollout, newest first.
    pub fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_ms DESC, id"
        ))?;
        let rows = stmt.query_map([], rollout_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn rollout(&self, id: &str) -> Result<Option<RolloutRow>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?1"),
                params![id],
                rollout_from_row,
            )
            .optional()?)
    }

    /// Sets a rollout's state, reason and current wave.
    pub fn update_rollout(
        &self,
        id: &str,
        state: &str,
        reason: &str,
        current_wave: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE rollouts SET state = ?2, reason = ?3, current_wave = ?4, updated_ms = ?5 WHERE id = ?1",
            params![id, state, reason, current_wave, now_ms],
        )?;
        Ok(())
    }

    pub fn targets(&self, rollout_id: &str) -> Result<Vec<TargetRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT rollout_id, agent_id, wave, state, error, previous_version, health, updated_ms,
                    fetched_bytes, fetch_started_ms, fetch_finished_ms
             FROM rollout_targets WHERE rollout_id = ?1 ORDER BY wave, agent_id",
        )?;
        let rows = stmt.query_map(params![rollout_id], target_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes a target's state back.
    pub fn update_target(&self, t: &TargetRow) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE rollout_targets SET state = ?3, error = ?4, previous_version = ?5, health = ?6,
                 updated_ms = ?7, fetched_bytes = ?8, fetch_started_ms = ?9, fetch_finished_ms = ?10
             WHERE rollout_id = ?1 AND agent_id = ?2",
            params![
                t.rollout_id,
                t.agent_id,
                t.state,
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

    /// Targets of this agent waiting on a command (install or rollback), with their rollouts.
    pub fn commands_for_agent(
        &self,
        agent_id: &str,
    ) -> Result<Vec<(RolloutRow, TargetRow)>, StoreError> {
        let targets: Vec<TargetRow> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT rollout_id, agent_id, wave, state, error, previous_version, health, updated_ms,
                    fetched_bytes, fetch_started_ms, fetch_finished_ms
                 FROM rollout_targets WHERE agent_id = ?1 AND state IN ('installing', 'rolling_back')",
            )?;
            let rows = stmt.query_map(params![agent_id], target_from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for t in targets {
            if let Some(r) = self.rollout(&t.rollout_id)? {
                out.push((r, t));
            }
        }
        Ok(out)
    }

    pub fn insert_gate(&self, gate: &GateRow) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO rollout_gates (rollout_id, wave, run_id, verdicts) VALUES (?1, ?2, ?3, ?4)",
            params![gate.rollout_id, gate.wave, gate.run_id, gate.verdicts],
        )?;
        Ok(())
    }

    pub fn gates(&self, rollout_id: &str) -> Result<Vec<GateRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT rollout_id, wave, run_id, verdicts FROM rollout_gates WHERE rollout_id = ?1 ORDER BY wave",
        )?;
        let rows = stmt.query_map(params![rollout_id], |r| {
            Ok(GateRow {
                rollout_id: r.get(0)?,
                wave: r.get(1)?,
                run_id: r.get(2)?,
                verdicts: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_gate_verdicts(
        &self,
        rollout_id: &str,
        wave: u32,
        verdicts: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE rollout_gates SET verdicts = ?3 WHERE rollout_id = ?1 AND wave = ?2",
            params![rollout_id, wave, verdicts],
        )?;
        Ok(())
    }

    /// Replaces what an agent has installed (from its hello), or one model of it (`only`).
    pub fn record_installed(
        &self,
        agent_id: &str,
        models: &[AgentModelRow],
        only: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        match only {
            Some(name) => tx.execute(
                "DELETE FROM agent_models WHERE agent_id = ?1 AND name = ?2",
                params![agent_id, name],
            )?,
            None => tx.execute(
                "DELETE FROM agent_models WHERE agent_id = ?1",
                params![agent_id],
            )?,
        };
        for m in models {
            tx.execute(
                "INSERT INTO agent_models (agent_id, name, active_version, versions, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    agent_id,
                    m.name,
                    m.active_version,
                    serde_json::to_string(&m.versions).expect("versions serialize"),
                    now_ms
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// What every agent has installed.
    pub fn installed(&self) -> Result<Vec<AgentModelRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT agent_id, name, active_version, versions FROM agent_models ORDER BY agent_id, name",
        )?;
        let rows = stmt.query_map([], |r| {
            let versions: String = r.get(3)?;
            Ok(AgentModelRow {
                agent_id: r.get(0)?,
                name: r.get(1)?,
                active_version: r.get(2)?,
                versions: serde_json::from_str(&versions).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn log_event(
        &self,
        rollout_id: Option<&str>,
        agent_id: Option<&str>,
        message: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO events (at_ms, rollout_id, agent_id, message) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms, rollout_id, agent_id, message],
        )?;
        Ok(())
    }

    /// A rollout's events, oldest first.
    pub fn events(&self, rollout_id: &str) -> Result<Vec<EventRow>, StoreError> {
        let conn = self.conn();
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

    /// Stores a model's signed manifest.
    pub fn set_manifest(
        &self,
        name: &str,
        version: &str,
        manifest: &[u8],
        signature: &[u8],
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE models SET manifest = ?3, manifest_signature = ?4 WHERE name = ?1 AND version = ?2",
            params![name, version, manifest, signature],
        )?;
        Ok(())
    }

    /// Deletes a model version; returns the digests of artifacts no other version uses (their
    /// rows are gone too, so the caller deletes the bytes).
    pub fn delete_model(&self, name: &str, version: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let shas: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT sha256 FROM model_files WHERE name = ?1 AND version = ?2")?;
            let rows = stmt.query_map(params![name, version], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "DELETE FROM model_files WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        tx.execute(
            "DELETE FROM models WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        let mut orphaned = Vec::new();
        for sha in shas {
            let used: bool = tx
                .query_row(
                    "SELECT 1 FROM model_files WHERE sha256 = ?1 LIMIT 1",
                    params![sha],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !used && !orphaned.contains(&sha) {
                tx.execute("DELETE FROM artifacts WHERE sha256 = ?1", params![sha])?;
                orphaned.push(sha);
            }
        }
        tx.commit()?;
        Ok(orphaned)
    }
}

fn insert_target(tx: &rusqlite::Transaction<'_>, t: &TargetRow) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO rollout_targets (rollout_id, agent_id, wave, state, error, previous_version, health, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            t.rollout_id,
            t.agent_id,
            t.wave,
            t.state,
            t.error,
            t.previous_version,
            t.health,
            t.updated_ms
        ],
    )
}
