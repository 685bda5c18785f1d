//! The link listener's TLS 1.3: the server certificate, and the client-certificate check that
//! runs in the handshake. A client may present no certificate (an enrolling agent, the CLI with
//! its token); one it presents must be an agent certificate of this CA, in its lifetime, of an
//! agent enrolled here and not revoked. A refusal the controller can attribute (which agent,
//! why) is counted and logged within a budget, so a scan cannot flood the log; the agent learns
//! why from the TLS alert. An agent whose certificate expired is told how long it may still
//! recover ([`recoverable_certificate`], the `Recover` call).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use super::admission::LogBudget;
use crate::clock::now_ms;
use crate::metrics;
use crate::store::{AgentTrust, Store};
use crate::trust::authority::Authority;
use crate::trust::identity;

/// Why the TLS settings cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the server certificate or key is not usable: {0}")]
    Identity(String),
    #[error("the CA certificate is not usable as a trust anchor: {0}")]
    Anchor(String),
}

/// The rustls settings of the link listener, and the server identity they serve (which
/// [`ServerIdentity::refresh`] replaces while running).
pub fn server_config(
    authority: Arc<Authority>,
    store: Store,
    recovery_window: Duration,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ServerIdentity>), TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = AgentCertVerifier::new(&authority, store, recovery_window, provider.clone())?;
    let identity = Arc::new(ServerIdentity::new(authority, provider.clone())?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(identity.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), identity))
}

/// The server certificate every handshake presents: the authority's, loaded again when it is
/// replaced.
pub struct ServerIdentity {
    authority: Arc<Authority>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity").finish_non_exhaustive()
    }
}

impl ServerIdentity {
    pub(crate) fn new(
        authority: Arc<Authority>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ServerIdentity, TlsSetupError> {
        let current = std::sync::RwLock::new(Self::load(&authority, &provider)?);
        Ok(ServerIdentity {
            authority,
            provider,
            current,
        })
    }

    fn load(
        authority: &Authority,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Arc<rustls::sign::CertifiedKey>, TlsSetupError> {
        let (chain, key) = authority.server_identity_der();
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
        Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, key)))
    }

    /// Serves the certificate the authority holds now (made anew by another listener's
    /// [`ServerIdentity::refresh`]).
    pub(crate) fn reload(&self) {
        match Self::load(&self.authority, &self.provider) {
            Ok(current) => *self.current.write().expect("server identity") = current,
            Err(e) => tracing::error!(error = %e, "the server certificate is not usable"),
        }
    }

    /// Makes and serves a new server certificate if the one served nears its end.
    pub fn refresh(&self) {
        match self.authority.refresh_server_identity() {
            Ok(false) => {}
            Ok(true) => match Self::load(&self.authority, &self.provider) {
                Ok(fresh) => *self.current.write().expect("server identity") = fresh,
                Err(e) => tracing::error!(error = %e, "the new server certificate is not usable"),
            },
            Err(e) => tracing::error!(error = %e, "cannot make a new server certificate"),
        }
    }
}

impl rustls::server::ResolvesServerCert for ServerIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.read().expect("server identity").clone())
    }
}

/// The agent-certificate check of the handshake, with the store at hand.
pub struct AgentCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    store: Store,
    recovery_window: Duration,
    log: Mutex<LogBudget>,
}

impl std::fmt::Debug for AgentCertVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCertVerifier").finish_non_exhaustive()
    }
}

/// A verifier of certificates this CA signed (client-auth usage), optional at the handshake.
fn webpki_verifier(
    authority: &Authority,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(authority.ca_der().to_vec()))
        .map_err(|e| TlsSetupError::Anchor(e.to_string()))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsSetupError::Anchor(e.to_string()))
}

impl AgentCertVerifier {
    fn new(
        authority: &Authority,
        store: Store,
        recovery_window: Duration,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<AgentCertVerifier, TlsSetupError> {
        Ok(AgentCertVerifier {
            inner: webpki_verifier(authority, provider)?,
            store,
            recovery_window,
            log: Mutex::new(LogBudget::new(20, Duration::from_secs(60))),
        })
    }

    /// Counts a refusal and, within the budget, logs it with `describe()`'s words (only worked
    /// out, store lookups included, for a line that will be logged).
    fn refused(&self, reason: &'static str, describe: impl FnOnce() -> (Option<String>, String)) {
        metrics::handshake_refused(reason);
        let Some(left_out) = self.log.lock().expect("log budget").take(Instant::now()) else {
            return;
        };
        let (agent, why) = describe();
        match agent {
            Some(agent) => {
                tracing::warn!(%agent, reason, left_out, "refused an agent's certificate: {why}")
            }
            None => tracing::warn!(reason, left_out, "refused a client certificate: {why}"),
        }
    }

    /// The agent a certificate names, as the log shows it (its name and id), only if this CA
    /// signed the certificate: anyone can write an agent's id into a certificate of their own.
    /// `None` otherwise, or for an id that is not plain text.
    fn signed_agent(
        &self,
        end_entity: &CertificateDer<'_>,
    ) -> Option<(String, Option<AgentTrust>)> {
        let (_, cert) = x509_parser::parse_x509_certificate(end_entity).ok()?;
        self.inner
            .verify_client_cert(end_entity, &[], last_valid_second(&cert))
            .ok()?;
        let id = identity::agent_id_of(end_entity).ok()?;
        if id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let trust = self.store.agent_trust(&id).ok().flatten();
        Some((id, trust))
    }

    /// Why the check failed, in words, and the reason label.
    fn explain(&self, end_entity: &CertificateDer<'_>, error: &rustls::Error) {
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => self.refused("expired", || {
                let Some((id, trust)) = self.signed_agent(end_entity) else {
                    return (
                        None,
                        "it expired, and this CA did not sign it".to_string(),
                    );
                };
                let not_after = key_and_expiry(end_entity).map_or(0, |(_, ms)| ms);
                let window_end = not_after + self.recovery_window.as_millis() as i64;
                let expired = crate::clock::rfc3339(not_after);
                let why = match &trust {
                    None => format!("it expired at {expired}, and no agent with its id is enrolled here (removed?)"),
                    Some(t) if t.revoked_ms != 0 => format!(
                        "it expired at {expired}, and the agent was revoked; enroll the device again (edgefleet agents enroll --name {})",
                        t.name
                    ),
                    Some(_) if now_ms() < window_end => format!(
                        "it expired at {expired}; the agent renews it by itself on its next connection (it may until {})",
                        crate::clock::rfc3339(window_end),
                    ),
                    Some(t) => format!(
                        "it expired at {expired}, longer ago than the recovery window ({}): the agent is locked out until it is enrolled again (edgefleet agents enroll --name {})",
                        crate::clock::span_text(self.recovery_window),
                        t.name,
                    ),
                };
                let label = match trust {
                    Some(t) => format!("{} ({id})", t.name),
                    None => id,
                };
                (Some(label), why)
            }),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                self.refused("unknown_ca", || {
                    // The id it names is only its own word: shown as such, never looked up.
                    let claimed = identity::agent_id_of(end_entity)
                        .ok()
                        .filter(|id| id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
                    let why = match claimed {
                        Some(id) => format!("this controller's CA did not sign it; it names agent id {id}, unverified (a device enrolled with another controller?)"),
                        None => "this controller's CA did not sign it (a device enrolled with another controller?)".to_string(),
                    };
                    (None, why)
                })
            }
            other => self.refused("other", || (None, other.to_string())),
        }
    }
}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| self.explain(end_entity, e))?;
        let Ok(agent_id) = identity::agent_id_of(end_entity) else {
            self.refused("other", || {
                (None, "it names no edgefleet agent".to_string())
            });
            return Err(CertificateError::ApplicationVerificationFailure.into());
        };
        match self.store.agent_trust(&agent_id) {
            Ok(Some(trust)) if trust.revoked_ms == 0 => Ok(verified),
            Ok(Some(trust)) => {
                self.refused("revoked", || {
                    (
                        Some(format!("{} ({agent_id})", trust.name)),
                        format!(
                            "the agent was revoked at {}; enroll the device again (edgefleet agents enroll --name {})",
                            crate::clock::rfc3339(trust.revoked_ms),
                            trust.name
                        ),
                    )
                });
                Err(CertificateError::Revoked.into())
            }
            Ok(None) => {
                self.refused("not_enrolled", || {
                    (
                        Some(agent_id.clone()),
                        "no agent with this id is enrolled here (removed?); enroll the device again (edgefleet agents enroll --name NAME)".to_string(),
                    )
                });
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
            Err(e) => {
                self.refused("store", || {
                    (
                        Some(agent_id.clone()),
                        format!("the store cannot be read to check it: {e}"),
                    )
                });
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The SHA-256 of a certificate's public key, hex, and its notAfter in Unix milliseconds.
pub fn key_and_expiry(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        hex::encode(Sha256::digest(
            cert.public_key().subject_public_key.data.as_ref(),
        )),
        cert.validity().not_after.timestamp() * 1000,
    ))
}

/// The last second a certificate is valid: verifying as of it checks everything but expiry.
fn last_valid_second(cert: &x509_parser::certificate::X509Certificate<'_>) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(
        (cert.validity().not_after.timestamp().max(1) - 1) as u64,
    ))
}

/// An expired agent certificate that may still be traded for a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recoverable {
    pub agent_id: String,
    pub name: String,
    pub not_after_ms: i64,
}

/// Why an expired certificate does not recover its agent. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoveryRefusal {
    #[error("the certificate is not an agent certificate of this controller's CA: {0}")]
    NotOurs(String),
    #[error("the certificate request is not for the key of the certificate (prove possession of the key the agent holds)")]
    OtherKey,
    #[error("agent {0} is not enrolled with this controller (removed?); enroll the device again: `edgefleet agents enroll --name NAME` on the controller")]
    NotEnrolled(String),
    #[error("agent {name} was revoked; enroll the device again: `edgefleet agents enroll --name {name}` on the controller")]
    Revoked { name: String },
    #[error("this certificate's key is older than the last two keys agent {name} was given; only those recover it: enroll the device again: `edgefleet agents enroll --name {name}` on the controller")]
    Superseded { name: String },
    #[error("agent {name}'s certificate is still valid until {until} by the controller's clock: renew it over the link instead (the device clock reads later than the controller's: is it right?)")]
    StillValid { name: String, until: String },
    #[error("agent {name}'s certificate expired at {expired}, longer ago than the recovery window ({window}): it is locked out; enroll the device again: `edgefleet agents enroll --name {name}` on the controller")]
    PastWindow {
        name: String,
        expired: String,
        window: String,
    },
}

/// Checks that `cert_der` is an agent certificate this CA issued (verified as of its last valid
/// second), that `csr_public_key` is its key, and that the agent is enrolled, not revoked, the
/// key is the one of the last certificate it was given or of the one before (whose renewal
/// reply may have been lost), and the certificate has expired, less than `window` ago.
pub fn recoverable_certificate(
    authority: &Authority,
    store: &Store,
    cert_der: &[u8],
    csr_public_key: &[u8],
    window: Duration,
    now_ms: i64,
) -> Result<Recoverable, RecoveryRefusal> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| RecoveryRefusal::NotOurs(e.to_string()))?;
    let not_after_ms = cert.validity().not_after.timestamp() * 1000;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = webpki_verifier(authority, provider)
        .map_err(|e| RecoveryRefusal::NotOurs(e.to_string()))?;
    verifier
        .verify_client_cert(
            &CertificateDer::from(cert_der.to_vec()),
            &[],
            last_valid_second(&cert),
        )
        .map_err(|e| RecoveryRefusal::NotOurs(e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != csr_public_key {
        return Err(RecoveryRefusal::OtherKey);
    }
    let agent_id =
        identity::agent_id_of(cert_der).map_err(|e| RecoveryRefusal::NotOurs(e.to_string()))?;
    let trust = store
        .agent_trust(&agent_id)
        .map_err(|e| RecoveryRefusal::NotOurs(e.to_string()))?
        .ok_or_else(|| RecoveryRefusal::NotEnrolled(agent_id.clone()))?;
    if trust.revoked_ms != 0 {
        return Err(RecoveryRefusal::Revoked { name: trust.name });
    }
    let key = hex::encode(Sha256::digest(csr_public_key));
    if !trust.key_sha256.is_empty() && trust.key_sha256 != key && trust.previous_key_sha256 != key {
        return Err(RecoveryRefusal::Superseded { name: trust.name });
    }
    if now_ms < not_after_ms {
        return Err(RecoveryRefusal::StillValid {
            name: trust.name,
            until: crate::clock::rfc3339(not_after_ms),
        });
    }
    if now_ms > not_after_ms.saturating_add(window.as_millis() as i64) {
        return Err(RecoveryRefusal::PastWindow {
            name: trust.name,
            expired: crate::clock::rfc3339(not_after_ms),
            window: crate::clock::span_text(window),
        });
    }
    Ok(Recoverable {
        agent_id,
        name: trust.name,
        not_after_ms,
    })
}

/// The SHA-256 of a PEM certificate's public key, hex (what the store keeps of each issued
/// one).
pub fn key_sha256_of_pem(pem: &str) -> String {
    crate::trust::authority::der_of(pem)
        .and_then(|der| key_and_expiry(&der))
        .map(|(key, _)| key)
        .unwrap_or_default()
}

/// The server identity in rustls's types.
pub(crate) fn identity_der(
    chain_pem: &str,
    key_der: Vec<u8>,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = chain_pem
        .split("-----END CERTIFICATE-----")
        .filter_map(crate::trust::authority::der_of)
        .map(CertificateDer::from)
        .collect();
    (
        chain,
        PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key_der)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key pair and a CSR for it, PEM.
    fn key_and_csr() -> (rcgen::KeyPair, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = csr_for(&key);
        (key, csr)
    }

    fn csr_for(key: &rcgen::KeyPair) -> String {
        rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(key)
            .unwrap()
            .pem()
            .unwrap()
    }

    fn public_key(csr_pem: &str) -> Vec<u8> {
        use rcgen::PublicKeyData;
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .unwrap()
            .public_key
            .der_bytes()
            .to_vec()
    }

    #[test]
    fn only_the_agents_own_recent_expired_certificate_recovers_it() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::load_or_create(dir.path(), &["localhost".into()]).unwrap();
        let store = Store::open(&dir.path().join("controller.db")).unwrap();
        let hardware = Default::default();
        store
            .upsert_agent("a1", "gw-1", &Default::default(), "", &hardware, 0)
            .unwrap();
        let window = Duration::from_secs(3600);
        // Issued, and recorded as the agent's current certificate, for a minute (the
        // certificate keeps whole seconds; the times below stay well clear of its edges).
        let (old_key, old_csr) = key_and_csr();
        let old = authority
            .issue_agent(&old_csr, "a1", Duration::from_secs(60))
            .unwrap();
        store
            .record_certificate("a1", &key_sha256_of_pem(&old.pem), old.not_after_ms)
            .unwrap();
        let der = crate::trust::authority::der_of(&old.pem).unwrap();
        let after = old.not_after_ms + 2_000;
        let check = |der: &[u8], csr: &str, now: i64| {
            recoverable_certificate(&authority, &store, der, &public_key(csr), window, now)
        };

        // Still valid by the controller's clock: renew instead.
        assert!(matches!(
            check(&der, &csr_for(&old_key), old.not_after_ms - 30_000),
            Err(RecoveryRefusal::StillValid { .. })
        ));
        // Expired, inside the window, with a CSR signed by its key: recovered.
        let ok = check(&der, &csr_for(&old_key), after).unwrap();
        assert_eq!((ok.agent_id.as_str(), ok.name.as_str()), ("a1", "gw-1"));
        // A CSR for another key does not prove possession of this one.
        let (_, stranger_csr) = key_and_csr();
        assert_eq!(
            check(&der, &stranger_csr, after).unwrap_err(),
            RecoveryRefusal::OtherKey
        );
        // Past the window: locked out, with what to do.
        let late = check(&der, &csr_for(&old_key), old.not_after_ms + 3_600_001).unwrap_err();
        assert!(
            late.to_string()
                .contains("edgefleet agents enroll --name gw-1"),
            "{late}"
        );

        // A renewal whose reply was lost: the previous key still recovers; two keys back does not.
        let renew = || {
            let (_, csr) = key_and_csr();
            let issued = authority
                .issue_agent(&csr, "a1", Duration::from_secs(1))
                .unwrap();
            store
                .record_certificate("a1", &key_sha256_of_pem(&issued.pem), issued.not_after_ms)
                .unwrap();
        };
        renew();
        assert!(
            check(&der, &csr_for(&old_key), after).is_ok(),
            "the previous key"
        );
        renew();
        assert!(matches!(
            check(&der, &csr_for(&old_key), after),
            Err(RecoveryRefusal::Superseded { .. })
        ));

        // Another controller's certificate for the same id is not ours.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Authority::load_or_create(other_dir.path(), &["localhost".into()]).unwrap();
        let (foreign_key, foreign_csr) = key_and_csr();
        let foreign = other
            .issue_agent(&foreign_csr, "a1", Duration::from_secs(1))
            .unwrap();
        assert!(matches!(
            check(
                &crate::trust::authority::der_of(&foreign.pem).unwrap(),
                &csr_for(&foreign_key),
                after
            ),
            Err(RecoveryRefusal::NotOurs(_))
        ));

        // Revoked: refused, before anything else is weighed.
        store.revoke_agent("a1", 1).unwrap();
        assert!(matches!(
            check(&der, &csr_for(&old_key), after),
            Err(RecoveryRefusal::Revoked { .. })
        ));
    }
}
