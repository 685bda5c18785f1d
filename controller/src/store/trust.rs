//! Trust in SQLite: enrollment tokens (redeemed once, in the same transaction that creates the
//! agent), admin tokens, revoked and removed agents, and the artifacts sent to each agent (the
//! only ones it may fetch). Tokens are kept as hashes only.

use std::collections::BTreeMap;

use super::db::{params, OptionalExtension};

use super::{decode_json, decode_state, Store, StoreError};
use crate::trust::tokens::Role;

/// Why an enrollment token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("the enrollment token is not known to this controller")]
    Unknown,
    #[error(
        "the enrollment token was used already; ask for a new one with `edgefleet agents enroll`"
    )]
    Used,
    #[error("the enrollment token expired; ask for a new one with `edgefleet agents enroll`")]
    Expired,
    #[error("the enrollment token is for an agent named {bound}, not {asked}")]
    WrongName { bound: String, asked: String },
}

/// An agent that just enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// An agent's standing: its name, whether it was revoked, and the certificate it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTrust {
    pub name: String,
    pub revoked_ms: i64,
    /// 0 for a certificate issued before the controller kept it.
    pub cert_not_after_ms: i64,
    /// SHA-256 of the public key of the certificate it was last given (empty: issued before
    /// the controller kept it), and of the key before that one.
    pub key_sha256: String,
    pub previous_key_sha256: String,
}

/// An admin token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenRow {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub revoked_ms: i64,
}

impl Store {
    /// Stores a new enrollment token's hash, with the name and labels it binds.
    pub fn insert_enrollment_token(
        &self,
        hash: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO enrollment_tokens (hash, name, labels, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                hash,
                name,
                serde_json::to_string(labels).expect("labels serialize"),
                created_ms,
                expires_ms
            ],
        )?;
        Ok(())
    }

    /// Redeems a token and creates the agent `agent_id`, in one transaction: a token is used at
    /// most once, and a refused one changes nothing. The token's name and labels win over what
    /// the device asked for; a device that asked for a name other than the token's is refused,
    /// unless that name is only its hostname (`name_is_hostname`).
    pub fn enroll_agent(
        &self,
        hash: &str,
        agent_id: &str,
        asked_name: &str,
        name_is_hostname: bool,
        asked_labels: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Result<Enrolled, EnrollRefusal>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let row: Option<(String, String, i64, i64)> = tx
            .query_row(
                "SELECT name, labels, expires_ms, used_ms FROM enrollment_tokens WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((bound_name, labels, expires_ms, used_ms)) = row else {
            return Ok(Err(EnrollRefusal::Unknown));
        };
        if used_ms != 0 {
            return Ok(Err(EnrollRefusal::Used));
        }
        if now_ms >= expires_ms {
            return Ok(Err(EnrollRefusal::Expired));
        }
        let asked = asked_name.trim();
        if !bound_name.is_empty() && !name_is_hostname && !asked.is_empty() && asked != bound_name {
            return Ok(Err(EnrollRefusal::WrongName {
                bound: bound_name,
                asked: asked.to_string(),
            }));
        }
        let name = if bound_name.is_empty() {
            asked.to_string()
        } else {
            bound_name
        };
        let mut all_labels = asked_labels.clone();
        let bound_labels: BTreeMap<String, String> =
            decode_json(&labels, "enrollment_tokens", "token")?;
        all_labels.extend(bound_labels);
        // Used only if still unused when written: two enrollments racing with one token (on
        // PostgreSQL, which does not serialize them as SQLite's one connection does) cannot
        // both pass the check above; the second finds the token used.
        let claimed = tx.execute(
            "UPDATE enrollment_tokens SET used_ms = ?2, used_by = ?3 WHERE hash = ?1 AND used_ms = 0",
            params![hash, now_ms, agent_id],
        )?;
        if claimed == 0 {
            return Ok(Err(EnrollRefusal::Used));
        }
        tx.execute(
            "INSERT INTO agents (id, name, labels, agent_version, hardware, first_seen_ms,
                 last_seen_ms, enrolled_ms)
             VALUES (?1, ?2, ?3, '', ?5, ?4, ?4, ?4)",
            params![
                agent_id,
                name,
                serde_json::to_string(&all_labels).expect("labels serialize"),
                now_ms,
                Vec::<u8>::new()
            ],
        )?;
        tx.commit()?;
        Ok(Ok(Enrolled {
            name,
            labels: all_labels,
        }))
    }

    /// Whether an agent may use the link: `None` for an agent this controller does not know (or
    /// removed), `Some(revoked_ms)` otherwise (0: not revoked).
    pub fn agent_revoked_ms(&self, agent_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT revoked_ms FROM agents WHERE id = ?1 AND removed_ms = 0",
                params![agent_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// What the controller knows of an agent's trust: `None` for one it does not know (or
    /// removed).
    pub fn agent_trust(&self, agent_id: &str) -> Result<Option<AgentTrust>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT name, revoked_ms, cert_not_after_ms, cert_key_sha256,
                        cert_previous_key_sha256
                 FROM agents WHERE id = ?1 AND removed_ms = 0",
                params![agent_id],
                |r| {
                    Ok(AgentTrust {
                        name: r.get(0)?,
                        revoked_ms: r.get(1)?,
                        cert_not_after_ms: r.get(2)?,
                        key_sha256: r.get(3)?,
                        previous_key_sha256: r.get(4)?,
                    })
                },
            )
            .optional()?)
    }

    /// Records the certificate just issued to an agent (at enrollment, renewal or recovery):
    /// its expiry, and its key, the key before it kept as the previous one when the key changed.
    pub fn record_certificate(
        &self,
        agent_id: &str,
        key_sha256: &str,
        not_after_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE agents SET
                 cert_previous_key_sha256 = CASE WHEN cert_key_sha256 = ?2
                     THEN cert_previous_key_sha256 ELSE cert_key_sha256 END,
                 cert_key_sha256 = ?2,
                 cert_not_after_ms = ?3
             WHERE id = ?1",
            params![agent_id, key_sha256, not_after_ms],
        )?;
        Ok(())
    }

    /// When the certificate each agent holds now expires (agents whose certificate the
    /// controller has not kept are left out).
    pub fn agent_certificates(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id, cert_not_after_ms FROM agents WHERE cert_not_after_ms != 0")?;
        let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When each revoked agent was cut off.
    pub fn revoked_agents(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id, revoked_ms FROM agents WHERE revoked_ms != 0")?;
        let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Cuts an agent off (once; the first time stays recorded).
    pub fn revoke_agent(&self, agent_id: &str, now_ms: i64) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE agents SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms = 0",
            params![agent_id, now_ms],
        )?;
        Ok(())
    }

    /// Forgets an agent: revoked, gone from listings; its results stay in the history.
    pub fn remove_agent(&self, agent_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute(
            "UPDATE agents SET revoked_ms = CASE revoked_ms WHEN 0 THEN ?2 ELSE revoked_ms END,
                 removed_ms = ?2 WHERE id = ?1",
            params![agent_id, now_ms],
        )?;
        tx.execute(
            "DELETE FROM agent_models WHERE agent_id = ?1",
            params![agent_id],
        )?;
        tx.execute(
            "DELETE FROM agent_artifacts WHERE agent_id = ?1",
            params![agent_id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records that these artifacts were sent to the agent (it may fetch them).
    pub fn allow_fetch(&self, agent_id: &str, shas: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        for sha in shas {
            tx.execute(
                "INSERT INTO agent_artifacts (agent_id, sha256) VALUES (?1, ?2)
                 ON CONFLICT DO NOTHING",
                params![agent_id, sha],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether the controller sent this artifact to the agent.
    pub fn may_fetch(&self, agent_id: &str, sha256: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT 1 FROM agent_artifacts WHERE agent_id = ?1 AND sha256 = ?2",
                params![agent_id, sha256],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false))
    }

    pub fn insert_admin_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM admin_tokens WHERE name = ?1",
                params![name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::AdminTokenExists(name.to_string()));
        }
        // A token of that name made meanwhile (another controller): refused the same way.
        let inserted = tx.execute(
            "INSERT INTO admin_tokens (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![name, role.as_str(), hash, now_ms],
        )?;
        if inserted == 0 {
            return Err(StoreError::AdminTokenExists(name.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// The valid (not revoked) admin token with this hash, as (name, role).
    pub fn admin_token(&self, hash: &str) -> Result<Option<(String, Role)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn()?
            .query_row(
                "SELECT name, role FROM admin_tokens WHERE hash = ?1 AND revoked_ms = 0",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(name, role)| {
            let role = decode_state(&role, "admin_tokens", &name)?;
            Ok((name, role))
        })
        .transpose()
    }

    pub fn admin_tokens(&self) -> Result<Vec<AdminTokenRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT name, role, created_ms, revoked_ms FROM admin_tokens ORDER BY created_ms, name",
        )?;
        let raw = stmt
            .query_map(params![], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<i64>(2)?,
                    r.get::<i64>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(name, role, created_ms, revoked_ms)| {
                Ok(AdminTokenRow {
                    role: decode_state(&role, "admin_tokens", &name)?,
                    name,
                    created_ms,
                    revoked_ms,
                })
            })
            .collect()
    }

    /// Revokes an admin token by name; false when there is no such valid token.
    pub fn revoke_admin_token(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let changed = self.conn()?.execute(
            "UPDATE admin_tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms = 0",
            params![name, now_ms],
        )?;
        Ok(changed == 1)
    }
}
