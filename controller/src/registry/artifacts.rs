//! Where the controller keeps artifact bytes: the content-addressed folder in its data directory
//! (the default, [`ArtifactDir`]) or an S3-compatible object store (`serve --artifacts
//! s3://BUCKET/PREFIX`). Either way an upload is received into a temporary file in the data
//! directory, checked, and only then stored under its sha256: in an object store by a multipart
//! upload, which S3 makes visible only when it completes (a failed one is aborted; one the
//! controller could not abort, killed or with the store gone, is left to the bucket's lifecycle
//! rule), so no half-written object ever carries an artifact's name. With an object store, agents fetch the
//! bytes straight from it with short-lived presigned range-GET URLs (`--artifact-delivery
//! presigned`, the default there) or through the controller as before (`proxy`).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::artifact_cache::{ArtifactCache, Cached};
use super::artifact_dir::{ArtifactDir, Upload};

/// Parts of a multipart upload (S3 wants at least 5 MiB for every part but the last).
const PART_BYTES: usize = 8 << 20;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// How long a presigned URL stays valid unless `serve --presigned-url-lifetime-s` says otherwise:
/// long enough for a 4 MiB range on a slow link, short enough that a leaked URL is soon useless.
pub const DEFAULT_URL_LIFETIME: Duration = Duration::from_secs(300);

/// How agents get an object store's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// Agents fetch from the object store with presigned URLs the controller hands out.
    Presigned,
    /// Agents fetch through the controller (for object stores devices cannot reach).
    Proxy,
}

/// Where artifacts are kept, as `serve` was told.
#[derive(Debug, Clone)]
pub struct ArtifactsConfig {
    /// `s3://BUCKET[/PREFIX]`.
    pub url: String,
    /// The S3 endpoint for a store other than AWS (`http://` allowed), else `AWS_ENDPOINT_URL`
    /// or AWS itself.
    pub endpoint: Option<String>,
    /// The region, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    pub delivery: Delivery,
    pub url_lifetime: Duration,
    /// An access key and secret given here (embedding, tests) rather than by `AWS_*` variables,
    /// which is how `serve` takes them.
    pub credentials: Option<(String, String)>,
    /// Room for the controller's own copies of the artifacts it sends agents itself
    /// (`serve --artifact-cache-mib`; 0: none, every chunk is read from the store).
    pub cache_bytes: u64,
}

/// Why artifact bytes could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("artifact folder: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store {store}: {message}")]
    Remote { store: String, message: String },
    #[error("{0}")]
    Config(String),
}

/// The controller's artifact bytes.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// Where uploads arrive (and, without an object store, where artifacts live).
    dir: ArtifactDir,
    bucket: Option<Arc<Bucket>>,
    /// Copies of object-store artifacts this controller sends agents itself.
    cache: Option<Arc<ArtifactCache>>,
}

/// An S3 bucket (and key prefix) holding artifacts as `PREFIX/<sha256>`.
#[derive(Debug)]
struct Bucket {
    s3: AmazonS3,
    prefix: String,
    /// `s3://BUCKET/PREFIX`, for messages and logs.
    url: String,
    delivery: Delivery,
    url_lifetime: Duration,
}

/// A presigned URL an agent fetches an artifact from.
#[derive(Debug, Clone)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_unix_ms: u64,
}

impl Artifacts {
    /// Artifacts in the data directory's folder.
    pub fn in_folder(root: &Path) -> std::io::Result<Artifacts> {
        Ok(Artifacts {
            dir: ArtifactDir::open(root)?,
            bucket: None,
            cache: None,
        })
    }

    /// Artifacts in an object store; uploads still arrive in `staging` first.
    pub fn in_object_store(
        staging: &Path,
        config: &ArtifactsConfig,
    ) -> Result<Artifacts, ArtifactStoreError> {
        let (bucket_name, prefix) = parse_s3_url(&config.url)?;
        // The HTTP client's TLS uses the ring provider, as the rest of the controller does; the
        // first install in a process wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
        // AWS_ENDPOINT_URL and the rest of the usual variables; flags override.
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket_name);
        if let Some((key, secret)) = &config.credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let endpoint = config
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(endpoint) = &endpoint {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false);
        }
        let region = config
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        // A store that is down fails an upload in seconds, not after object_store's default
        // three minutes of retries; a slow link still gets two minutes per part.
        let retry = object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        use object_store::aws::AmazonS3ConfigKey::Client;
        use object_store::ClientConfigKey::{AllowHttp, ConnectTimeout, Timeout};
        builder = builder
            .with_config(Client(ConnectTimeout), "5s")
            .with_config(Client(Timeout), "120s");
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_config(Client(AllowHttp), "true");
        }
        let s3 = builder
            .with_retry(retry)
            .with_region(region)
            .build()
            .map_err(|e| ArtifactStoreError::Config(format!("--artifacts {}: {e}", config.url)))?;
        Ok(Artifacts {
            dir: ArtifactDir::open(staging)?,
            bucket: Some(Arc::new(Bucket {
                s3,
                prefix,
                url: config.url.clone(),
                delivery: config.delivery,
                url_lifetime: config.url_lifetime,
            })),
            cache: None,
        })
    }

    /// Keeps copies of the object store's artifacts that agents fetch through this controller
    /// in `root`, up to `max_bytes`, so that each is read from the store once (not once per
    /// agent and chunk). Without an object store the artifacts are local already.
    pub fn with_cache(mut self, root: &Path, max_bytes: u64) -> std::io::Result<Artifacts> {
        if self.bucket.is_some() && max_bytes > 0 {
            self.cache = Some(Arc::new(ArtifactCache::open(root, max_bytes)?));
        }
        Ok(self)
    }

    /// Where artifacts are kept, for logs and messages.
    pub fn describe(&self) -> String {
        match &self.bucket {
            Some(b) => b.url.clone(),
            None => self.dir.root().display().to_string(),
        }
    }

    /// Whether agents fetch from the object store directly.
    pub fn presigned_delivery(&self) -> bool {
        self.bucket
            .as_ref()
            .is_some_and(|b| b.delivery == Delivery::Presigned)
    }

    /// A new upload, received into a temporary file.
    pub fn begin(&self) -> std::io::Result<Upload> {
        self.dir.begin()
    }

    /// Stores a finished upload under its sha256 and returns the digest. Into an object store the
    /// file goes as a multipart upload unless the same bytes are there already; a failed one is
    /// aborted, so nothing is left under the name.
    pub async fn commit(&self, upload: Upload) -> Result<String, ArtifactStoreError> {
        let Some(bucket) = &self.bucket else {
            let dir = self.dir.clone();
            return tokio::task::spawn_blocking(move || dir.commit(upload))
                .await
                .map_err(std::io::Error::other)?
                .map_err(ArtifactStoreError::Io);
        };
        let (sha256, upload) = tokio::task::spawn_blocking(move || {
            let mut upload = upload;
            upload.finish().map(|sha256| (sha256, upload))
        })
        .await
        .map_err(std::io::Error::other)??;
        let location = bucket.location(&sha256);
        if let Ok(meta) = bucket.s3.head(&location).await {
            if meta.size == upload.size {
                return Ok(sha256);
            }
        }
        // In a task of its own: a client that goes away mid-upload drops this call, and the
        // upload must still complete or be aborted, not be dropped half-way.
        let bucket = Arc::clone(bucket);
        tokio::spawn(async move {
            let uploaded = bucket.upload_file(upload.tmp_path(), &location).await;
            // Dropping the upload removes its temporary file.
            drop(upload);
            uploaded.map(|()| sha256)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Deletes an artifact no version uses any more; returns the bytes freed (0 when it was not
    /// there or could not be deleted, which is logged).
    pub async fn remove(&self, sha256: &str) -> u64 {
        if let Some(cache) = &self.cache {
            cache.remove(sha256);
        }
        let Some(bucket) = &self.bucket else {
            let Some(path) = self.dir.path(sha256) else {
                return 0;
            };
            let freed = std::fs::metadata(&path).map_or(0, |m| m.len());
            return match std::fs::remove_file(path) {
                Ok(()) => freed,
                Err(_) => 0,
            };
        };
        let location = bucket.location(sha256);
        let size = match bucket.s3.head(&location).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return 0,
            Err(e) => {
                tracing::warn!(%sha256, error = %one_line(&e), "cannot delete an unused artifact from the object store; it stays");
                return 0;
            }
        };
        match bucket.s3.delete(&location).await {
            Ok(()) => size,
            Err(e) => {
                tracing::warn!(%sha256, error = %one_line(&e), "cannot delete an unused artifact from the object store; it stays");
                0
            }
        }
    }

    /// The file of a stored artifact, when artifacts live in the data folder.
    pub fn local_path(&self, sha256: &str) -> Option<PathBuf> {
        match self.bucket {
            Some(_) => None,
            None => self.dir.path(sha256),
        }
    }

    /// The opened local file with the bytes of artifact `sha256` (`size` bytes) to send an
    /// agent: the data folder's, or the cache's copy of the object store's, made now if need be
    /// (opened here, so that an eviction after this cannot take it away). `None`: read it from
    /// the store range by range (no cache, one too small for it, or a copy that could not be
    /// made, which is logged).
    pub async fn local_file(
        &self,
        sha256: &str,
        size: u64,
    ) -> Option<std::io::Result<std::fs::File>> {
        let Some(bucket) = &self.bucket else {
            return self.dir.path(sha256).map(std::fs::File::open);
        };
        let cache = self.cache.as_ref()?;
        let (bucket, location) = (Arc::clone(bucket), bucket.location(sha256));
        let read = move |range: Range<u64>| {
            let (bucket, location) = (Arc::clone(&bucket), location.clone());
            async move {
                bucket
                    .s3
                    .get_range(&location, range)
                    .await
                    .map_err(|e| one_line(&e))
            }
        };
        let opened = match cache.file(sha256, size, read).await {
            // Opened now: evicted since, this request reads from the store.
            Ok(Cached::At(path)) => std::fs::File::open(&path).ok(),
            Ok(Cached::TooLarge) => None,
            Err(e) => {
                tracing::warn!(%sha256, error = %e, "cannot keep a copy of an artifact; agents read it from the object store directly");
                None
            }
        };
        if opened.is_none() {
            crate::metrics::artifact_cache("bypassed");
        }
        opened.map(Ok)
    }

    /// Bytes `range` of a stored artifact.
    pub async fn read(&self, sha256: &str, range: Range<u64>) -> Result<Bytes, ArtifactStoreError> {
        let Some(bucket) = &self.bucket else {
            let path = self
                .dir
                .path(sha256)
                .ok_or_else(|| ArtifactStoreError::Config(format!("`{sha256}` is not a digest")))?;
            let mut file = tokio::fs::File::open(path).await?;
            use tokio::io::AsyncSeekExt;
            file.seek(std::io::SeekFrom::Start(range.start)).await?;
            let mut out = Vec::with_capacity((range.end - range.start) as usize);
            file.take(range.end - range.start)
                .read_to_end(&mut out)
                .await?;
            return Ok(out.into());
        };
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        bucket
            .s3
            .get_range(&bucket.location(sha256), range)
            .await
            .map_err(|e| bucket.error(e))
    }

    /// The size of a stored artifact (`None`: not stored).
    pub async fn size(&self, sha256: &str) -> Result<Option<u64>, ArtifactStoreError> {
        let Some(bucket) = &self.bucket else {
            return Ok(self
                .dir
                .path(sha256)
                .and_then(|p| std::fs::metadata(p).ok())
                .map(|m| m.len()));
        };
        match bucket.s3.head(&bucket.location(sha256)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(bucket.error(e)),
        }
    }

    /// A presigned GET URL for an artifact, valid for the configured lifetime; `None` unless
    /// agents fetch from an object store directly.
    pub async fn presigned_url(
        &self,
        sha256: &str,
    ) -> Result<Option<PresignedUrl>, ArtifactStoreError> {
        let Some(bucket) = self
            .bucket
            .as_ref()
            .filter(|b| b.delivery == Delivery::Presigned)
        else {
            return Ok(None);
        };
        let expires_unix_ms =
            crate::clock::now_ms().max(0) as u64 + bucket.url_lifetime.as_millis() as u64;
        let url = bucket
            .s3
            .signed_url(
                object_store::signer::Method::GET,
                &bucket.location(sha256),
                bucket.url_lifetime,
            )
            .await
            .map_err(|e| bucket.error(e))?;
        Ok(Some(PresignedUrl {
            url: url.to_string(),
            expires_unix_ms,
        }))
    }

    /// Copies a file into the store under its sha256 (for `store migrate`); returns whether it
    /// was uploaded (false: the same bytes were there).
    pub async fn put_file(&self, sha256: &str, file: &Path) -> Result<bool, ArtifactStoreError> {
        let size = std::fs::metadata(file)?.len();
        if self.size(sha256).await? == Some(size) {
            return Ok(false);
        }
        match &self.bucket {
            Some(bucket) => bucket.upload_file(file, &bucket.location(sha256)).await?,
            None => {
                let mut upload = self.dir.begin()?;
                let mut from = std::fs::File::open(file)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = std::io::Read::read(&mut from, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    upload.write(&buf[..n])?;
                }
                self.dir.commit(upload)?;
            }
        }
        Ok(true)
    }

    /// The sha256 of a stored artifact's bytes, read back in full (for `store migrate`'s check).
    pub async fn hash(&self, sha256: &str) -> Result<String, ArtifactStoreError> {
        use sha2::{Digest, Sha256};
        let size = self.size(sha256).await?.unwrap_or(0);
        let mut hasher = Sha256::new();
        let mut at = 0;
        while at < size {
            let end = (at + PART_BYTES as u64).min(size);
            hasher.update(self.read(sha256, at..end).await?);
            at = end;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

impl Bucket {
    fn location(&self, sha256: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(sha256)
        } else {
            ObjectPath::from(format!("{}/{sha256}", self.prefix))
        }
    }

    fn error(&self, e: object_store::Error) -> ArtifactStoreError {
        ArtifactStoreError::Remote {
            store: self.url.clone(),
            message: one_line(&e),
        }
    }

    /// Uploads a file in parts; on any failure the multipart upload is aborted.
    async fn upload_file(
        &self,
        file: &Path,
        location: &ObjectPath,
    ) -> Result<(), ArtifactStoreError> {
        let multipart = self
            .s3
            .put_multipart(location)
            .await
            .map_err(|e| self.error(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(multipart, PART_BYTES);
        let mut file = match tokio::fs::File::open(file).await {
            Ok(f) => f,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e.into());
            }
        };
        let mut buf = vec![0u8; PART_BYTES];
        loop {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.error(e));
            }
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            };
            if n == 0 {
                break;
            }
            writer.write(&buf[..n]);
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        writer.finish().await.map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// `s3://BUCKET[/PREFIX]` → (bucket, prefix without slashes at either end).
fn parse_s3_url(url: &str) -> Result<(String, String), ArtifactStoreError> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        ArtifactStoreError::Config(format!(
            "--artifacts {url}: expected s3://BUCKET/PREFIX (the default keeps artifacts in the data directory)"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(ArtifactStoreError::Config(format!(
            "--artifacts {url}: no bucket named"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// An object store error on one line, its sources included (they carry the HTTP status and the
/// store's own error code).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_test_s3::S3Server;

    fn config(s3: &S3Server, secret: &str, lifetime: Duration) -> ArtifactsConfig {
        ArtifactsConfig {
            url: s3.url("fleet/artifacts"),
            endpoint: Some(s3.endpoint()),
            region: None,
            delivery: Delivery::Presigned,
            url_lifetime: lifetime,
            credentials: Some((s3.access_key().into(), secret.into())),
            cache_bytes: 0,
        }
    }

    async fn upload(artifacts: &Artifacts, bytes: &[u8]) -> Result<String, ArtifactStoreError> {
        let mut upload = artifacts.begin().unwrap();
        for piece in bytes.chunks(1 << 20) {
            upload.write(piece).unwrap();
        }
        artifacts.commit(upload).await
    }

    fn staged(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_lands_whole_under_its_digest_and_its_presigned_urls_are_checked() {
        let s3 = S3Server::start();
        let staging = tempfile::tempdir().unwrap();
        let lifetime = Duration::from_secs(2);
        let artifacts =
            Artifacts::in_object_store(staging.path(), &config(&s3, s3.secret_key(), lifetime))
                .unwrap();
        // Three parts of a multipart upload: 8 + 8 + 4 MiB.
        let bytes: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
        let sha = upload(&artifacts, &bytes).await.unwrap();
        let key = format!("fleet/artifacts/{sha}");
        assert_eq!(s3.objects("fleet"), vec![(key.clone(), bytes.len() as u64)]);
        assert!(
            staged(staging.path()).is_empty(),
            "the staged upload is removed"
        );
        assert_eq!(
            artifacts.size(&sha).await.unwrap(),
            Some(bytes.len() as u64)
        );
        assert_eq!(artifacts.hash(&sha).await.unwrap(), sha);
        let range = artifacts.read(&sha, 9 << 20..(9 << 20) + 5).await.unwrap();
        assert_eq!(&range[..], &bytes[9 << 20..(9 << 20) + 5]);
        // The same bytes again: nothing new.
        assert_eq!(upload(&artifacts, &bytes).await.unwrap(), sha);
        assert_eq!(s3.objects("fleet").len(), 1);

        let url = artifacts.presigned_url(&sha).await.unwrap().unwrap().url;
        assert!(
            url.starts_with(&format!("{}/edgefleet/{key}?", s3.endpoint())),
            "{url}"
        );
        let http = reqwest::Client::new();
        let get = |url: String| {
            let http = http.clone();
            async move {
                let r = http
                    .get(url)
                    .header("Range", "bytes=100-199")
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            }
        };
        let (status, body) = get(url.clone()).await;
        assert_eq!((status, &body[..]), (206, &bytes[100..200]));
        // A URL changed by anyone (here: a longer lifetime) no longer matches its signature.
        let tampered = url.replace("X-Amz-Expires=2", "X-Amz-Expires=3600");
        assert_ne!(tampered, url);
        assert_eq!(get(tampered).await.0, 403);
        // Signed with another secret: refused.
        let forged =
            Artifacts::in_object_store(staging.path(), &config(&s3, "not-the-secret", lifetime))
                .unwrap()
                .presigned_url(&sha)
                .await
                .unwrap()
                .unwrap()
                .url;
        assert_eq!(get(forged).await.0, 403);
        // Past its lifetime: refused.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, _) = get(url.clone()).await;
            if status == 403 {
                break;
            }
            assert_eq!(status, 206);
            assert!(
                std::time::Instant::now() < deadline,
                "the object store refuses a URL past its 2 s lifetime within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        assert_eq!(artifacts.remove(&sha).await, bytes.len() as u64);
        assert!(s3.objects("fleet").is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_controller_sending_artifacts_itself_reads_each_from_the_store_once() {
        let mut s3 = S3Server::start();
        let staging = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let mut settings = config(&s3, s3.secret_key(), DEFAULT_URL_LIFETIME);
        settings.delivery = Delivery::Proxy;
        let artifacts = Artifacts::in_object_store(staging.path(), &settings)
            .unwrap()
            .with_cache(cache_dir.path(), 64 << 20)
            .unwrap();
        let bytes: Vec<u8> = (0..9u32 << 20).map(|i| (i % 241) as u8).collect();
        let sha = upload(&artifacts, &bytes).await.unwrap();
        let read_all = |file: Option<std::io::Result<std::fs::File>>| {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut file.expect("a copy").unwrap(), &mut out).unwrap();
            out
        };
        let path = cache_dir.path().join(&sha);
        assert_eq!(
            read_all(artifacts.local_file(&sha, bytes.len() as u64).await),
            bytes
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // With the store down, the copy still serves.
        s3.stop();
        assert_eq!(
            read_all(artifacts.local_file(&sha, bytes.len() as u64).await),
            bytes
        );
        // Another artifact cannot be copied while the store is down: the caller reads the
        // store itself (and gets its error).
        assert!(artifacts.local_file(&"ab".repeat(32), 10).await.is_none());
        s3.start_again();
        // Deleted from the store, deleted from the cache.
        assert_eq!(artifacts.remove(&sha).await, bytes.len() as u64);
        assert!(!path.exists());
        assert!(s3.objects("fleet").is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_upload_that_fails_half_way_is_aborted() {
        let s3 = S3Server::start();
        let staging = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::in_object_store(
            staging.path(),
            &config(&s3, s3.secret_key(), DEFAULT_URL_LIFETIME),
        )
        .unwrap();
        // A folder opens but cannot be read: the multipart upload is begun, then fails.
        let unreadable = tempfile::tempdir().unwrap();
        let err = artifacts
            .put_file(&"ab".repeat(32), unreadable.path())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        assert_eq!(
            s3.unfinished_uploads(),
            0,
            "the multipart upload was aborted"
        );
        assert!(s3.objects("").is_empty(), "{:?}", s3.objects(""));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_that_is_down_fails_the_upload_with_its_reason_and_keeps_nothing() {
        let mut s3 = S3Server::start();
        let staging = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::in_object_store(
            staging.path(),
            &config(&s3, s3.secret_key(), DEFAULT_URL_LIFETIME),
        )
        .unwrap();
        s3.stop();
        let err = upload(&artifacts, &[7u8; 10 << 20]).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("object store {}", s3.url("fleet/artifacts"))),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(
            staged(staging.path()).is_empty(),
            "the staged upload is removed"
        );
        s3.start_again();
        assert!(s3.objects("").is_empty(), "{:?}", s3.objects(""));
        assert_eq!(s3.unfinished_uploads(), 0);
        // And with the store back, the same upload goes through.
        let sha = upload(&artifacts, &[7u8; 10 << 20]).await.unwrap();
        assert_eq!(artifacts.size(&sha).await.unwrap(), Some(10 << 20));
    }

    #[test]
    fn s3_urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(
            parse_s3_url("s3://b/models/v1/").unwrap(),
            ("b".into(), "models/v1".into())
        );
        assert_eq!(parse_s3_url("s3://b").unwrap(), ("b".into(), String::new()));
        for bad in ["b/x", "s3:///x", "http://b/x"] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }
}
