//! The controller's certificate authority (ECDSA P-256, made at first start, `ca.pem` and
//! `ca.key` in the data folder), the server certificate it presents (made at every start for the
//! names given with `--san`), and the client certificates it issues to agents from their CSRs:
//! only the CSR's public key is used; subject, SAN `urn:edgefleet:agent:<id>`, client-auth usage
//! and lifetime are the controller's.

use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{read_text, write_private, TrustError};

/// The URI every agent certificate names its agent by.
pub const AGENT_URI_PREFIX: &str = "urn:edgefleet:agent:";

/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid (it is made again at every start).
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A certificate the controller issued to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub pem: String,
    pub not_after_ms: i64,
}

/// The CA and the server's TLS identity.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    ca_sha256: String,
    /// The server certificate followed by the CA's, so a client can find the CA in the chain.
    server_chain_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ca_sha256", &self.ca_sha256)
            .finish_non_exhaustive()
    }
}

fn after(from: OffsetDateTime, lifetime: Duration) -> OffsetDateTime {
    from + time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(365))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// The CA certificate's DER, from its PEM.
fn der_of(pem_text: &str) -> Option<Vec<u8>> {
    let block = pem_text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = block.chars().filter(|c| !c.is_whitespace()).collect();
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()
}

impl Authority {
    /// Loads the CA from `DIR/ca.pem` and `DIR/ca.key` (creating both on first start) and makes
    /// a server certificate for `names` (DNS names or IP addresses).
    pub fn load_or_create(data_dir: &Path, names: &[String]) -> Result<Authority, TrustError> {
        let cert_path = data_dir.join("ca.pem");
        let key_path = data_dir.join("ca.key");
        let (issuer, ca_pem) = if key_path.exists() {
            let unusable = |path: &Path, what, why: String| TrustError::Unusable {
                path: path.to_path_buf(),
                what,
                why,
            };
            let key = KeyPair::from_pem(&read_text(&key_path)?)
                .map_err(|e| unusable(&key_path, "CA key", e.to_string()))?;
            let ca_pem = read_text(&cert_path)?;
            let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)
                .map_err(|e| unusable(&cert_path, "CA certificate (PEM)", e.to_string()))?;
            (issuer, ca_pem)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "edgefleet controller CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = after(now, CA_LIFETIME);
            params.serial_number = Some(random_serial());
            let ca_pem = params.self_signed(&key)?.pem();
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&cert_path, ca_pem.as_bytes())?;
            tracing::info!(ca = %cert_path.display(), "created the controller's certificate authority");
            (Issuer::new(params, key), ca_pem)
        };
        let ca_der = der_of(&ca_pem).ok_or_else(|| TrustError::Unusable {
            path: cert_path.clone(),
            what: "CA certificate (PEM)",
            why: "no certificate block".into(),
        })?;
        let ca_sha256 = hex::encode(Sha256::digest(&ca_der));

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "edgefleet controller");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = after(now, SERVER_LIFETIME);
        params.serial_number = Some(random_serial());
        let server_pem = params.signed_by(&server_key, &issuer)?.pem();
        let server_chain_pem = format!("{server_pem}{ca_pem}");
        let server_key_pem = server_key.serialize_pem();
        write_private(&data_dir.join("server.pem"), server_chain_pem.as_bytes())?;
        write_private(&data_dir.join("server.key"), server_key_pem.as_bytes())?;
        Ok(Authority {
            issuer,
            ca_pem,
            ca_sha256,
            server_chain_pem,
            server_key_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// SHA-256 of the CA certificate's DER, hex: what enrollment tokens pin.
    pub fn ca_sha256(&self) -> &str {
        &self.ca_sha256
    }

    /// The server's certificate chain and key, PEM, for the TLS listener.
    pub fn server_identity(&self) -> (&str, &str) {
        (&self.server_chain_pem, &self.server_key_pem)
    }

    /// Issues an agent certificate for the public key of `csr_pem`, valid for `lifetime`.
    pub fn issue_agent(
        &self,
        csr_pem: &str,
        agent_id: &str,
        lifetime: Duration,
    ) -> Result<IssuedCertificate, IssueError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let uri = format!("{AGENT_URI_PREFIX}{agent_id}");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, &uri);
        params.subject_alt_names = vec![SanType::URI(
            uri.as_str().try_into().map_err(IssueError::Certificate)?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        let not_after = after(now, lifetime);
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(IssueError::Certificate)?;
        Ok(IssuedCertificate {
            pem: cert.pem(),
            not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }
}

/// Why an agent certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the certificate signing request is not usable: {0}")]
    BadCsr(String),
    #[error("cannot make the certificate: {0}")]
    Certificate(rcgen::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_issues_agent_certificates_from_a_csr_public_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = Authority::load_or_create(dir.path(), &names).unwrap();
        let again = Authority::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.ca_sha256(), again.ca_sha256(), "the CA is kept");
        use std::os::unix::fs::PermissionsExt;
        for file in ["ca.key", "ca.pem", "server.key", "server.pem"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }

        // A CSR asking for a server name and CA powers gets none of it.
        let key = KeyPair::generate().unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let issued = first
            .issue_agent(&csr, "abc", Duration::from_secs(60))
            .unwrap();
        let der = der_of(&issued.pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let text = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(text.contains("urn:edgefleet:agent:abc"), "{text}");
        assert!(!text.contains("evil.example"), "{text}");
        assert!(!cert.is_ca());
        assert_eq!(
            crate::trust::identity::agent_id_of(&der).unwrap(),
            "abc".to_string()
        );
        assert!(issued.not_after_ms > 0);

        assert!(matches!(
            first.issue_agent("not a csr", "abc", Duration::from_secs(60)),
            Err(IssueError::BadCsr(_))
        ));
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        Authority::load_or_create(dir.path(), &["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "hello").unwrap();
        let err = Authority::load_or_create(dir.path(), &["localhost".to_string()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("ca.pem is not a usable CA certificate (PEM)"),
            "{err}"
        );
    }
}
