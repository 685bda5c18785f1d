//! The agent's TLS identity: enrolling with a one-time token (learn the controller's CA from its
//! TLS handshake, keep it only if its SHA-256 is the one the token pins, make a key pair here,
//! send a CSR, keep the certificate), renewing it over the live link, and the TLS settings every
//! connection uses. Files in the data folder: `agent.key` (mode 0600; the key never leaves the
//! device), `agent.pem`, `ca.pem` and `identity.json` (id, issue and expiry times).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use edgefleet_proto::tokens::EnrollmentToken;
use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::{EnrollRequest, RecoverRequest, RenewRequest};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::AgentConfig;

/// Why the agent has no usable identity (yet).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot reach the controller at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("the controller at {address} does not present the CA the enrollment token pins (token: {pinned}, found: {found}); is it the right controller?")]
    WrongCa {
        address: String,
        pinned: String,
        found: String,
    },
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
    #[error("the controller refused this agent's certificate as expired")]
    CertificateExpired,
    #[error("this agent has no certificate yet: pass --enroll-token TOKEN (from `edgefleet agents enroll` on the controller)")]
    NotEnrolled,
    #[error("cannot make a key pair or certificate request: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not usable: {why}", path.display())]
    Unusable { path: PathBuf, why: String },
    #[error("controller address `{0}` has no host")]
    Address(String),
}

/// What the agent holds after enrolling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub agent_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub issued_ms: i64,
    pub not_after_ms: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct IdentityFile {
    agent_id: String,
    issued_ms: i64,
    not_after_ms: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes a credentials file with mode 0600 from its creation, fsynced, renamed into place.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CredentialsError> {
    crate::private_file::write_replacing(path, bytes).map_err(|source| CredentialsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl Credentials {
    /// The files in the data folder that hold the credentials, the identity (written last) last.
    pub const FILES: [&'static str; 4] = ["agent.key", "agent.pem", "ca.pem", "identity.json"];

    /// Removes the credential files from `data_dir` (the identity first, so that a folder left
    /// half-cleaned reads as not enrolled).
    pub fn remove(data_dir: &Path) {
        for name in Self::FILES.iter().rev() {
            let _ = std::fs::remove_file(data_dir.join(name));
        }
    }

    /// The credentials in `data_dir`, if the agent has enrolled.
    pub fn load(data_dir: &Path) -> Result<Option<Credentials>, CredentialsError> {
        let identity_path = data_dir.join("identity.json");
        let text = match std::fs::read_to_string(&identity_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CredentialsError::Unusable {
                    path: identity_path,
                    why: e.to_string(),
                })
            }
        };
        let identity: IdentityFile =
            serde_json::from_str(&text).map_err(|e| CredentialsError::Unusable {
                path: identity_path.clone(),
                why: e.to_string(),
            })?;
        let read = |name: &str| {
            let path = data_dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| CredentialsError::Unusable {
                why: e.to_string(),
                path,
            })
        };
        Ok(Some(Credentials {
            agent_id: identity.agent_id,
            key_pem: read("agent.key")?,
            cert_pem: read("agent.pem")?,
            ca_pem: read("ca.pem")?,
            issued_ms: identity.issued_ms,
            not_after_ms: identity.not_after_ms,
        }))
    }

    /// Writes every file, the key and certificate before the identity that points at them.
    pub fn store(&self, data_dir: &Path) -> Result<(), CredentialsError> {
        write_private(&data_dir.join("agent.key"), self.key_pem.as_bytes())?;
        write_private(&data_dir.join("agent.pem"), self.cert_pem.as_bytes())?;
        write_private(&data_dir.join("ca.pem"), self.ca_pem.as_bytes())?;
        let identity = IdentityFile {
            agent_id: self.agent_id.clone(),
            issued_ms: self.issued_ms,
            not_after_ms: self.not_after_ms,
        };
        write_private(
            &data_dir.join("identity.json"),
            serde_json::to_string(&identity)
                .expect("identity serializes")
                .as_bytes(),
        )
    }

    /// When to renew: at 70% of the certificate's lifetime.
    pub fn renew_at_ms(&self) -> i64 {
        self.issued_ms + (self.not_after_ms - self.issued_ms) * 7 / 10
    }
}

/// Makes the TLS cipher this device runs fastest the one it asks for first (the controller
/// follows the client's order): AES-128-GCM where the CPU has AES instructions (x86_64 AES-NI,
/// ARMv8 crypto extensions), ChaCha20-Poly1305 where it has none (a Raspberry Pi 4, for one).
/// ring's default order puts AES-256-GCM first, which costs 40% more rounds per block.
pub fn prefer_fastest_cipher() {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    #[cfg(target_arch = "x86_64")]
    let aes = std::arch::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    let aes = std::arch::is_aarch64_feature_detected!("aes");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let aes = false;
    let mut provider = rustls::crypto::ring::default_provider();
    let first = if aes {
        [TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384]
    } else {
        [TLS13_CHACHA20_POLY1305_SHA256, TLS13_AES_128_GCM_SHA256]
    };
    provider.cipher_suites.sort_by_key(|suite| {
        first
            .iter()
            .position(|f| f.suite() == suite.suite())
            .unwrap_or(first.len())
    });
    // Only the first call in a process takes effect; later ones find it installed.
    let _ = provider.install_default();
}

/// The endpoint every connection to the controller starts from (TLS with this agent's
/// certificate, or plaintext for `--insecure`).
pub fn endpoint(
    config: &AgentConfig,
    credentials: Option<&Credentials>,
) -> Result<Endpoint, CredentialsError> {
    let endpoint = Endpoint::from_shared(config.controller.clone())
        .map_err(|_| CredentialsError::Address(config.controller.clone()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // HTTP/2 pings notice a silently dead link in about 40 s; TCP alone takes minutes when
        // heartbeats keep unacknowledged data in flight.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // Room for a whole artifact chunk in flight.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20);
    let Some(credentials) = credentials else {
        return Ok(endpoint);
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&credentials.ca_pem))
        .identity(Identity::from_pem(
            &credentials.cert_pem,
            &credentials.key_pem,
        ));
    endpoint
        .tls_config(tls)
        .map_err(|e| CredentialsError::Unusable {
            path: config.data_dir.join("agent.pem"),
            why: e.to_string(),
        })
}

/// The channel every call to the controller goes through (connected on first use, again after
/// a break): TLS with this agent's certificate, through the proxy when there is one.
pub fn channel(
    config: &AgentConfig,
    credentials: Option<&Credentials>,
) -> Result<Channel, CredentialsError> {
    Ok(endpoint(config, credentials)?
        .connect_with_connector_lazy(crate::proxy::Dialer::new(&config.route)))
}

/// One channel per controller address of `config`, in its order.
pub fn channels(
    config: &AgentConfig,
    credentials: Option<&Credentials>,
) -> Result<Vec<Channel>, CredentialsError> {
    (0..config.controllers.len())
        .map(|i| channel(&config.at(i), credentials))
        .collect()
}

/// Runs `attempt` against each controller address of `config` in turn until one is reached:
/// the first answer that is not "unreachable" (success or refusal), or the last address's.
async fn at_any_address<T, F, Fut>(config: &AgentConfig, attempt: F) -> Result<T, CredentialsError>
where
    F: Fn(AgentConfig) -> Fut,
    Fut: std::future::Future<Output = Result<T, CredentialsError>>,
{
    let mut outcome = None;
    for index in 0..config.controllers.len() {
        match attempt(config.at(index)).await {
            Err(e @ CredentialsError::Unreachable { .. }) => outcome = Some(Err(e)),
            answered => return answered,
        }
    }
    outcome.expect("a config holds at least one controller address")
}

/// A key pair made here and a CSR for it (the controller reads only the public key).
fn key_and_csr() -> Result<(String, String), CredentialsError> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    Ok((key.serialize_pem(), csr))
}

/// Enrolls with `token`: finds the pinned CA at the controller, asks for a certificate with a
/// CSR for a key made here, and stores everything in the data folder.
pub async fn enroll(
    config: &AgentConfig,
    token: &EnrollmentToken,
) -> Result<Credentials, CredentialsError> {
    let (credentials, _name) = request_certificate(config, token).await?;
    credentials.store(&config.data_dir)?;
    tracing::info!(agent_id = %credentials.agent_id, "enrolled with the controller");
    Ok(credentials)
}

/// What [`enroll`] does short of writing anything: the credentials the controller grants for
/// `token`, held in memory for the caller to store, and the name it gave the agent. Each
/// controller address is tried in turn until one answers.
pub async fn request_certificate(
    config: &AgentConfig,
    token: &EnrollmentToken,
) -> Result<(Credentials, String), CredentialsError> {
    at_any_address(config, |config| async move {
        request_certificate_at(&config, token).await
    })
    .await
}

/// [`request_certificate`] from the controller at `config.controller`.
async fn request_certificate_at(
    config: &AgentConfig,
    token: &EnrollmentToken,
) -> Result<(Credentials, String), CredentialsError> {
    let ca_pem = discover_ca(config, &token.ca_sha256).await?;
    let unreachable = |reason: String| CredentialsError::Unreachable {
        address: config.controller.clone(),
        reason,
    };
    let channel = Endpoint::from_shared(config.controller.clone())
        .map_err(|_| CredentialsError::Address(config.controller.clone()))?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .map_err(|e| unreachable(e.to_string()))?
        .connect_with_connector(crate::proxy::Dialer::new(&config.route))
        .await
        .map_err(|e| unreachable(crate::trouble::classify(&e).to_string()))?;
    let (key_pem, csr_pem) = key_and_csr()?;
    let issued_ms = now_ms();
    let reply = AgentLinkClient::new(channel)
        .enroll(EnrollRequest {
            token: token.encode(),
            csr_pem,
            name: config.name.clone(),
            labels: config.labels.clone().into_iter().collect(),
            name_is_hostname: config.name_is_hostname,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                unreachable(status.message().to_string())
            }
            _ => CredentialsError::Refused(status.message().to_string()),
        })?
        .into_inner();
    let credentials = Credentials {
        agent_id: reply.agent_id,
        key_pem,
        cert_pem: reply.certificate_pem,
        ca_pem,
        issued_ms,
        not_after_ms: reply.not_after_unix_ms,
    };
    Ok((credentials, reply.name))
}

/// Asks for a new certificate for a new key over `channel` (authenticated by the current one),
/// and stores it.
pub async fn renew(
    channel: Channel,
    data_dir: &Path,
    current: &Credentials,
) -> Result<Credentials, CredentialsError> {
    let (key_pem, csr_pem) = key_and_csr()?;
    let issued_ms = now_ms();
    let reply = AgentLinkClient::new(channel)
        .renew(RenewRequest { csr_pem })
        .await
        .map_err(|status| match crate::trouble::classify(&status) {
            crate::trouble::Trouble::CertificateExpired => CredentialsError::CertificateExpired,
            trouble if status.code() == tonic::Code::Unavailable => CredentialsError::Unreachable {
                address: String::new(),
                reason: trouble.to_string(),
            },
            _ => CredentialsError::Refused(status.message().to_string()),
        })?
        .into_inner();
    let renewed = Credentials {
        key_pem,
        cert_pem: reply.certificate_pem,
        issued_ms,
        not_after_ms: reply.not_after_unix_ms,
        ..current.clone()
    };
    renewed.store(data_dir)?;
    Ok(renewed)
}

/// Trades the expired certificate of an agent that was away for a new one for the same key,
/// over TLS that verifies the controller (pinned CA) but presents no client certificate: the
/// CSR, signed with the key, proves the agent still holds it. Stores the result. Each
/// controller address is tried in turn until one answers.
pub async fn recover(
    config: &AgentConfig,
    held: &Credentials,
) -> Result<Credentials, CredentialsError> {
    at_any_address(
        config,
        |config| async move { recover_at(&config, held).await },
    )
    .await
}

/// [`recover`] from the controller at `config.controller`.
async fn recover_at(
    config: &AgentConfig,
    held: &Credentials,
) -> Result<Credentials, CredentialsError> {
    let unreachable = |reason: String| CredentialsError::Unreachable {
        address: config.controller.clone(),
        reason,
    };
    let key = rcgen::KeyPair::from_pem(&held.key_pem).map_err(|e| CredentialsError::Unusable {
        path: config.data_dir.join("agent.key"),
        why: e.to_string(),
    })?;
    let csr_pem = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let anonymous = Credentials {
        cert_pem: String::new(),
        key_pem: String::new(),
        ..held.clone()
    };
    let channel = endpoint_without_identity(config, &anonymous)?
        .connect_with_connector(crate::proxy::Dialer::new(&config.route))
        .await
        .map_err(|e| unreachable(crate::trouble::classify(&e).to_string()))?;
    let issued_ms = now_ms();
    let reply = AgentLinkClient::new(channel)
        .recover(RecoverRequest {
            certificate_pem: held.cert_pem.clone(),
            csr_pem,
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                unreachable(crate::trouble::classify(&status).to_string())
            }
            tonic::Code::Unimplemented => CredentialsError::Refused(
                "the controller is older than this agent and cannot renew an expired certificate: upgrade it, or enroll the device again (`edgefleet agents enroll --name NAME` on the controller)".into(),
            ),
            _ => CredentialsError::Refused(status.message().to_string()),
        })?
        .into_inner();
    let recovered = Credentials {
        cert_pem: reply.certificate_pem,
        issued_ms,
        not_after_ms: reply.not_after_unix_ms,
        ..held.clone()
    };
    recovered.store(&config.data_dir)?;
    Ok(recovered)
}

/// The endpoint with the pinned CA and no client certificate.
fn endpoint_without_identity(
    config: &AgentConfig,
    credentials: &Credentials,
) -> Result<Endpoint, CredentialsError> {
    Endpoint::from_shared(config.controller.clone())
        .map_err(|_| CredentialsError::Address(config.controller.clone()))?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&credentials.ca_pem)),
        )
        .map_err(|e| CredentialsError::Unusable {
            path: config.data_dir.join("ca.pem"),
            why: e.to_string(),
        })
}

/// The first look at the controller: a TLS handshake that accepts whatever certificates it
/// presents, only to find among them the CA whose SHA-256 the token pins. Nothing is sent and
/// nothing trusted until that CA is found; every later connection verifies against it.
async fn discover_ca(config: &AgentConfig, pinned: &str) -> Result<String, CredentialsError> {
    let address = config.controller.as_str();
    let unreachable = |reason: String| CredentialsError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let uri: tonic::codegen::http::Uri = address
        .parse()
        .map_err(|_| CredentialsError::Address(address.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| CredentialsError::Address(address.to_string()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        crate::proxy::Dialer::new(&config.route).dial(&host, port),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LearnOnly(provider)))
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| CredentialsError::Address(address.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
    let presented = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let found: Vec<String> = presented
        .iter()
        .map(|der| hex::encode(Sha256::digest(der.as_ref())))
        .collect();
    let ca = presented
        .iter()
        .zip(&found)
        .find(|(_, sha)| sha.as_str() == pinned)
        .map(|(der, _)| der)
        .ok_or_else(|| CredentialsError::WrongCa {
            address: address.to_string(),
            pinned: pinned.to_string(),
            found: found.join(", "),
        })?;
    Ok(pem("CERTIFICATE", ca.as_ref()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out += std::str::from_utf8(line).expect("base64 is ASCII");
        out += "\n";
    }
    out + &format!("-----END {label}-----\n")
}

/// The first handshake's verifier: it accepts any certificate, because that handshake only
/// learns which certificates the controller presents; no data crosses it.
#[derive(Debug)]
struct LearnOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for LearnOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_stored_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Credentials::load(dir.path()).unwrap(), None);
        let (key_pem, _) = key_and_csr().unwrap();
        let credentials = Credentials {
            agent_id: "a1".into(),
            key_pem,
            cert_pem: "cert".into(),
            ca_pem: "ca".into(),
            issued_ms: 1_000,
            not_after_ms: 11_000,
        };
        credentials.store(dir.path()).unwrap();
        assert_eq!(
            Credentials::load(dir.path()).unwrap(),
            Some(credentials.clone())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(credentials.renew_at_ms(), 8_000);
    }
}
