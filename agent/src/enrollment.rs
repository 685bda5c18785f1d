//! The controller key this agent trusts. It is pinned in the config (`controller_key`), or else
//! taken from the first controller that welcomes the agent and kept in `DATA/controller.pub`
//! (trust on first use, like SSH host keys). Every manifest must verify against it; a controller
//! that later presents another key is logged loudly and its manifests are refused.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Where the enrolled key is kept, hex-encoded.
pub const KEY_FILE: &str = "controller.pub";

/// The agent's trust in one controller key.
#[derive(Debug, Clone)]
pub struct Enrollment {
    path: PathBuf,
    pinned: Option<[u8; 32]>,
}

impl Enrollment {
    pub fn new(data_dir: &Path, pinned: Option<[u8; 32]>) -> Enrollment {
        Enrollment {
            path: data_dir.join(KEY_FILE),
            pinned,
        }
    }

    /// The key manifests must verify against, if the agent has one yet.
    pub fn key(&self) -> Option<[u8; 32]> {
        self.pinned.or_else(|| {
            let text = std::fs::read_to_string(&self.path).ok()?;
            parse_key(text.trim()).ok()
        })
    }

    /// Takes note of the key a controller presented in its welcome: enrolls with it if the agent
    /// has none, warns if it differs from the enrolled one.
    pub fn observe(&self, presented: &[u8]) {
        let Ok(presented) = <[u8; 32]>::try_from(presented) else {
            tracing::warn!("the controller presented no signing key; installs will be refused");
            return;
        };
        match self.key() {
            Some(enrolled) if enrolled == presented => {}
            Some(enrolled) => tracing::error!(
                enrolled = %fingerprint(&enrolled),
                presented = %fingerprint(&presented),
                file = %self.path.display(),
                "the controller presents a different signing key than the one this agent enrolled with; its models will be refused (delete the file to enroll with the new key)"
            ),
            None => match std::fs::write(&self.path, hex::encode(presented)) {
                Ok(()) => {
                    tracing::info!(key = %fingerprint(&presented), "enrolled with the controller's signing key")
                }
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, "cannot store the controller's key")
                }
            },
        }
    }

    /// Checks a manifest's signature against the enrolled key, in one line when it fails.
    pub fn verify(&self, manifest: &[u8], signature: &[u8]) -> Result<(), EnrollmentError> {
        let key = self.key().ok_or(EnrollmentError::NotEnrolled)?;
        let verifying =
            VerifyingKey::from_bytes(&key).map_err(|_| EnrollmentError::InvalidEnrolledKey)?;
        let signature =
            Signature::from_slice(signature).map_err(|_| EnrollmentError::MalformedSignature)?;
        verifying
            .verify(manifest, &signature)
            .map_err(|_| EnrollmentError::DoesNotVerify {
                fingerprint: fingerprint(&key),
            })
    }
}

/// Why a manifest's signature or a configured key is refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentError {
    #[error("this agent has not enrolled with a controller key yet")]
    NotEnrolled,
    #[error("the enrolled controller key is not a valid ed25519 key")]
    InvalidEnrolledKey,
    #[error("the manifest's signature is malformed")]
    MalformedSignature,
    #[error("the manifest's signature does not verify against the controller key this agent enrolled with ({fingerprint}); refused")]
    DoesNotVerify { fingerprint: String },
    #[error("`{0}` is not a 64-digit hex ed25519 public key")]
    NotAKey(String),
}

/// A 64-digit hex ed25519 public key.
pub fn parse_key(hex_key: &str) -> Result<[u8; 32], EnrollmentError> {
    hex::decode(hex_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| EnrollmentError::NotAKey(hex_key.to_string()))
}

/// The first 16 hex digits of the key's sha256 (the controller prints the same).
pub fn fingerprint(key: &[u8]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn first_key_is_enrolled_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ours = SigningKey::from_bytes(&[7; 32]);
        let theirs = SigningKey::from_bytes(&[9; 32]);
        let enrollment = Enrollment::new(dir.path(), None);
        assert!(enrollment
            .verify(b"m", &ours.sign(b"m").to_bytes())
            .is_err());
        enrollment.observe(ours.verifying_key().as_bytes());
        enrollment.observe(theirs.verifying_key().as_bytes());
        assert_eq!(enrollment.key(), Some(ours.verifying_key().to_bytes()));
        assert!(enrollment.verify(b"m", &ours.sign(b"m").to_bytes()).is_ok());
        let err = enrollment
            .verify(b"m", &theirs.sign(b"m").to_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
        assert!(enrollment
            .verify(b"m2", &ours.sign(b"m").to_bytes())
            .is_err());
        assert!(enrollment.verify(b"m", b"short").is_err());
    }

    #[test]
    fn a_pinned_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = SigningKey::from_bytes(&[1; 32]);
        let enrollment = Enrollment::new(dir.path(), Some(pinned.verifying_key().to_bytes()));
        enrollment.observe(SigningKey::from_bytes(&[2; 32]).verifying_key().as_bytes());
        assert_eq!(enrollment.key(), Some(pinned.verifying_key().to_bytes()));
        assert!(parse_key("zz").is_err());
        assert_eq!(parse_key(&hex::encode([3u8; 32])).unwrap(), [3u8; 32]);
    }
}
