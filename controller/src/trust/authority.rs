//! The controller's certificate authority (ECDSA P-256, made at first start, `ca.pem` and
//! `ca.key` in the data folder), the server certificate it presents (`server.pem`, kept across
//! restarts while it names the same `--san` names and has a month left; made anew otherwise, its
//! not-before back-dated a day or to the CA's, so a device whose clock lags still accepts it),
//! and the client certificates it issues to agents from their CSRs:
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
/// How long a server certificate is valid.
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A kept server certificate with less left than this is made anew at start.
const SERVER_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far certificates are back-dated: a device whose clock lags by less still accepts them.
const BACKDATE: time::Duration = time::Duration::days(1);

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
    ca_der: Vec<u8>,
    ca_sha256: String,
    data_dir: std::path::PathBuf,
    names: Vec<String>,
    /// The server certificate followed by the CA's, so a client can find the CA in the chain,
    /// and its key; replaced while running when it nears its end.
    server: std::sync::Mutex<ServerPair>,
}

struct ServerPair {
    chain_pem: String,
    key: KeyPair,
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

/// The first certificate's DER, from PEM.
pub(crate) fn der_of(pem_text: &str) -> Option<Vec<u8>> {
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
            params.not_before = now - BACKDATE;
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

        let (server_chain_pem, server_key) =
            match kept_server_identity(data_dir, &ca_pem, &ca_der, names) {
                Some(kept) => kept,
                None => {
                    let (chain, key) = new_server_identity(&issuer, &ca_pem, &ca_der, names)?;
                    write_private(&data_dir.join("server.pem"), chain.as_bytes())?;
                    write_private(&data_dir.join("server.key"), key.serialize_pem().as_bytes())?;
                    tracing::info!(names = ?names, "made a new server certificate");
                    (chain, key)
                }
            };
        Ok(Authority {
            issuer,
            ca_pem,
            ca_der,
            ca_sha256,
            data_dir: data_dir.to_path_buf(),
            names: names.to_vec(),
            server: std::sync::Mutex::new(ServerPair {
                chain_pem: server_chain_pem,
                key: server_key,
            }),
        })
    }

    /// Makes a new server certificate if the one served has less than a month left (a
    /// controller that runs for months), writes it and serves it from now on; `true` if it did.
    pub fn refresh_server_identity(&self) -> Result<bool, TrustError> {
        let mut server = self.server.lock().expect("server identity");
        let left = der_of(&server.chain_pem)
            .and_then(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
                Some(cert.validity().not_after.timestamp())
            })
            .map_or(0, |not_after| {
                not_after - OffsetDateTime::now_utc().unix_timestamp()
            });
        if left >= SERVER_RENEW_BEFORE.as_secs() as i64 {
            return Ok(false);
        }
        let (chain, key) =
            new_server_identity(&self.issuer, &self.ca_pem, &self.ca_der, &self.names)?;
        write_private(&self.data_dir.join("server.pem"), chain.as_bytes())?;
        write_private(
            &self.data_dir.join("server.key"),
            key.serialize_pem().as_bytes(),
        )?;
        tracing::info!(names = ?self.names, "made a new server certificate: the one served had less than a month left");
        *server = ServerPair {
            chain_pem: chain,
            key,
        };
        Ok(true)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// The server's certificate chain and key in rustls's types, for the link listener.
    pub fn server_identity_der(
        &self,
    ) -> (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let server = self.server.lock().expect("server identity");
        crate::server::tls::identity_der(&server.chain_pem, server.key.serialize_der())
    }

    /// SHA-256 of the CA certificate's DER, hex: what enrollment tokens pin.
    pub fn ca_sha256(&self) -> &str {
        &self.ca_sha256
    }

    /// The server's certificate chain and key, PEM.
    pub fn server_identity(&self) -> (String, String) {
        let server = self.server.lock().expect("server identity");
        (server.chain_pem.clone(), server.key.serialize_pem())
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

/// The server certificate and key of an earlier start, if they still do: signed by this CA,
/// naming exactly `names`, with more than [`SERVER_RENEW_BEFORE`] left. Anything else (missing,
/// unreadable, other names) is `None`, and a new one is made.
fn kept_server_identity(
    data_dir: &Path,
    ca_pem: &str,
    ca_der: &[u8],
    names: &[String],
) -> Option<(String, KeyPair)> {
    let chain = std::fs::read_to_string(data_dir.join("server.pem")).ok()?;
    let key =
        KeyPair::from_pem(&std::fs::read_to_string(data_dir.join("server.key")).ok()?).ok()?;
    let der = der_of(&chain)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).ok()?;
    cert.verify_signature(Some(ca.public_key())).ok()?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return None;
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let left = cert.validity().not_after.timestamp() - now;
    if left < SERVER_RENEW_BEFORE.as_secs() as i64 {
        return None;
    }
    // One made by an older controller, back-dated only minutes (its validity barely longer
    // than a lifetime), is made anew.
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    if validity < SERVER_LIFETIME.as_secs() as i64 + BACKDATE.whole_seconds() / 2 {
        return None;
    }
    let mut held: Vec<String> = cert
        .subject_alternative_name()
        .ok()??
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut wanted: Vec<String> = names
        .iter()
        .map(|n| {
            n.parse::<std::net::IpAddr>()
                .map_or_else(|_| n.clone(), |ip| ip.to_string())
        })
        .collect();
    held.sort();
    held.dedup();
    wanted.sort();
    wanted.dedup();
    if held != wanted {
        return None;
    }
    // The chain as served is this certificate followed by the CA's.
    let leaf_end = chain.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let leaf = chain[..leaf_end].trim_start();
    Some((format!("{leaf}\n{ca_pem}"), key))
}

/// A new server certificate for `names`, valid from a day back (or the CA's own not-before, if
/// older) for [`SERVER_LIFETIME`]; returns the chain (it, then the CA) and its key.
fn new_server_identity(
    issuer: &Issuer<'static, KeyPair>,
    ca_pem: &str,
    ca_der: &[u8],
    names: &[String],
) -> Result<(String, KeyPair), TrustError> {
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "edgefleet controller");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let now = OffsetDateTime::now_utc();
    let ca_not_before = x509_parser::parse_x509_certificate(ca_der)
        .ok()
        .and_then(|(_, ca)| {
            OffsetDateTime::from_unix_timestamp(ca.validity().not_before.timestamp()).ok()
        });
    params.not_before = match ca_not_before {
        Some(ca) if ca < now - BACKDATE => ca,
        _ => now - BACKDATE,
    };
    params.not_after = after(now, SERVER_LIFETIME);
    params.serial_number = Some(random_serial());
    let server_pem = params.signed_by(&server_key, issuer)?.pem();
    Ok((format!("{server_pem}{ca_pem}"), server_key))
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
    fn the_server_certificate_is_kept_across_starts_until_its_names_change_and_is_backdated() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = Authority::load_or_create(dir.path(), &names).unwrap();
        // The same names in another order and spelling: the same certificate and key.
        let again = Authority::load_or_create(
            dir.path(),
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .unwrap();
        assert_eq!(first.server_identity(), again.server_identity());
        let leaf = der_of(&first.server_identity().0).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let backdated =
            OffsetDateTime::now_utc().unix_timestamp() - cert.validity().not_before.timestamp();
        assert!(
            backdated >= 86_400 - 60,
            "not-before only {backdated} s back"
        );
        // A device whose clock lags by hours still finds the CA valid too.
        let (_, ca) = x509_parser::parse_x509_certificate(first.ca_der()).unwrap();
        assert!(ca.validity().not_before.timestamp() <= cert.validity().not_before.timestamp());

        let more = Authority::load_or_create(
            dir.path(),
            &[names.clone(), vec!["controller.example".to_string()]].concat(),
        )
        .unwrap();
        assert_ne!(
            first.server_identity(),
            more.server_identity(),
            "a new name, a new certificate"
        );
        // A server certificate file that does not parse is made anew, not fatal.
        std::fs::write(dir.path().join("server.pem"), "junk").unwrap();
        let mended = Authority::load_or_create(dir.path(), &names).unwrap();
        assert!(mended.server_identity().0.contains("BEGIN CERTIFICATE"));
        let (chain, key) = mended.server_identity_der();
        assert_eq!(chain.len(), 2, "the server certificate, then the CA's");
        assert!(matches!(key, rustls::pki_types::PrivateKeyDer::Pkcs8(_)));
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
