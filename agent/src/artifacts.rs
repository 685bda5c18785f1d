//! The agent's content-addressed model store (`DATA/artifacts/<sha256>`) and the resumable fetch
//! that fills it: chunks are pulled one at a time, from the controller or with presigned range
//! GETs straight from its object store ([`presigned`]), each streamed in pieces appended to
//! `<sha256>.partial` as they arrive; a broken transfer resumes at the byte it reached, an
//! optional rate cap spaces the pulls, and a file is only renamed into place after its sha256 has
//! been verified.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use edgefleet_proto::v1::agent_link_client::AgentLinkClient;
use edgefleet_proto::v1::FetchArtifactRequest;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

mod presigned;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{0}` is not a sha256 digest")]
    BadDigest(String),
    #[error("artifact store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fetching artifact {sha256}: {message}")]
    Transfer { sha256: String, message: String },
    #[error("artifact {expected} failed verification: its bytes hash to {actual}; discarded")]
    Corrupt { expected: String, actual: String },
}

/// A transfer that delivers nothing for this long is broken.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes asked for per pull: what a cut can lose at most.
pub const CHUNK_BYTES: u64 = 4 << 20;

/// Where verified artifacts live on the device.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
    /// Download cap in bytes per second (None: as fast as the link goes).
    rate_limit: Option<f64>,
    /// The config file's proxy setting; with the environment's (`HTTPS_PROXY`, `NO_PROXY`) it
    /// decides, per object store host, how presigned fetches get there.
    proxy_setting: Option<String>,
    /// The client for presigned URLs and the proxy it goes through, made on first use and
    /// kept (with its connections) while the route stays the same.
    http: std::sync::Arc<std::sync::Mutex<Option<RoutedClient>>>,
}

/// An HTTP client and the proxy it goes through (`None`: direct).
type RoutedClient = (Option<crate::proxy::Proxy>, reqwest::Client);

/// What one `ensure` did.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    /// Bytes received from the controller or the object store (0 when the artifact was held
    /// already).
    pub bytes: u64,
}

impl ArtifactStore {
    pub fn open(dir: &Path) -> Result<ArtifactStore, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(ArtifactStore {
            dir: dir.to_path_buf(),
            rate_limit: None,
            proxy_setting: None,
            http: Default::default(),
        })
    }

    /// The config file's proxy setting (`None`: the environment's, as for the controller).
    pub fn with_proxy_setting(mut self, setting: Option<String>) -> ArtifactStore {
        self.proxy_setting = setting;
        self
    }

    /// The proxy a presigned URL is fetched through: the config's or the environment's, unless
    /// `NO_PROXY` covers the object store's host (decided as for the controller's host).
    fn proxy_for(
        &self,
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::proxy::Proxy>, String> {
        let route = crate::proxy::route(
            &presigned::without_query(url),
            self.proxy_setting.as_deref(),
            env,
        )
        .map_err(|e| e.to_string())?;
        Ok(match route {
            crate::proxy::Route::Proxy(proxy) => Some(proxy),
            _ => None,
        })
    }

    /// The client a presigned URL is fetched with.
    fn http_client(&self, url: &str) -> Result<reqwest::Client, String> {
        let proxy = self.proxy_for(url, |name| std::env::var(name).ok())?;
        let mut held = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((for_proxy, client)) = held.as_ref() {
            if *for_proxy == proxy {
                return Ok(client.clone());
            }
        }
        crate::credentials::prefer_fastest_cipher();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(STALL_TIMEOUT)
            .no_proxy();
        if let Some(proxy) = &proxy {
            builder = builder.proxy(
                proxy
                    .for_http_client()
                    .map_err(|e| e.without_url().to_string())?,
            );
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {}", e.without_url()))?;
        *held = Some((proxy, client.clone()));
        Ok(client)
    }

    /// Caps downloads at this many bytes per second.
    pub fn with_rate_limit(mut self, bytes_per_s: Option<f64>) -> ArtifactStore {
        self.rate_limit = bytes_per_s.filter(|r| *r > 0.0);
        self
    }

    /// The folder the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes what a broken transfer left of an artifact.
    pub fn discard_partial(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{sha256}.partial")));
    }

    /// How many bytes of an artifact a broken transfer left (0 when none).
    pub fn partial_len(&self, sha256: &str) -> u64 {
        std::fs::metadata(self.dir.join(format!("{sha256}.partial"))).map_or(0, |m| m.len())
    }

    /// Bytes still to fetch for an artifact of `size` bytes (a partial transfer counts).
    pub fn missing_bytes(&self, sha256: &str, size: u64) -> u64 {
        if self.contains(sha256) {
            return 0;
        }
        let partial =
            std::fs::metadata(self.dir.join(format!("{sha256}.partial"))).map_or(0, |m| m.len());
        size.saturating_sub(partial)
    }

    /// Deletes a verified artifact (no longer needed by any installed version).
    pub fn remove(&self, sha256: &str) {
        if let Ok(path) = self.path(sha256) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The path of a verified artifact (which may not exist yet).
    pub fn path(&self, sha256: &str) -> Result<PathBuf, ArtifactError> {
        check_digest(sha256)?;
        Ok(self.dir.join(sha256))
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_ok_and(|p| p.is_file())
    }

    /// Digests of every verified artifact held.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| check_digest(name).is_ok())
            .collect();
        out.sort();
        out
    }

    /// Makes sure the artifact is held, fetching what is missing from the controller, chunk by
    /// chunk, and returns its path.
    pub async fn ensure(
        &self,
        client: &mut AgentLinkClient<Channel>,
        agent_id: &str,
        sha256: &str,
    ) -> Result<Fetched, ArtifactError> {
        let final_path = self.path(sha256)?;
        if final_path.is_file() {
            return Ok(Fetched {
                path: final_path,
                bytes: 0,
            });
        }
        let partial = self.dir.join(format!("{sha256}.partial"));
        let io = |source| ArtifactError::Io {
            path: partial.clone(),
            source,
        };
        let transfer = |message: String| ArtifactError::Transfer {
            sha256: sha256.to_string(),
            message,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .map_err(io)?;
        let offset = file.metadata().map_err(io)?.len();
        // The digest is computed as bytes arrive; a resumed transfer first hashes what it had.
        let mut hasher = Sha256::new();
        if offset > 0 {
            tracing::info!(%sha256, offset, "resuming artifact transfer");
            let held = partial.clone();
            hasher = tokio::task::spawn_blocking(move || hash_into(hasher, &held))
                .await
                .expect("hashing task panicked")
                .map_err(io)?;
        }
        let mut sink = Sink {
            file: &mut file,
            hasher: &mut hasher,
            offset,
            received: 0,
            started: tokio::time::Instant::now(),
            rate_limit: self.rate_limit,
        };
        // Where from: the object store, with a presigned URL the controller hands out, or the
        // controller itself (also when it is older than LocateArtifact).
        let pulled = match presigned::locate(client, agent_id, sha256).await {
            Ok(location) if !location.url.is_empty() => match self.http_client(&location.url) {
                Ok(http) => {
                    presigned::pull(&http, client, agent_id, sha256, location, &mut sink).await
                }
                Err(message) => Err(PullError::Transfer(message)),
            },
            Ok(_) => pull_from_controller(client, agent_id, sha256, &mut sink).await,
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                pull_from_controller(client, agent_id, sha256, &mut sink).await
            }
            Err(status) => Err(PullError::Transfer(status.message().to_string())),
        };
        pulled.map_err(|e| match e {
            PullError::Io(source) => io(source),
            PullError::Transfer(message) => transfer(message),
        })?;
        let received = sink.received;
        file.sync_all().map_err(io)?;
        drop(file);

        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(ArtifactError::Corrupt {
                expected: sha256.to_string(),
                actual,
            });
        }
        std::fs::rename(&partial, &final_path).map_err(io)?;
        Ok(Fetched {
            path: final_path,
            bytes: received,
        })
    }
}

/// Why one pull of an artifact stopped.
pub(crate) enum PullError {
    /// The device's own disk.
    Io(std::io::Error),
    /// The controller or the object store: the reason, never a presigned URL's signature.
    Transfer(String),
}

impl From<std::io::Error> for PullError {
    fn from(e: std::io::Error) -> Self {
        PullError::Io(e)
    }
}

/// Where a transfer's bytes go: appended to the partial file and hashed as they arrive, with the
/// optional download cap applied between pulls.
pub(crate) struct Sink<'a> {
    file: &'a mut std::fs::File,
    hasher: &'a mut Sha256,
    /// Bytes the partial file holds.
    pub(crate) offset: u64,
    /// Bytes received by this transfer.
    pub(crate) received: u64,
    started: tokio::time::Instant,
    rate_limit: Option<f64>,
}

impl Sink<'_> {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        write_and_hash(self.file, self.hasher, bytes)?;
        self.offset += bytes.len() as u64;
        self.received += bytes.len() as u64;
        Ok(())
    }

    /// Waits as long as the download cap asks before the next pull.
    pub(crate) async fn pace(&self) {
        if let Some(rate) = self.rate_limit {
            let due =
                self.started + std::time::Duration::from_secs_f64(self.received as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Pulls an artifact through the controller, chunk after chunk from the byte the partial file
/// reached.
async fn pull_from_controller(
    client: &mut AgentLinkClient<Channel>,
    agent_id: &str,
    sha256: &str,
    sink: &mut Sink<'_>,
) -> Result<(), PullError> {
    use PullError::Transfer;
    let stalled = || Transfer(format!("no data for {} s", STALL_TIMEOUT.as_secs()));
    let mut total = None;
    loop {
        let request = client.fetch_artifact(FetchArtifactRequest {
            sha256: sha256.to_string(),
            offset: sink.offset,
            agent_id: agent_id.to_string(),
            max_bytes: CHUNK_BYTES,
        });
        let mut pieces = tokio::time::timeout(STALL_TIMEOUT, request)
            .await
            .map_err(|_| stalled())?
            .map_err(|s| Transfer(s.message().to_string()))?
            .into_inner();
        let chunk_start = sink.offset;
        // Each piece is written as it arrives; the next chunk is asked for once this one is
        // written, so a cut loses at most the chunk in flight.
        while let Some(piece) = tokio::time::timeout(STALL_TIMEOUT, pieces.message())
            .await
            .map_err(|_| stalled())?
            .map_err(|s| Transfer(s.message().to_string()))?
        {
            if piece.offset != sink.offset {
                return Err(Transfer(format!(
                    "controller sent bytes from offset {} but the file has {}",
                    piece.offset, sink.offset
                )));
            }
            sink.write(&piece.data)?;
            total = Some(piece.total_size);
        }
        let Some(total) = total else {
            return Err(Transfer("the controller sent no bytes".into()));
        };
        if sink.offset == chunk_start || sink.offset >= total {
            return Ok(());
        }
        sink.pace().await;
    }
}

/// Appends bytes to a file and feeds them to a hasher, a slice at a time so each slice is still
/// in the CPU cache for the second pass: with 20 agents on 2 cores, 64 KiB slices fetched at
/// 760 MB/s and 1 MiB ones at 560 (tests/e2e/examples/distribution.rs).
fn write_and_hash(
    file: &mut std::fs::File,
    hasher: &mut Sha256,
    bytes: &[u8],
) -> std::io::Result<()> {
    for slice in bytes.chunks(WRITE_SLICE_BYTES) {
        hasher.update(slice);
        file.write_all(slice)?;
    }
    Ok(())
}

/// See [`write_and_hash`].
const WRITE_SLICE_BYTES: usize = 64 << 10;

/// Refuses anything but 64 lowercase hex digits, so a digest can never name another path.
fn check_digest(s: &str) -> Result<(), ArtifactError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ArtifactError::BadDigest(s.to_string()))
    }
}

/// The hex sha256 of a file's bytes.
pub fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(hash_into(Sha256::new(), path)?.finalize()))
}

/// Feeds a file's bytes to a hasher.
fn hash_into(mut hasher: Sha256, path: &Path) -> std::io::Result<Sha256> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_store_is_reached_through_the_proxy_unless_no_proxy_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url = "https://s3.example.com/bucket/models/abc?X-Amz-Signature=f9";
        let store = ArtifactStore::open(dir.path()).unwrap();
        let through = store
            .proxy_for(url, env(&[("HTTPS_PROXY", "http://proxy.lan:3128")]))
            .unwrap();
        assert_eq!(through.unwrap().to_string(), "http://proxy.lan:3128");
        let excluded = env(&[
            ("HTTPS_PROXY", "http://proxy.lan:3128"),
            ("NO_PROXY", ".example.com"),
        ]);
        assert!(store.proxy_for(url, excluded).unwrap().is_none());
        assert!(store.proxy_for(url, env(&[])).unwrap().is_none());
        // The config's own proxy, and `none` in it, win over the environment.
        let configured = ArtifactStore::open(dir.path())
            .unwrap()
            .with_proxy_setting(Some("http://cfg.lan:8080".into()));
        assert_eq!(
            configured
                .proxy_for(url, env(&[]))
                .unwrap()
                .unwrap()
                .to_string(),
            "http://cfg.lan:8080"
        );
        let none = ArtifactStore::open(dir.path())
            .unwrap()
            .with_proxy_setting(Some("none".into()));
        let env_proxy = env(&[("HTTPS_PROXY", "http://proxy.lan:3128")]);
        assert!(none.proxy_for(url, env_proxy).unwrap().is_none());
    }

    #[test]
    fn digests_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        for bad in ["../etc/passwd", "", "ABC", &"g".repeat(64), &"A".repeat(64)] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
        assert!(store.path(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn list_shows_only_verified_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let sha = "b".repeat(64);
        std::fs::write(dir.path().join(&sha), b"x").unwrap();
        std::fs::write(dir.path().join(format!("{}.partial", "c".repeat(64))), b"x").unwrap();
        assert_eq!(store.list(), vec![sha.clone()]);
        assert!(store.contains(&sha));
    }

    #[test]
    fn file_hash_matches_known_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_of_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
