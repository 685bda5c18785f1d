//! The controller's ed25519 signing key: created on first start in the data directory (mode
//! 0600), used to sign every model manifest; agents enroll with its public half.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::trust::{write_private, TrustError};

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "controller.key";

/// Why the signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{} is readable by others (mode {mode:o}); run `chmod 600 {}`", path.display(), path.display())]
    ReadableByOthers { path: PathBuf, mode: u32 },
    #[error("{} is {len} bytes, not a 32-byte ed25519 key", path.display())]
    WrongSize { path: PathBuf, len: usize },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The controller's signing key.
#[derive(Clone)]
pub struct ManifestSigner {
    key: SigningKey,
}

impl ManifestSigner {
    /// Loads `DIR/controller.key`, or creates it (32 random bytes, readable by the owner only).
    /// A key file that others can read, or of the wrong size, is an error: it would mean the
    /// key may be known elsewhere, or is not ours.
    pub fn load_or_create(data_dir: &Path) -> Result<ManifestSigner, KeyError> {
        let path = data_dir.join(KEY_FILE);
        let read_error = |source| KeyError::Read {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path)
                    .map_err(read_error)?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(KeyError::ReadableByOthers {
                        mode: mode & 0o777,
                        path,
                    });
                }
                let seed: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| KeyError::WrongSize {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(ManifestSigner {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let seed: [u8; 32] = rand::random();
                write_private(&path, &seed).map_err(|e| match e {
                    TrustError::Write { path, source } => KeyError::Create { path, source },
                    other => KeyError::Create {
                        path: path.clone(),
                        source: std::io::Error::other(other.to_string()),
                    },
                })?;
                let signer = ManifestSigner {
                    key: SigningKey::from_bytes(&seed),
                };
                tracing::info!(key = %path.display(), fingerprint = %signer.fingerprint(), "created the controller's signing key");
                Ok(signer)
            }
            Err(e) => Err(read_error(e)),
        }
    }

    /// A key that lives only in memory, for tests.
    pub fn ephemeral() -> ManifestSigner {
        ManifestSigner {
            key: SigningKey::from_bytes(&rand::random()),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The first 16 hex digits of the public key's sha256: how people tell keys apart.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }
}

/// The short fingerprint of a public key.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn the_key_is_created_once_private_and_signs_verifiably() {
        let dir = tempfile::tempdir().unwrap();
        let a = ManifestSigner::load_or_create(dir.path()).unwrap();
        let b = ManifestSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let sig = a.sign(b"manifest");
        let key = VerifyingKey::from_bytes(&b.public_key()).unwrap();
        let sig = Signature::from_slice(&sig).unwrap();
        assert!(key.verify(b"manifest", &sig).is_ok());
        assert!(key.verify(b"manifest!", &sig).is_err());
    }

    #[test]
    fn a_key_others_can_read_or_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ManifestSigner::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ManifestSigner::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("readable by others"), "{err}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = ManifestSigner::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not a 32-byte"), "{err}");
    }
}
