//! The credentials file: the controller's address, its CA and an admin token, all a CLI needs to
//! talk to it. `serve` writes one for the host it runs on (`DATA/credentials.json`, mode 0600,
//! with an operator token), so the controller's own host works with no flags, as k3s does with
//! its kubeconfig; `--credentials FILE` or `EDGEFLEET_CREDENTIALS` names another.

use std::path::Path;

use super::{read_text, write_private, TrustError};

/// The file's name in the controller's data folder.
pub const FILE_NAME: &str = "credentials.json";

/// What the CLI needs to reach a controller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// e.g. `https://127.0.0.1:7070`
    pub controller: String,
    /// The CA that signed the controller's certificate, PEM (empty for `--insecure`).
    #[serde(default)]
    pub ca_pem: String,
    /// An admin token.
    pub token: String,
}

impl Credentials {
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        let text = serde_json::to_string_pretty(self).expect("credentials serialize");
        write_private(path, text.as_bytes())
    }

    /// Writes a credentials file that must not exist yet (`admin tokens create --out`).
    pub fn write_new(&self, path: &Path) -> Result<(), TrustError> {
        let text = serde_json::to_string_pretty(self).expect("credentials serialize");
        super::write_private_new(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Credentials, TrustError> {
        serde_json::from_str(&read_text(path)?).map_err(|e| TrustError::Unusable {
            path: path.to_path_buf(),
            what: "credentials file",
            why: e.to_string(),
        })
    }
}
