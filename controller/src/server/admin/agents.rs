//! Agent calls: the fleet listing, one-time enrollment tokens for new devices, and revoking or
//! forgetting an agent (its stream closed at once, every later call refused).

use std::collections::BTreeMap;
use std::time::Duration;

use edgefleet_proto::v1::{
    AgentInfo, ControllerInfo, CreateEnrollmentTokenRequest, EnrollmentTokenReply, ListAgentsReply,
    ListControllersReply, RemoveAgentReply,
};
use tonic::Status;

use crate::clock::now_ms;
use crate::planning::target_key;
use crate::server::Controller;
use crate::store::AgentRow;
use crate::trust::tokens::new_enrollment_token;

/// An enrollment token's lifetime unless asked otherwise.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest an enrollment token may live: a year (a longer one is a mistake, and a huge
/// one would overflow its expiry time).
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);

pub(super) fn list(ctl: &Controller) -> Result<ListAgentsReply, Status> {
    let revoked = ctl.store.revoked_agents()?;
    let certificates = ctl.store.agent_certificates()?;
    let window = match &ctl.settings.security {
        crate::server::Security::Tls {
            recovery_window, ..
        } => recovery_window.as_millis() as i64,
        crate::server::Security::Insecure { .. } => 0,
    };
    let online = ctl.online_ids();
    let agents = ctl
        .store
        .agents()?
        .into_iter()
        .map(|a| {
            let revoked_ms = revoked.get(&a.id).copied().unwrap_or(0);
            let not_after_ms = certificates.get(&a.id).copied().unwrap_or(0);
            let mut info = agent_info(&online, a, revoked_ms);
            info.cert_not_after_unix_ms = not_after_ms;
            if not_after_ms != 0 {
                info.recoverable_until_unix_ms = not_after_ms.saturating_add(window);
            }
            info
        })
        .collect();
    Ok(ListAgentsReply { agents })
}

/// `controllers`: the replicas heard from lately, or this controller alone (SQLite).
pub(super) fn controllers(ctl: &Controller) -> Result<ListControllersReply, Status> {
    let Some(replica) = &ctl.replica else {
        return Ok(ListControllersReply {
            controllers: vec![ControllerInfo {
                id: "this controller".into(),
                address: String::new(),
                started_unix_ms: 0,
                heard_ago_ms: 0,
                agents: ctl.fleet.len() as u64,
                leader: true,
            }],
            answered_by: String::new(),
        });
    };
    let within = crate::server::replicas::ALIVE_WITHIN.as_millis() as i64 * 6;
    let controllers = ctl
        .store
        .replicas(within)?
        .into_iter()
        .map(|r| ControllerInfo {
            id: r.id,
            address: r.address,
            started_unix_ms: r.started_ms,
            heard_ago_ms: r.heard_ago_ms,
            agents: r.agents,
            leader: r.leader,
        })
        .collect();
    Ok(ListControllersReply {
        controllers,
        answered_by: replica.id().to_string(),
    })
}

/// An agent as the CLI lists it.
fn agent_info(
    online: &std::collections::HashSet<String>,
    a: AgentRow,
    revoked_ms: i64,
) -> AgentInfo {
    AgentInfo {
        online: online.contains(&a.id),
        target: target_key(&a.hardware),
        revoked_unix_ms: revoked_ms,
        agent_id: a.id,
        name: a.name,
        labels: a.labels.into_iter().collect(),
        agent_version: a.agent_version,
        hardware: Some(a.hardware),
        last_seen_unix_ms: a.last_seen_ms,
        first_seen_unix_ms: a.first_seen_ms,
        cert_not_after_unix_ms: 0,
        recoverable_until_unix_ms: 0,
    }
}

/// `agents enroll`: a one-time token, stored as a hash, pinning this controller's CA.
pub(super) fn enrollment_token(
    ctl: &Controller,
    req: CreateEnrollmentTokenRequest,
) -> Result<EnrollmentTokenReply, Status> {
    let authority = ctl.authority.as_ref().ok_or_else(|| {
        Status::failed_precondition(
            "this controller runs --insecure: its agents use the shared token given to serve",
        )
    })?;
    let name = req.name.trim().to_string();
    let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
    let ttl = match req.ttl_s {
        0 => DEFAULT_TOKEN_TTL,
        s if s > MAX_TOKEN_TTL.as_secs() => {
            return Err(Status::invalid_argument(format!(
                "an enrollment token lives at most {} days; {s} s is longer",
                MAX_TOKEN_TTL.as_secs() / 86_400
            )))
        }
        s => Duration::from_secs(s),
    };
    let (token, hash) = new_enrollment_token(authority.ca_sha256());
    let now = now_ms();
    let expires = now + ttl.as_millis() as i64;
    ctl.store
        .insert_enrollment_token(&hash, &name, &labels, now, expires)?;
    tracing::info!(name = %name, ttl_s = ttl.as_secs(), "enrollment token created");
    Ok(EnrollmentTokenReply {
        token,
        name,
        labels: labels.into_iter().collect(),
        expires_unix_ms: expires,
        ca_sha256: authority.ca_sha256().to_string(),
    })
}

/// The agent a name (or id) means, or NOT_FOUND.
fn find(ctl: &Controller, agent: &str) -> Result<AgentRow, Status> {
    let agents = ctl.store.agents()?;
    let mut named = agents.iter().filter(|a| a.name == agent || a.id == agent);
    match (named.next(), named.next()) {
        (Some(a), None) => Ok(a.clone()),
        (Some(_), Some(_)) => Err(Status::failed_precondition(format!(
            "several agents are named {agent}; name one by its id (edgefleet agents --json)"
        ))),
        (None, _) => Err(Status::not_found(format!(
            "no agent {agent}; `edgefleet agents` lists them"
        ))),
    }
}

/// `agents revoke NAME`: refused from now on, its stream closed now.
pub(super) fn revoke(ctl: &Controller, agent: &str) -> Result<AgentInfo, Status> {
    let row = find(ctl, agent)?;
    let now = now_ms();
    ctl.store.revoke_agent(&row.id, now)?;
    ctl.fleet.close(&row.id);
    // With replicas, the one holding its stream closes it.
    ctl.wake_agents(std::slice::from_ref(&row.id));
    tracing::warn!(agent = %row.name, agent_id = %row.id, "agent revoked");
    // Revoked once: a second revoke keeps the first time.
    let revoked_ms = ctl
        .store
        .revoked_agents()?
        .get(&row.id)
        .copied()
        .unwrap_or(now);
    Ok(agent_info(&Default::default(), row, revoked_ms))
}

/// `agents rm NAME`: revoked and gone from listings (its results stay).
pub(super) fn remove(ctl: &Controller, agent: &str) -> Result<RemoveAgentReply, Status> {
    let row = find(ctl, agent)?;
    ctl.store.remove_agent(&row.id, now_ms())?;
    ctl.fleet.close(&row.id);
    ctl.wake_agents(std::slice::from_ref(&row.id));
    tracing::warn!(agent = %row.name, agent_id = %row.id, "agent removed");
    Ok(RemoveAgentReply { agent_id: row.id })
}
