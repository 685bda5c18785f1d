//! Agents as last seen (hello, heartbeats) and what each one reports installed.

use std::collections::BTreeMap;

use super::db::params;
use edgefleet_proto::v1::HardwareProfile;
use prost::Message;

use super::{decode_json, decode_proto, Store, StoreError};

/// An agent as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    pub hardware: HardwareProfile,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What an agent reported installed.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentModelRow {
    pub agent_id: String,
    pub name: String,
    pub active_version: String,
    pub versions: Vec<String>,
}

/// The columns [`RawAgent::read`] reads, in its order.
const AGENT_COLUMNS: &str =
    "id, name, labels, agent_version, hardware, first_seen_ms, last_seen_ms";

/// An agent's row as read ([`AGENT_COLUMNS`]), its labels and hardware not decoded yet
/// ([`RawAgent::decode`]).
struct RawAgent {
    id: String,
    name: String,
    labels: String,
    agent_version: String,
    hardware: Vec<u8>,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

impl RawAgent {
    fn read(r: &super::db::Row<'_>) -> super::db::Result<RawAgent> {
        Ok(RawAgent {
            id: r.get(0)?,
            name: r.get(1)?,
            labels: r.get(2)?,
            agent_version: r.get(3)?,
            hardware: r.get(4)?,
            first_seen_ms: r.get(5)?,
            last_seen_ms: r.get(6)?,
        })
    }

    fn decode(self) -> Result<AgentRow, StoreError> {
        Ok(AgentRow {
            labels: decode_json(&self.labels, "agents", &self.id)?,
            hardware: decode_proto(&self.hardware, "agents", &self.id)?,
            id: self.id,
            name: self.name,
            agent_version: self.agent_version,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
        })
    }
}

/// Agents per UPDATE of [`Store::touch_agents`] on PostgreSQL.
const TOUCH_CHUNK: usize = 500;

impl Store {
    /// Records an agent's hello: creates it, or updates what it says about itself.
    pub fn upsert_agent(
        &self,
        id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        agent_version: &str,
        hardware: &HardwareProfile,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO agents (id, name, labels, agent_version, hardware, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT(id) DO UPDATE SET name = ?2, labels = ?3, agent_version = ?4,
                 hardware = ?5, last_seen_ms = ?6",
            params![
                id,
                name,
                serde_json::to_string(labels).expect("labels serialize"),
                agent_version,
                hardware.encode_to_vec(),
                now_ms
            ],
        )?;
        Ok(())
    }

    pub fn touch_agent(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE agents SET last_seen_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// Records when each agent was last heard from, in one transaction.
    pub fn touch_agents(&self, seen: &[(String, i64)]) -> Result<(), StoreError> {
        let backend = self.backend();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        match backend {
            // In-process SQLite: one prepared UPDATE a row costs microseconds.
            super::Backend::Sqlite => {
                let mut update = tx.prepare(
                    "UPDATE agents SET last_seen_ms = CASE WHEN last_seen_ms > ?2 THEN last_seen_ms ELSE ?2 END WHERE id = ?1",
                )?;
                for (id, unix_ms) in seen {
                    update.execute(params![id, unix_ms])?;
                }
            }
            // PostgreSQL: a round trip a row made 2,000 heartbeats a second cost 104 ms of
            // every second (fleet_sim); one UPDATE ... FROM (VALUES ...) per 500 agents.
            super::Backend::Postgres => {
                for chunk in seen.chunks(TOUCH_CHUNK) {
                    let pairs: Vec<String> = (0..chunk.len())
                        .map(|i| format!("(?{}, ?{})", 2 * i + 1, 2 * i + 2))
                        .collect();
                    let sql = format!(
                        "UPDATE agents AS a SET last_seen_ms =
                             CASE WHEN a.last_seen_ms > v.ms THEN a.last_seen_ms ELSE v.ms END
                         FROM (VALUES {}) AS v(id, ms) WHERE a.id = v.id",
                        pairs.join(", ")
                    );
                    let values: Vec<&dyn super::db::Param> = chunk
                        .iter()
                        .flat_map(|(id, ms)| {
                            [id as &dyn super::db::Param, ms as &dyn super::db::Param]
                        })
                        .collect();
                    tx.execute(&sql, &values)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        self.select_agents(None, false)
    }

    /// Every agent ever enrolled, removed ones too: results keep the name and hardware of the
    /// agent that measured them after `agents rm`.
    pub fn agents_in_history(&self) -> Result<Vec<AgentRow>, StoreError> {
        self.select_agents(None, true)
    }

    /// Every agent not removed (or every one, `removed` too), or the one with this id.
    fn select_agents(
        &self,
        only: Option<&str>,
        removed: bool,
    ) -> Result<Vec<AgentRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents
             WHERE (?2 OR removed_ms = 0) AND (?1 IS NULL OR id = ?1) ORDER BY name, id"
        ))?;
        let raw = stmt
            .query_map(params![only, removed], RawAgent::read)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawAgent::decode).collect()
    }

    /// One page of the agents (not removed) that pass `keep`, in name order: the `limit` of
    /// them from `offset` on, and how many pass in all. Rows are read and decoded one at a
    /// time and only the page's are kept, so a page of a large fleet holds its own rows only
    /// (the console's Fleet page; every agent at once is megabytes at 10,000).
    pub fn agents_page(
        &self,
        keep: impl Fn(&AgentRow) -> bool,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AgentRow>, usize), StoreError> {
        let mut conn = self.conn()?;
        let (mut page, mut passed, mut undecoded) = (Vec::new(), 0usize, None);
        conn.query_map(
            &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE removed_ms = 0 ORDER BY name, id"),
            params![],
            |r| {
                if undecoded.is_some() {
                    return Ok(());
                }
                let agent = match RawAgent::read(r)?.decode() {
                    Ok(agent) => agent,
                    Err(e) => {
                        undecoded = Some(e);
                        return Ok(());
                    }
                };
                if keep(&agent) {
                    if passed >= offset && page.len() < limit {
                        page.push(agent);
                    }
                    passed += 1;
                }
                Ok(())
            },
        )?;
        match undecoded {
            Some(e) => Err(e),
            None => Ok((page, passed)),
        }
    }

    /// How many agents are enrolled (not removed).
    pub fn agent_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM agents WHERE removed_ms = 0",
            params![],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// How many agents (not removed) run each model version: (name, active version, agents).
    pub fn active_versions(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut conn = self.conn()?;
        Ok(conn.query_map(
            "SELECT m.name, m.active_version, count(*) FROM agent_models m
             JOIN agents a ON a.id = m.agent_id
             WHERE a.removed_ms = 0 AND m.active_version <> ''
             GROUP BY m.name, m.active_version ORDER BY m.name, m.active_version",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get::<i64>(2)?.max(0) as u64)),
        )?)
    }

    /// What the agents `ids` have installed (read a row at a time; the others' are skipped).
    pub fn installed_of(
        &self,
        ids: &std::collections::HashSet<&str>,
    ) -> Result<Vec<AgentModelRow>, StoreError> {
        self.installed_where(|agent_id| ids.contains(agent_id))
    }

    /// What the agents for which `keep` holds have installed, rows of the others skipped as
    /// they are read.
    fn installed_where(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<AgentModelRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut kept = Vec::new();
        conn.query_map(
            "SELECT agent_id, name, active_version, versions FROM agent_models
             ORDER BY agent_id, name",
            params![],
            |r| {
                let agent_id: String = r.get(0)?;
                if keep(&agent_id) {
                    kept.push((agent_id, r.get(1)?, r.get(2)?, r.get::<String>(3)?));
                }
                Ok(())
            },
        )?;
        kept.into_iter()
            .map(
                |(agent_id, name, active_version, versions): (String, String, String, String)| {
                    Ok(AgentModelRow {
                        versions: decode_json(
                            &versions,
                            "agent_models",
                            format!("{agent_id}, {name}"),
                        )?,
                        agent_id,
                        name,
                        active_version,
                    })
                },
            )
            .collect()
    }

    /// One agent (not removed).
    pub fn agent(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(self.select_agents(Some(id), false)?.pop())
    }

    /// Agent names by id, for showing ids to people.
    pub fn agent_names(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id, name FROM agents")?;
        let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces what an agent has installed (from its hello), or one model of it (`only`).
    pub fn record_installed(
        &self,
        agent_id: &str,
        models: &[AgentModelRow],
        only: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
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
        self.installed_where(|_| true)
    }
}
