//! An agent's identity, read from the client certificate the TLS handshake verified: the id in
//! its `urn:edgefleet:agent:<id>` SAN. Never from a field the agent sends.

use x509_parser::extensions::GeneralName;

use super::authority::AGENT_URI_PREFIX;

/// Why a peer certificate names no agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the client certificate does not parse")]
    Unparsable,
    #[error("the client certificate names no edgefleet agent")]
    NotAnAgent,
}

/// The agent id in a certificate (DER).
pub fn agent_id_of(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?
        .ok_or(IdentityError::NotAnAgent)?;
    sans.value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(AGENT_URI_PREFIX),
            _ => None,
        })
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or(IdentityError::NotAnAgent)
}
