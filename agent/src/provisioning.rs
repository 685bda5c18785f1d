//! `edgefleet-agent enroll`: takes a device from nothing to enrolled in one command. It checks
//! everything it will write before it asks the controller for anything, enrolls with the
//! one-time token, stores the certificate in the data folder, writes the agent's config file, and
//! starts the systemd service where there is one. It writes all of it or nothing.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::{AgentConfig, ConfigError, ConfigFile, Overrides};
use crate::credentials::{self, Credentials, CredentialsError};

/// The config file the packaged service reads.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgefleet/agent.toml";
/// The packaged service that `enroll` starts.
pub const SERVICE: &str = "edgefleet-agent.service";

/// What `edgefleet-agent enroll` was asked to do.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The config file to write (kept settings are merged in when it exists).
    pub config_path: PathBuf,
    /// Every `--controller` given (none: the existing file's).
    pub controller: Vec<String>,
    pub enroll_token: Option<String>,
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub data_dir: Option<PathBuf>,
    /// Enroll again (as a new agent) although the data folder already holds a certificate.
    pub force: bool,
}

/// Why enrolling did not happen; nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no enrollment token: pass --enroll-token TOKEN (from `edgefleet agents enroll` on the controller)")]
    NoToken,
    #[error("`enroll` is for a TLS controller (https://); an agent of an --insecure controller needs no enrollment: run it with --insecure --token")]
    Insecure,
    #[error("this device is already enrolled as {agent_id} ({}); pass --force to enroll again as a new agent", path.display())]
    AlreadyEnrolled { agent_id: String, path: PathBuf },
    #[error("cannot write {}: {source}", path.display())]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl ProvisionError {
    /// The exit status: 69 (EX_UNAVAILABLE) when the controller could not be reached, which may
    /// pass; 64 (EX_USAGE) for everything the caller has to change first.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProvisionError::Credentials(CredentialsError::Unreachable { .. }) => 69,
            _ => 64,
        }
    }
}

/// What enrolling left on the device.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub agent_id: String,
    pub name: String,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
}

/// Enrolls this device and writes its config; see the module documentation.
pub async fn enroll(request: EnrollRequest) -> Result<Provisioned, ProvisionError> {
    let existing = read_existing(&request.config_path)?;
    let file: ConfigFile = match &existing {
        Some(text) => ConfigFile::parse(&request.config_path, text)?,
        None => ConfigFile::default(),
    };
    // The token is used once and then forgotten: a later start of the daemon needs only the
    // certificate, so the config written below never holds it.
    let token_text = request
        .enroll_token
        .clone()
        .ok_or(ProvisionError::NoToken)?;
    let config = AgentConfig::resolve(
        file,
        Overrides {
            controller: request.controller.clone(),
            enroll_token: Some(token_text),
            name: request.name.clone(),
            labels: request.labels.clone(),
            data_dir: request.data_dir.clone(),
            ..Overrides::default()
        },
    )?;
    if config.insecure {
        return Err(ProvisionError::Insecure);
    }
    let token = config.enroll_token.clone().ok_or(ProvisionError::NoToken)?;
    // Folders made here are removed again if enrollment fails: everything or nothing.
    let made = missing_folders(&config.data_dir);
    crate::config::create_data_dir(&config.data_dir)?;
    let result = enroll_into(&request, existing.as_deref(), &config, &token).await;
    if result.is_err() {
        for dir in made.iter() {
            if std::fs::remove_dir(dir).is_err() {
                break; // not empty (or gone): leave it and what holds it
            }
        }
    }
    result
}

/// The folders of `path` that do not exist yet, deepest first.
fn missing_folders(path: &Path) -> Vec<std::path::PathBuf> {
    path.ancestors()
        .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Enrollment once the data folder exists: refuse a second identity, check what will be
/// written, spend the token, store the certificate, commit the config.
async fn enroll_into(
    request: &EnrollRequest,
    existing: Option<&str>,
    config: &AgentConfig,
    token: &edgefleet_proto::tokens::EnrollmentToken,
) -> Result<Provisioned, ProvisionError> {
    let held = Credentials::load(&config.data_dir)?;
    if let (Some(held), false) = (&held, request.force) {
        return Err(ProvisionError::AlreadyEnrolled {
            agent_id: held.agent_id.clone(),
            path: config.data_dir.join("identity.json"),
        });
    }
    // Everything that will be written is checked before the token is spent.
    probe_writable(&config.data_dir)?;
    let (text, holds_secret) = config_text(existing, request, config)?;
    let private_group = if holds_secret {
        Some(
            std::fs::metadata(&config.data_dir)
                .map(|m| m.gid())
                .map_err(|source| ProvisionError::NotWritable {
                    path: config.data_dir.clone(),
                    source,
                })?,
        )
    } else {
        None
    };
    let staged = StagedConfig::write(&request.config_path, &text, private_group)?;
    credentials::prefer_fastest_cipher();
    let (granted, granted_name) = credentials::request_certificate(config, token).await?;
    if let Err(e) = granted
        .store(&config.data_dir)
        .map_err(ProvisionError::from)
        .and_then(|()| give_to_data_dir_owner(&config.data_dir))
    {
        // Back to what was there: the earlier credentials (--force), or none.
        match &held {
            Some(earlier) => {
                let _ = earlier.store(&config.data_dir);
            }
            None => Credentials::remove(&config.data_dir),
        }
        return Err(e);
    }
    staged.commit()?;
    Ok(Provisioned {
        agent_id: granted.agent_id,
        name: granted_name,
        config_path: request.config_path.clone(),
        data_dir: config.data_dir.clone(),
    })
}

fn read_existing(path: &Path) -> Result<Option<String>, ProvisionError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

/// The config to write: the existing file's settings, with the controller, name, labels and
/// data folder given now, and without any enrollment token. A proxy that enrollment took from
/// the environment (`HTTPS_PROXY` in the shell that ran `enroll`) is written too, since the
/// service does not see that shell's environment; `true` when it holds credentials (the file
/// is then readable by root and the service's group only).
fn config_text(
    existing: Option<&str>,
    request: &EnrollRequest,
    config: &AgentConfig,
) -> Result<(String, bool), ProvisionError> {
    let mut table: toml::Table = match existing {
        // Already parsed once as a ConfigFile, so it is valid TOML.
        Some(text) => text.parse().unwrap_or_default(),
        None => toml::Table::new(),
    };
    table.remove("enroll_token");
    let urls: Vec<toml::Value> = config
        .controllers
        .iter()
        .map(|c| c.url.clone().into())
        .collect();
    let controller = match urls.as_slice() {
        [one] => one.clone(),
        _ => toml::Value::Array(urls),
    };
    table.insert("controller".into(), controller);
    let mut holds_secret = false;
    if let crate::proxy::Route::Proxy(proxy) = &config.route {
        if proxy.from_environment() && !table.contains_key("proxy") {
            table.insert("proxy".into(), proxy.url_with_credentials().into());
        }
    }
    if let Some(toml::Value::String(url)) = table.get("proxy") {
        holds_secret = url.contains('@');
    }
    if request.name.is_some() {
        table.insert("name".into(), config.name.clone().into());
    }
    table.insert(
        "data_dir".into(),
        config.data_dir.display().to_string().into(),
    );
    let labels: toml::Table = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::from(v.clone())))
        .collect();
    table.insert("labels".into(), labels.into());
    let body = toml::to_string(&table).map_err(|e| ProvisionError::NotWritable {
        path: request.config_path.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok((
        format!(
            "# Written by `edgefleet-agent enroll`. The agent's certificate is in data_dir; every\n\
             # setting is described in /usr/share/doc/edgefleet-agent/examples/agent.toml.\n{body}"
        ),
        holds_secret,
    ))
}

/// Fails early, with the folder's name, when the data folder cannot take a file.
fn probe_writable(dir: &Path) -> Result<(), ProvisionError> {
    let probe = dir.join(".enroll-probe");
    let result = std::fs::write(&probe, b"");
    let _ = std::fs::remove_file(&probe);
    result.map_err(|source| ProvisionError::NotWritable {
        path: dir.to_path_buf(),
        source,
    })
}

/// The packaged service runs as the data folder's owner (`edgefleet-agent`) while `enroll` runs
/// as root: the credentials written here go to that owner.
fn give_to_data_dir_owner(dir: &Path) -> Result<(), ProvisionError> {
    let not_writable = |path: &Path, source| ProvisionError::NotWritable {
        path: path.to_path_buf(),
        source,
    };
    let owner = std::fs::metadata(dir).map_err(|e| not_writable(dir, e))?;
    for name in Credentials::FILES {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| not_writable(&path, e))?;
        if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid()))
                .map_err(|e| not_writable(&path, e))?;
        }
    }
    Ok(())
}

/// A config file written beside its final name, renamed into place only once enrollment has
/// succeeded, and removed if it never is.
struct StagedConfig {
    staged: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl StagedConfig {
    /// With `private_group`, the file is 0640 and belongs to that group (the service's): it
    /// holds a proxy password.
    fn write(
        path: &Path,
        text: &str,
        private_group: Option<u32>,
    ) -> Result<StagedConfig, ProvisionError> {
        let not_writable = |source| ProvisionError::NotWritable {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(not_writable)?;
        }
        let staged = path.with_extension("toml.enrolling");
        let guard = StagedConfig {
            staged: staged.clone(),
            path: path.to_path_buf(),
            committed: false,
        };
        // Readable by the service's user: the file holds no secret (the token is not kept), or
        // only by its group when it holds a proxy password.
        let _ = std::fs::remove_file(&staged);
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if private_group.is_some() {
                    0o640
                } else {
                    0o644
                })
                .open(&staged)
                .map_err(not_writable)?
        };
        if let Some(gid) = private_group {
            std::os::unix::fs::chown(&staged, None, Some(gid)).map_err(not_writable)?;
        }
        file.write_all(text.as_bytes()).map_err(not_writable)?;
        file.sync_all().map_err(not_writable)?;
        Ok(guard)
    }

    fn commit(mut self) -> Result<(), ProvisionError> {
        std::fs::rename(&self.staged, &self.path).map_err(|source| {
            ProvisionError::NotWritable {
                path: self.path.clone(),
                source,
            }
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedConfig {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

/// Whether systemd manages this machine (it is PID 1 and the packaged unit can be started).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Enables and (re)starts the packaged service, so that it picks up the new certificate; the
/// reason in one line when systemctl refuses.
pub fn start_service() -> Result<(), String> {
    for args in [["enable", SERVICE], ["restart", SERVICE]] {
        let out = std::process::Command::new("systemctl")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run systemctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`systemctl {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> String {
        edgefleet_proto::tokens::EnrollmentToken {
            secret: [7; 32],
            ca_sha256: "0".repeat(64),
        }
        .encode()
    }

    fn request(dir: &Path, controller: &str, token: Option<String>) -> EnrollRequest {
        EnrollRequest {
            config_path: dir.join("etc/agent.toml"),
            controller: vec![controller.into()],
            enroll_token: token,
            name: None,
            labels: vec!["site=lab".into()],
            data_dir: Some(dir.join("data")),
            force: false,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_controller_that_does_not_answer_is_69_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Port 1: privileged, nothing of ours listens there (a port just closed could be taken
        // by a test beside this one).
        let port = 1;
        let err = runtime()
            .block_on(enroll(request(
                dir.path(),
                &format!("https://127.0.0.1:{port}"),
                Some(token()),
            )))
            .unwrap_err();
        assert_eq!(err.exit_code(), 69, "{err}");
        assert!(err.to_string().contains("cannot reach"), "{err}");
        assert!(!dir.path().join("etc/agent.toml").exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // The data folder enroll made is gone again: everything or nothing.
        assert!(!dir.path().join("data").exists());
    }

    #[test]
    fn bad_input_is_64_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let malformed = rt
            .block_on(enroll(request(
                dir.path(),
                "https://127.0.0.1:1",
                Some("efe1.nonsense".into()),
            )))
            .unwrap_err();
        assert_eq!(malformed.exit_code(), 64, "{malformed}");
        let missing = rt
            .block_on(enroll(request(dir.path(), "https://127.0.0.1:1", None)))
            .unwrap_err();
        assert_eq!(missing.exit_code(), 64);
        assert!(missing.to_string().contains("--enroll-token"), "{missing}");
        let plaintext = rt
            .block_on(enroll(request(
                dir.path(),
                "http://127.0.0.1:1",
                Some(token()),
            )))
            .unwrap_err();
        assert_eq!(plaintext.exit_code(), 64);
        assert!(!dir.path().join("etc").exists() && !dir.path().join("data").exists());
    }

    #[test]
    fn a_data_folder_it_cannot_write_is_64_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the data folder should be: no folder can be made there.
        std::fs::write(dir.path().join("data"), b"").unwrap();
        let err = runtime()
            .block_on(enroll(request(
                dir.path(),
                "https://127.0.0.1:1",
                Some(token()),
            )))
            .unwrap_err();
        assert_eq!(err.exit_code(), 64, "{err}");
        assert!(err.to_string().contains("data"), "{err}");
        assert!(!dir.path().join("etc/agent.toml").exists());
    }

    #[test]
    fn the_written_config_keeps_other_settings_and_drops_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let existing = "controller = \"https://old:1\"\nenroll_token = \"efe1.x\"\nkeep_versions = 3\n[labels]\nhw = \"rpi5\"\n";
        let req = request(dir.path(), "https://new:7070", Some(token()));
        let config = AgentConfig::resolve(
            ConfigFile::parse(Path::new("agent.toml"), existing).unwrap(),
            Overrides {
                controller: req.controller.clone(),
                enroll_token: req.enroll_token.clone(),
                labels: req.labels.clone(),
                data_dir: req.data_dir.clone(),
                ..Overrides::default()
            },
        )
        .unwrap();
        let (text, _) = config_text(Some(existing), &req, &config).unwrap();
        let back = ConfigFile::parse(Path::new("agent.toml"), &text).unwrap();
        assert_eq!(back.controller, ["https://new:7070"]);
        assert_eq!(back.keep_versions, Some(3));
        assert!(back.enroll_token.is_none(), "{text}");
        assert!(text.contains("controller = \"https://new:7070\""), "{text}");
        // Several replicas are written as a list, in the order given.
        let replicas = AgentConfig::resolve(
            ConfigFile::default(),
            Overrides {
                controller: vec!["https://r1:7070".into(), "https://r2:7070".into()],
                enroll_token: req.enroll_token.clone(),
                ..Overrides::default()
            },
        )
        .unwrap();
        let (listed, _) = config_text(Some(existing), &req, &replicas).unwrap();
        let listed = ConfigFile::parse(Path::new("agent.toml"), &listed).unwrap();
        assert_eq!(listed.controller, ["https://r1:7070", "https://r2:7070"]);
        assert_eq!(back.labels["hw"], "rpi5");
        assert_eq!(back.labels["site"], "lab");
        assert!(back.proxy.is_none(), "no proxy, none written: {text}");

        // A proxy from the shell's environment is written for the service, which will not see
        // that environment; with a password the file is marked as holding a secret.
        let mut proxied = config.clone();
        proxied.route = crate::proxy::route("https://new:7070", None, |name| {
            (name == "HTTPS_PROXY").then(|| "http://ops:p%40ss@10.0.0.9:3128".to_string())
        })
        .unwrap();
        let (text, secret) = config_text(Some(existing), &req, &proxied).unwrap();
        let back = ConfigFile::parse(Path::new("agent.toml"), &text).unwrap();
        assert!(secret, "{text}");
        let written = back.proxy.unwrap();
        match crate::proxy::route("https://new:7070", Some(&written), |_| None).unwrap() {
            crate::proxy::Route::Proxy(proxy) => {
                assert_eq!(proxy.to_string(), "http://ops:***@10.0.0.9:3128");
                assert_eq!(proxy.url_with_credentials(), written);
            }
            other => panic!("{other:?} from {written}"),
        }
    }

    #[test]
    fn a_config_holding_a_proxy_password_is_written_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let staged = StagedConfig::write(&path, "proxy = \"http://u:p@h:1\"\n", Some(gid)).unwrap();
        staged.commit().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
