//! Admin tokens: made (printed once, stored as a hash), listed (never their secrets) and
//! revoked by name.

use edgefleet_proto::v1::{
    AdminTokenInfo, AdminTokenReply, CreateAdminTokenRequest, ListAdminTokensReply,
};
use tonic::Status;

use crate::clock::now_ms;
use crate::server::Controller;
use crate::store::AdminTokenRow;
use crate::trust::tokens::{new_admin_token, Role};

fn info(row: AdminTokenRow) -> AdminTokenInfo {
    AdminTokenInfo {
        name: row.name,
        role: row.role.to_string(),
        created_unix_ms: row.created_ms,
        revoked_unix_ms: row.revoked_ms,
    }
}

pub(super) fn create(
    ctl: &Controller,
    req: CreateAdminTokenRequest,
) -> Result<AdminTokenReply, Status> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "an admin token needs a name of 1 to 64 printable characters",
        ));
    }
    let role: Role = req.role.parse().map_err(|()| {
        Status::invalid_argument(format!("unknown role `{}` (viewer, operator)", req.role))
    })?;
    let (token, hash) = new_admin_token();
    let now = now_ms();
    ctl.store.insert_admin_token(name, role, &hash, now)?;
    tracing::info!(token = %name, %role, "admin token created");
    Ok(AdminTokenReply {
        token,
        info: Some(info(AdminTokenRow {
            name: name.to_string(),
            role,
            created_ms: now,
            revoked_ms: 0,
        })),
    })
}

pub(super) fn list(ctl: &Controller) -> Result<ListAdminTokensReply, Status> {
    Ok(ListAdminTokensReply {
        tokens: ctl.store.admin_tokens()?.into_iter().map(info).collect(),
    })
}

pub(super) fn revoke(ctl: &Controller, name: &str) -> Result<AdminTokenInfo, Status> {
    if !ctl.store.revoke_admin_token(name, now_ms())? {
        return Err(Status::not_found(format!(
            "no valid admin token named {name}; `edgefleet admin tokens ls` lists them"
        )));
    }
    tracing::warn!(token = %name, "admin token revoked");
    ctl.store
        .admin_tokens()?
        .into_iter()
        .find(|t| t.name == name)
        .map(info)
        .ok_or_else(|| Status::internal("the revoked token vanished"))
}
