//! Which controller the CLI talks to and how it proves itself: the address (`--controller`, or
//! the credentials file's), the CA to verify the controller with, and the admin token every call
//! carries. Plaintext only with `--insecure`.

use std::path::{Path, PathBuf};

use edgefleet_controller::trust::credentials::{Credentials, FILE_NAME};

/// A configuration the CLI cannot run with (the process exits with 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(pub(crate) String);

/// Where `serve` writes the credentials file by default.
const DEFAULT_DATA_DIR: &str = "/var/lib/edgefleet";

/// A controller to call.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) address: String,
    /// The CA to verify the controller with (`None`: plaintext).
    pub(crate) ca_pem: Option<String>,
    /// The admin token every call carries.
    pub(crate) token: Option<String>,
}

impl Target {
    /// From the flags and the credentials file (`--credentials`, else the default one when it is
    /// readable).
    pub(crate) fn resolve(
        controller: Option<String>,
        credentials: Option<PathBuf>,
        insecure: bool,
    ) -> Result<Target, ConfigError> {
        let file = match credentials {
            Some(path) => Some(read(&path)?),
            None => {
                let default = Path::new(DEFAULT_DATA_DIR).join(FILE_NAME);
                Credentials::read(&default).ok()
            }
        };
        let address = controller
            .or_else(|| file.as_ref().map(|f| f.controller.clone()))
            .ok_or_else(|| {
                ConfigError(format!(
                    "no controller: pass --controller https://HOST:PORT and --credentials FILE (serve writes DATA/{FILE_NAME})"
                ))
            })?;
        let ca_pem = match (address.split_once("://").map(|(s, _)| s), insecure) {
            (Some("https"), false) => Some(
                file.as_ref()
                    .map(|f| f.ca_pem.clone())
                    .filter(|ca| !ca.is_empty())
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "no CA to verify {address} with: pass --credentials FILE (serve writes DATA/{FILE_NAME})"
                        ))
                    })?,
            ),
            (Some("http"), true) => None,
            (Some("http"), false) => {
                return Err(ConfigError(format!(
                    "`{address}` is plaintext: use https://, or pass --insecure for a controller started with --insecure"
                )))
            }
            (Some("https"), true) => {
                return Err(ConfigError(format!(
                    "`{address}` is https:// but --insecure asks for plaintext; use http:// with --insecure"
                )))
            }
            _ => {
                return Err(ConfigError(format!(
                    "`{address}` is not a controller address (expected https://HOST:PORT)"
                )))
            }
        };
        Ok(Target {
            address,
            ca_pem,
            token: file.map(|f| f.token),
        })
    }
}

fn read(path: &Path) -> Result<Credentials, ConfigError> {
    Credentials::read(path).map_err(|e| ConfigError(e.to_string()))
}
