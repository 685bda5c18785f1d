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
use crate::store::Store;
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

/// The rustls settings of the link listener.
pub fn server_config(
    authority: &Authority,
    store: Store,
    recovery_window: Duration,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = AgentCertVerifier::new(authority, store, recovery_window, provider.clone())?;
    let (chain, key) = authority.server_identity_der();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Identity(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
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

    /// Counts a refusal and logs it within the budget.
    fn refused(&self, reason: &'static str, agent: Option<&str>, why: String) {
        metrics::handshake_refused(reason);
        let Some(left_out) = self.log.lock().expect("log budget").take(Instant::now()) else {
            return;
        };
        match agent {
            Some(agent) => {
                tracing::warn!(%agent, reason, left_out, "refused an agent's certificate: {why}")
            }
            None => tracing::warn!(reason, left_out, "refused a client certificate: {why}"),
        }
    }

    /// Names the agent `id` as the log shows it: its name and id, or the id alone.
    fn agent_label(&self, id: &str) -> String {
        match self.store.agent_trust(id) {
            Ok(Some(trust)) => format!("{} ({id})", trust.name),
            _ => id.to_string(),
        }
    }

    /// What the failed check says, in words, and the reason label.
    fn explain(&self, end_entity: &CertificateDer<'_>, error: &rustls::Error) {
        let agent_id = identity::agent_id_of(end_entity).ok();
        let label = agent_id.as_deref().map(|id| self.agent_label(id));
        let name = agent_id
            .as_deref()
            .and_then(|id| self.store.agent_trust(id).ok().flatten())
            .map_or_else(|| "NAME".to_string(), |trust| trust.name);
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            ) => {
                let not_after = not_after_ms(end_entity).unwrap_or(0);
                let window_end = not_after + self.recovery_window.as_millis() as i64;
                let why = if now_ms() < window_end {
                    format!(
                        "it expired at {}; the agent renews it by itself on its next connection (it may until {})",
                        crate::clock::rfc3339(not_after),
                        crate::clock::rfc3339(window_end),
                    )
                } else {
                    format!(
                        "it expired at {}, longer ago than the recovery window ({}): the agent is locked out until it is enrolled again (edgefleet agents enroll --name {name})",
                        crate::clock::rfc3339(not_after),
                        crate::clock::span_text(self.recovery_window),
                    )
                };
                self.refused("expired", label.as_deref(), why);
            }
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                let why = match &label {
                    Some(_) => "this controller's CA did not sign it (was the agent enrolled with another controller?)".to_string(),
                    None => "it is not an edgefleet agent certificate of this controller's CA".to_string(),
                };
                self.refused("unknown_ca", label.as_deref(), why);
            }
            other => self.refused("other", label.as_deref(), other.to_string()),
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
            self.refused("other", None, "it names no edgefleet agent".to_string());
            return Err(CertificateError::ApplicationVerificationFailure.into());
        };
        match self.store.agent_trust(&agent_id) {
            Ok(Some(trust)) if trust.revoked_ms == 0 => Ok(verified),
            Ok(Some(trust)) => {
                self.refused(
                    "revoked",
                    Some(&format!("{} ({agent_id})", trust.name)),
                    format!(
                        "the agent was revoked at {}; enroll the device again (edgefleet agents enroll --name {})",
                        crate::clock::rfc3339(trust.revoked_ms),
                        trust.name
                    ),
                );
                Err(CertificateError::Revoked.into())
            }
            Ok(None) => {
                self.refused(
                    "not_enrolled",
                    Some(&agent_id),
                    "no agent with this id is enrolled here (removed?); enroll the device again (edgefleet agents enroll --name NAME)".to_string(),
                );
                Err(CertificateError::ApplicationVerificationFailure.into())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot check an agent's certificate against the store");
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

/// A certificate's notAfter, in Unix milliseconds.
fn not_after_ms(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp() * 1000)
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
    #[error("this is not the certificate agent {name} was last given (a newer one was issued); only the newest recovers it")]
    Superseded { name: String },
    #[error("agent {name}'s certificate expired at {expired}, longer ago than the recovery window ({window}): it is locked out; enroll the device again: `edgefleet agents enroll --name {name}` on the controller")]
    PastWindow {
        name: String,
        expired: String,
        window: String,
    },
}

/// Checks that `cert_der` is an agent certificate this CA issued (verified as of its last valid
/// second), that `csr_public_key` is its key, and that the agent is enrolled, not revoked, this
/// is the newest certificate it was given, and it expired less than `window` ago.
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
    let valid_then = UnixTime::since_unix_epoch(Duration::from_secs(
        cert.validity().not_after.timestamp().max(1) as u64 - 1,
    ));
    verifier
        .verify_client_cert(&CertificateDer::from(cert_der.to_vec()), &[], valid_then)
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
    let sha256 = hex::encode(Sha256::digest(cert_der));
    if !trust.cert_sha256.is_empty() && trust.cert_sha256 != sha256 {
        return Err(RecoveryRefusal::Superseded { name: trust.name });
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

/// The SHA-256 of a PEM certificate's DER, hex (what the store keeps of each issued one).
pub fn pem_sha256(pem: &str) -> String {
    crate::trust::authority::der_of(pem)
        .map(|der| hex::encode(Sha256::digest(der)))
        .unwrap_or_default()
}

/// The DER of a certificate handed over as PEM.
pub fn der_of_pem(pem: &str) -> Option<Vec<u8>> {
    crate::trust::authority::der_of(pem)
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
