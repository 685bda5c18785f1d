//! Who may call the admin service: every call carries an admin token (`authorization: Bearer
//! TOKEN`), looked up by its hash; a viewer token may only read. An agent's certificate never
//! opens the admin service, whatever else the call carries.

use edgefleet_proto::tokens::{secret_hash, AdminToken};
use tonic::{Request, Status};

use crate::server::Controller;
use crate::trust::identity;
use crate::trust::tokens::Role;

/// A call made in-process by the web console for a signed-in user: it carries the SHA-256 of
/// the token the user signed in with (the console keeps no token), and is authorized here
/// exactly as a call that presents that token. A request extension: a remote call cannot set it.
#[derive(Debug, Clone)]
pub struct ConsoleCaller {
    pub token_hash: String,
}

/// Checks the call's admin token against the role the call needs (`doing` names the call in a
/// refusal).
pub(super) fn authorize<T>(
    ctl: &Controller,
    request: &Request<T>,
    need: Role,
    doing: &str,
) -> Result<(), Status> {
    if let Some(caller) = request.extensions().get::<ConsoleCaller>() {
        return authorize_hash(ctl, &caller.token_hash, need, doing, || {});
    }
    let presents_agent_certificate = request.peer_certs().is_some_and(|certs| {
        certs
            .first()
            .is_some_and(|c| identity::agent_id_of(c).is_ok())
    });
    if presents_agent_certificate {
        return Err(Status::permission_denied(
            "an agent's certificate cannot call the admin API; use an admin token",
        ));
    }
    let header = request.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "the admin API needs an admin token: pass --credentials FILE or set EDGEFLEET_CREDENTIALS (serve writes DATA/credentials.json)",
        )
    })?;
    let text = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("the authorization header is not `Bearer TOKEN`"))?;
    let token = AdminToken::parse(text).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let hash = secret_hash(&token.secret);
    // A valid token: the connection is no longer held to the unauthenticated deadline.
    authorize_hash(ctl, &hash, need, doing, || {
        ctl.admission.authenticated(request.remote_addr())
    })
}

/// The token whose secret hashes to `hash` against the role the call needs; `valid` runs once
/// the token is found valid, whatever its role.
fn authorize_hash(
    ctl: &Controller,
    hash: &str,
    need: Role,
    doing: &str,
    valid: impl FnOnce(),
) -> Result<(), Status> {
    let (name, role) = ctl.store.admin_token(hash)?.ok_or_else(|| {
        Status::unauthenticated(
            "the admin token is not valid on this controller (revoked, or made by another one)",
        )
    })?;
    valid();
    if need == Role::Operator && role == Role::Viewer {
        tracing::warn!(token = %name, %doing, "refused a viewer token");
        return Err(Status::permission_denied(format!(
            "admin token {name} is a viewer token: it cannot {doing} (an operator token can)"
        )));
    }
    Ok(())
}
