//! Who may talk to the controller: its certificate authority and the certificates it issues
//! ([`authority`]), the secrets behind enrollment and admin tokens ([`tokens`]), an agent's
//! identity read from its TLS certificate ([`identity`]), and the credentials file `serve`
//! writes for the CLI on the same host ([`credentials`]). Files holding keys or tokens are
//! written with mode 0600 through [`write_private`].

pub mod authority;
pub mod credentials;
pub mod identity;
pub mod tokens;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a trust file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a usable {what}: {why}", path.display())]
    Unusable {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// Writes a secret file: mode 0600 from its creation, fsynced, renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let write_error = |source| TrustError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_error)?;
    // A leftover temporary file keeps its old mode when opened: set it.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(write_error)
}

/// Writes a new file, mode 0600 from its creation, refusing one that exists (never replaced,
/// whatever appears there meanwhile).
pub fn write_private_new(path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
    let write_error = |source| TrustError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(write_error)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(path);
        return Err(write_error(source));
    }
    Ok(())
}

/// Reads a text file the controller wrote, naming it in the error.
fn read_text(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|source| TrustError::Read {
        path: path.to_path_buf(),
        source,
    })
}
