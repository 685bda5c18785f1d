//! The agent's configuration: an optional TOML file overlaid by command-line flags, validated
//! once at start; and the agent's persistent identity.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::enrollment::EnrollmentError;

/// Why the configuration or the agent's identity is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A TOML error at a line of the file (0 when it has no position).
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no controller address: pass --controller URL (repeat it for several replicas) or set `controller` in the config file")]
    NoController,
    #[error("controller address `{0}` must start with http:// or https://")]
    ControllerScheme(String),
    #[error("controller address `{0}` is plaintext: use https://, or pass --insecure for a controller started with --insecure")]
    Plaintext(String),
    #[error("controller address `{0}` is https:// but --insecure asks for plaintext; use http:// with --insecure")]
    InsecureHttps(String),
    #[error("no enrollment token: pass --token or set `enrollment_token` in the config file")]
    NoToken,
    #[error(transparent)]
    EnrollToken(#[from] edgefleet_proto::tokens::TokenError),
    #[error("label `{0}` is not key=value")]
    Label(String),
    #[error("controller_key: {0}")]
    ControllerKey(EnrollmentError),
    #[error("the download limit must be a positive number of MB/s, not {0}")]
    DownloadLimit(f64),
    #[error("keep_versions must be at least 2 (the active version and one to roll back to)")]
    KeepVersions,
    #[error("the worker memory limit must be at least 1 MB")]
    WorkerMemoryLimit,
    #[error("cannot create data directory {}", path.display())]
    CreateDataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    ReadIdentity {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    WriteIdentity {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One address the controller answers at, and how connections reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerAddress {
    pub url: String,
    pub route: crate::proxy::Route,
}

/// Everything the daemon needs to run, already validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller address this config connects to, e.g. `https://controller.example:7070`:
    /// the first of `controllers`, or the one [`AgentConfig::at`] chose.
    pub controller: String,
    /// Every address given, in order (one, or one per replica): the agent moves to the next
    /// when a connection fails or breaks.
    pub controllers: Vec<ControllerAddress>,
    /// Plaintext to a controller started with `--insecure`: the shared token below and a
    /// self-chosen id instead of a certificate.
    pub insecure: bool,
    /// The shared token of an `--insecure` controller (empty otherwise).
    pub enrollment_token: String,
    /// A one-time token to enroll with, used when the agent holds no certificate yet.
    pub enroll_token: Option<edgefleet_proto::tokens::EnrollmentToken>,
    pub name: String,
    /// Whether `name` is only the hostname (no name was configured): a token bound to a name
    /// then gives the agent that name.
    pub name_is_hostname: bool,
    pub labels: BTreeMap<String, String>,
    /// Where the agent keeps its id, its models and its queue.
    pub data_dir: PathBuf,
    /// An explicit path to `libonnxruntime.so`; otherwise see [`crate::runtime_library`].
    pub onnxruntime_library: Option<PathBuf>,
    /// Where `/sys` and friends are read from (`/`; a fixture tree in tests).
    pub sensors_root: PathBuf,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub shutdown_grace: Duration,
    /// The controller's ed25519 public key, when pinned; otherwise the first one seen is kept.
    pub controller_key: Option<[u8; 32]>,
    /// Downloads are capped at this many bytes per second (None: no cap).
    pub download_limit: Option<f64>,
    /// An install that would leave less free disk than this is refused.
    pub min_free_disk_bytes: u64,
    /// Versions kept per model, the active one included (at least 2).
    pub keep_versions: usize,
    /// A worker whose resident memory passes this is stopped and its job fails (None: no cap).
    pub worker_memory_limit_bytes: Option<u64>,
    /// How connections reach `controller`: through an HTTP proxy (the config's `proxy`, or
    /// the environment's) or directly.
    pub route: crate::proxy::Route,
    /// The config file's `proxy` as written, for hosts other than the controller's (an object
    /// store the agent fetches from with presigned URLs).
    pub proxy_setting: Option<String>,
}

/// The config file as written (`/etc/edgefleet/agent.toml`); every field is optional and flags
/// win over it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The controller's address, or a list of them (one per replica), tried in turn.
    #[serde(default, deserialize_with = "one_or_many")]
    pub controller: Vec<String>,
    /// Plaintext to an `--insecure` controller.
    #[serde(default)]
    pub insecure: bool,
    pub enrollment_token: Option<String>,
    /// A one-time token from `edgefleet agents enroll`.
    pub enroll_token: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub data_dir: Option<PathBuf>,
    pub onnxruntime_library: Option<PathBuf>,
    /// The controller's public key (64 hex digits), to pin it instead of trusting the first seen.
    pub controller_key: Option<String>,
    /// Cap on model downloads, in megabytes per second.
    pub download_limit_mb_per_s: Option<f64>,
    /// Free disk (MB) an install must leave; default 100.
    pub min_free_disk_mb: Option<u64>,
    /// Versions kept per model for rollback, the active one included; default 2.
    pub keep_versions: Option<usize>,
    /// Stop a benchmark worker whose resident memory passes this many MB; default: no cap.
    pub worker_memory_limit_mb: Option<u64>,
    /// An HTTP proxy to reach the controller through (`http://[USER:PASSWORD@]HOST:PORT`), or
    /// `none` for none whatever `HTTPS_PROXY` says; default: the environment's
    /// (`https_proxy`/`HTTPS_PROXY`, `NO_PROXY`).
    pub proxy: Option<String>,
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Addresses;
    impl<'de> serde::de::Visitor<'de> for Addresses {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an address or a list of addresses")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut all = Vec::new();
            while let Some(address) = seq.next_element::<String>()? {
                all.push(address);
            }
            Ok(all)
        }
    }
    d.deserialize_any(Addresses)
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses the text of the file at `path` (named in errors, with the line).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().to_string(),
            }
        })
    }
}

/// Settings given on the command line (or their environment variables).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Every `--controller` given (none: the file's).
    pub controller: Vec<String>,
    pub insecure: bool,
    pub enrollment_token: Option<String>,
    pub enroll_token: Option<String>,
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub onnxruntime_library: Option<PathBuf>,
    pub sensors_root: Option<PathBuf>,
    pub download_limit_mb_per_s: Option<f64>,
    pub min_free_disk_mb: Option<u64>,
    pub worker_memory_limit_mb: Option<u64>,
}

impl AgentConfig {
    /// Merges the file (if any) with the flags, and checks the result.
    pub fn resolve(file: ConfigFile, flags: Overrides) -> Result<AgentConfig, ConfigError> {
        let urls = if flags.controller.is_empty() {
            file.controller
        } else {
            flags.controller
        };
        let insecure = flags.insecure || file.insecure;
        let mut controllers = Vec::with_capacity(urls.len());
        for url in urls {
            let url = url.trim().to_string();
            match (url.split_once("://").map(|(s, _)| s), insecure) {
                (Some("https"), false) | (Some("http"), true) => {}
                (Some("http"), false) => return Err(ConfigError::Plaintext(url)),
                (Some("https"), true) => return Err(ConfigError::InsecureHttps(url)),
                _ => return Err(ConfigError::ControllerScheme(url)),
            }
            let route =
                crate::proxy::route(&url, file.proxy.as_deref(), |name| std::env::var(name).ok())?;
            if !controllers.iter().any(|c: &ControllerAddress| c.url == url) {
                controllers.push(ControllerAddress { url, route });
            }
        }
        let first = controllers
            .first()
            .cloned()
            .ok_or(ConfigError::NoController)?;
        // Plaintext agents present the controller's shared token; TLS agents enroll instead.
        let enrollment_token = match flags.enrollment_token.or(file.enrollment_token) {
            Some(token) => token,
            None if insecure => return Err(ConfigError::NoToken),
            None => String::new(),
        };
        let enroll_token = flags
            .enroll_token
            .or(file.enroll_token)
            .filter(|t| !t.trim().is_empty())
            .map(|t| edgefleet_proto::tokens::EnrollmentToken::parse(&t))
            .transpose()?;
        let chosen_name = flags.name.or(file.name);
        let name_is_hostname = chosen_name.is_none();
        let name = match chosen_name {
            Some(name) => name,
            None => sysinfo::System::host_name().unwrap_or_else(|_| "edge-device".to_string()),
        };
        let mut labels = file.labels;
        for label in &flags.labels {
            let (k, v) = parse_label(label)?;
            labels.insert(k, v);
        }
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/edgefleet-agent"));
        let controller_key = file
            .controller_key
            .as_deref()
            .map(crate::enrollment::parse_key)
            .transpose()
            .map_err(ConfigError::ControllerKey)?;
        let download_limit = flags
            .download_limit_mb_per_s
            .or(file.download_limit_mb_per_s);
        if let Some(limit) = download_limit {
            if !(limit > 0.0 && limit.is_finite()) {
                return Err(ConfigError::DownloadLimit(limit));
            }
        }
        let keep_versions = file.keep_versions.unwrap_or(2);
        if keep_versions < 2 {
            return Err(ConfigError::KeepVersions);
        }
        let worker_memory_limit_mb = flags.worker_memory_limit_mb.or(file.worker_memory_limit_mb);
        if worker_memory_limit_mb == Some(0) {
            return Err(ConfigError::WorkerMemoryLimit);
        }
        Ok(AgentConfig {
            route: first.route,
            proxy_setting: file.proxy.clone(),
            controller_key,
            download_limit: download_limit.map(|mb| mb * 1e6),
            min_free_disk_bytes: flags
                .min_free_disk_mb
                .or(file.min_free_disk_mb)
                .unwrap_or(100)
                .saturating_mul(1_000_000),
            keep_versions,
            worker_memory_limit_bytes: worker_memory_limit_mb.map(|mb| mb.saturating_mul(1 << 20)),
            controller: first.url,
            controllers,
            insecure,
            enrollment_token,
            enroll_token,
            name,
            name_is_hostname,
            labels,
            data_dir,
            onnxruntime_library: flags.onnxruntime_library.or(file.onnxruntime_library),
            sensors_root: flags.sensors_root.unwrap_or_else(|| PathBuf::from("/")),
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            shutdown_grace: crate::DEFAULT_SHUTDOWN_GRACE,
        })
    }
}

impl AgentConfig {
    /// This config pointed at the controller address at `index` (modulo their number).
    pub fn at(&self, index: usize) -> AgentConfig {
        let chosen = &self.controllers[index % self.controllers.len()];
        AgentConfig {
            controller: chosen.url.clone(),
            route: chosen.route.clone(),
            ..self.clone()
        }
    }
}

/// Parses `key=value`.
pub fn parse_label(s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ConfigError::Label(s.to_string())),
    }
}

/// Creates the data folder if it is missing.
pub fn create_data_dir(data_dir: &Path) -> Result<(), ConfigError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ConfigError::CreateDataDir {
        path: data_dir.to_path_buf(),
        source,
    })
}

/// The id of an `--insecure` agent, created once and kept in `data_dir/agent-id` so the
/// controller recognises the device across restarts (a TLS agent's id is in its certificate).
pub fn load_or_create_identity(data_dir: &Path) -> Result<String, ConfigError> {
    create_data_dir(data_dir)?;
    let path = data_dir.join("agent-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ConfigError::ReadIdentity { path, source }),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id).map_err(|source| ConfigError::WriteIdentity {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| ConfigError::WriteIdentity { path, source })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_labels_merge() {
        let file: ConfigFile = toml::from_str(
            "controller = \"https://a:1\"\n[labels]\nsite = \"lab\"\nhw = \"rpi5\"\n",
        )
        .unwrap();
        let flags = Overrides {
            controller: vec!["https://b:2".into()],
            labels: vec!["site=store-42".into()],
            name: Some("gw".into()),
            ..Overrides::default()
        };
        let c = AgentConfig::resolve(file, flags).unwrap();
        assert_eq!(c.controller, "https://b:2");
        assert_eq!(c.labels["site"], "store-42");
        assert_eq!(c.labels["hw"], "rpi5");
        assert_eq!(c.name, "gw");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let flags = |controller: &str| Overrides {
            controller: vec![controller.into()],
            enrollment_token: Some("t".into()),
            ..Overrides::default()
        };
        let err = AgentConfig::resolve(ConfigFile::default(), flags("ctl:7070")).unwrap_err();
        assert!(err.to_string().contains("must start with http://"), "{err}");
        let err = AgentConfig::resolve(ConfigFile::default(), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("no controller address"), "{err}");
        // Plaintext only when asked for in so many words, and then with the shared token.
        let err =
            AgentConfig::resolve(ConfigFile::default(), flags("http://ctl:7070")).unwrap_err();
        assert!(err.to_string().contains("is plaintext"), "{err}");
        let insecure = |token: Option<&str>| Overrides {
            controller: vec!["http://ctl:7070".into()],
            insecure: true,
            enrollment_token: token.map(str::to_string),
            ..Overrides::default()
        };
        assert!(AgentConfig::resolve(ConfigFile::default(), insecure(Some("t"))).is_ok());
        let err = AgentConfig::resolve(ConfigFile::default(), insecure(None)).unwrap_err();
        assert!(err.to_string().contains("no enrollment token"), "{err}");
        let enroll = |token: &str| Overrides {
            controller: vec!["https://ctl:7070".into()],
            enroll_token: Some(token.into()),
            ..Overrides::default()
        };
        let good = edgefleet_proto::tokens::EnrollmentToken {
            secret: [1; 32],
            ca_sha256: "0".repeat(64),
        }
        .encode();
        assert!(AgentConfig::resolve(ConfigFile::default(), enroll(&good)).is_ok());
        let err = AgentConfig::resolve(ConfigFile::default(), enroll(&good[..good.len() - 1]))
            .unwrap_err();
        assert!(err.to_string().contains("checksum does not match"), "{err}");
        assert!(parse_label("novalue").is_err());
        assert!(toml::from_str::<ConfigFile>("controler = \"x\"").is_err());
    }

    #[test]
    fn a_list_of_controllers_is_kept_in_order_and_each_address_is_checked() {
        let resolve = |file: &str| {
            let file = ConfigFile::parse(Path::new("agent.toml"), file)?;
            AgentConfig::resolve(file, Overrides::default())
        };
        let c =
            resolve("controller = [\"https://a:1\", \"https://b:2\", \"https://a:1\"]\n").unwrap();
        let urls: Vec<&str> = c.controllers.iter().map(|a| a.url.as_str()).collect();
        assert_eq!(urls, ["https://a:1", "https://b:2"]);
        assert_eq!(c.controller, "https://a:1");
        assert_eq!(c.at(1).controller, "https://b:2");
        assert_eq!(c.at(2).controller, "https://a:1");
        // Flags replace the file's list rather than add to it.
        let flags = Overrides {
            controller: vec!["https://c:3".into(), "https://d:4".into()],
            ..Overrides::default()
        };
        let file =
            ConfigFile::parse(Path::new("agent.toml"), "controller = \"https://a:1\"\n").unwrap();
        let c = AgentConfig::resolve(file, flags).unwrap();
        assert_eq!(c.controllers.len(), 2);
        assert_eq!(c.controller, "https://c:3");
        let err = resolve("controller = [\"https://a:1\", \"b:2\"]\n").unwrap_err();
        assert!(err.to_string().contains("`b:2` must start with"), "{err}");
        let err = resolve("controller = []\n").unwrap_err();
        assert!(err.to_string().contains("no controller address"), "{err}");
        let err = resolve("controller = 7070\n").unwrap_err();
        assert!(
            err.to_string().contains("agent.toml:1: invalid type"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("an address or a list of addresses"),
            "{err}"
        );
    }

    #[test]
    fn identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path()).unwrap();
        let b = load_or_create_identity(dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 36);
    }
}
