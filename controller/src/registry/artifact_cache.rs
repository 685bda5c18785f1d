//! A controller's read-through copy of the object-store artifacts it sends to agents itself
//! (proxy delivery): each artifact is read from the store once per controller, checked against
//! its digest, and kept in `DATA/artifact-cache/` up to a size limit, the least recently sent
//! leaving first. Without it every agent's every chunk was a GET on the store; a rollout to
//! 50,000 agents made the store refuse some of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::artifact_dir::ArtifactDir;

/// The copies kept, and how much room they may take.
#[derive(Debug)]
pub struct ArtifactCache {
    dir: ArtifactDir,
    max_bytes: u64,
    state: Mutex<CacheState>,
    /// One fill at a time per artifact: the agents asking meanwhile wait for it and then read
    /// the copy, so the store sees one read however many ask.
    fills: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<String, Entry>,
    total_bytes: u64,
    /// Counts uses, to know which copy was sent least recently.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    /// Whether this process has checked the copy's bytes against its digest. A copy found on
    /// disk at start is checked when first asked for: the disk may have changed it since.
    checked: bool,
}

/// What [`ArtifactCache::file`] found.
#[derive(Debug)]
pub enum Cached {
    /// The artifact's bytes are in this file.
    At(PathBuf),
    /// Larger than the whole cache: read it from the store.
    TooLarge,
}

impl ArtifactCache {
    /// Opens the cache folder, counting the copies already there (unchecked until asked for).
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<ArtifactCache> {
        let dir = ArtifactDir::open(root)?;
        let mut state = CacheState::default();
        for entry in std::fs::read_dir(root)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (Some(_), Ok(meta)) = (dir.path(&name), entry.metadata()) else {
                continue;
            };
            state.total_bytes += meta.len();
            state.entries.insert(
                name,
                Entry {
                    size: meta.len(),
                    last_used: 0,
                    checked: false,
                },
            );
        }
        let cache = ArtifactCache {
            dir,
            max_bytes,
            state: Mutex::new(state),
            fills: Mutex::new(HashMap::new()),
        };
        cache.evict_to_fit(0, None);
        Ok(cache)
    }

    /// The local file holding artifact `sha256` of `size` bytes, filled from `read` (which
    /// returns the bytes of a range) when there is no checked copy yet. Errors name what failed:
    /// the store, the disk, or bytes that do not match the digest.
    pub async fn file<F, Fut, E>(
        self: &Arc<Self>,
        sha256: &str,
        size: u64,
        read: F,
    ) -> Result<Cached, CacheError>
    where
        F: Fn(std::ops::Range<u64>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<bytes::Bytes, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        if size > self.max_bytes {
            return Ok(Cached::TooLarge);
        }
        let Some(path) = self.dir.path(sha256) else {
            return Err(CacheError::NotADigest);
        };
        if self.touch(sha256) == Some(true) {
            crate::metrics::artifact_cache("hit");
            return Ok(Cached::At(path));
        }
        // In a task of its own: a request given up on (an agent waits a minute at most) does
        // not drop a copy half-made; the next request finds it made, or still being made.
        let (cache, key, fill_path) = (Arc::clone(self), sha256.to_string(), path.clone());
        tokio::spawn(async move {
            let fill = {
                let mut fills = cache.fills.lock().unwrap();
                Arc::clone(fills.entry(key.clone()).or_default())
            };
            let filling = fill.lock().await;
            let outcome = cache.check_or_fill(&key, &fill_path, size, read).await;
            drop(filling);
            let mut fills = cache.fills.lock().unwrap();
            // The last one through takes the fill's lock out of the map.
            if Arc::strong_count(&fill) == 2 {
                fills.remove(&key);
            }
            outcome
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(Cached::At(path))
    }

    /// Forgets and deletes the copy of an artifact no version uses any more.
    pub fn remove(&self, sha256: &str) {
        self.delete(&mut self.state.lock().unwrap(), sha256);
    }

    /// Takes a copy out of `state` and deletes its file; its size, when there was one.
    fn delete(&self, state: &mut CacheState, sha256: &str) -> Option<u64> {
        let entry = state.entries.remove(sha256)?;
        state.total_bytes -= entry.size;
        if let Some(path) = self.dir.path(sha256) {
            let _ = std::fs::remove_file(path);
        }
        Some(entry.size)
    }

    /// Bytes the copies take now.
    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap().total_bytes
    }

    /// Marks a copy as just used (so that no fill evicts it now); whether it is checked, or
    /// `None` when there is no copy.
    fn touch(&self, sha256: &str) -> Option<bool> {
        let mut state = self.state.lock().unwrap();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(sha256)?;
        entry.last_used = now;
        Some(entry.checked)
    }

    async fn check_or_fill<F, Fut, E>(
        &self,
        sha256: &str,
        path: &Path,
        size: u64,
        read: F,
    ) -> Result<(), CacheError>
    where
        F: Fn(std::ops::Range<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        let on_disk = match self.touch(sha256) {
            // Another caller filled it while this one waited.
            Some(true) => {
                crate::metrics::artifact_cache("hit");
                return Ok(());
            }
            // Found at start: just touched, so no fill evicts it while it is hashed.
            Some(false) => true,
            None => false,
        };
        if on_disk {
            let file = path.to_path_buf();
            let digest = tokio::task::spawn_blocking(move || hash_file(&file))
                .await
                .map_err(std::io::Error::other)?;
            if digest.as_deref().ok() == Some(sha256) && path.exists() {
                self.insert(sha256, size);
                crate::metrics::artifact_cache("hit");
                return Ok(());
            }
            tracing::warn!(%sha256, "a cached artifact no longer matches its digest; it is read from the object store again");
            self.remove(sha256);
        }
        // Room first, so that this copy fits beside those kept (copies of other artifacts being
        // made at the same time are not counted until done, and may pass the limit a while).
        self.evict_to_fit(size, Some(sha256));
        let mut upload = self.dir.begin()?;
        let mut at = 0;
        while at < size {
            let end = (at + FILL_PIECE_BYTES).min(size);
            let bytes = read(at..end)
                .await
                .map_err(|e| CacheError::Store(e.to_string()))?;
            if bytes.len() as u64 != end - at {
                return Err(CacheError::Store(format!(
                    "asked for {} bytes at {at}, got {}",
                    end - at,
                    bytes.len()
                )));
            }
            upload = tokio::task::spawn_blocking(move || upload.write(&bytes).map(|()| upload))
                .await
                .map_err(std::io::Error::other)??;
            at = end;
        }
        let dir = self.dir.clone();
        let (digest, upload) = tokio::task::spawn_blocking(move || {
            let mut upload = upload;
            upload.finish().map(|digest| (digest, upload))
        })
        .await
        .map_err(std::io::Error::other)??;
        if digest != sha256 {
            return Err(CacheError::Mismatch { got: digest });
        }
        tokio::task::spawn_blocking(move || dir.commit(upload))
            .await
            .map_err(std::io::Error::other)??;
        self.insert(sha256, size);
        crate::metrics::artifact_cache("filled");
        Ok(())
    }

    /// Lists a checked copy.
    fn insert(&self, sha256: &str, size: u64) {
        let mut state = self.state.lock().unwrap();
        state.clock += 1;
        let now = state.clock;
        if let Some(old) = state.entries.insert(
            sha256.to_string(),
            Entry {
                size,
                last_used: now,
                checked: true,
            },
        ) {
            state.total_bytes -= old.size;
        }
        state.total_bytes += size;
    }

    /// Deletes the least recently used copies (never `keep`) until `incoming` more bytes fit.
    /// A copy being sent stays readable to whoever has it open.
    fn evict_to_fit(&self, incoming: u64, keep: Option<&str>) {
        let mut state = self.state.lock().unwrap();
        while state.total_bytes + incoming > self.max_bytes {
            let oldest = state
                .entries
                .iter()
                .filter(|(sha, _)| Some(sha.as_str()) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(sha, _)| sha.clone());
            let Some(oldest) = oldest else { break };
            let bytes = self.delete(&mut state, &oldest);
            tracing::debug!(sha256 = %oldest, ?bytes, "artifact cache: dropped the least recently sent copy");
        }
    }
}

/// Bytes read from the store per request while filling a copy.
const FILL_PIECE_BYTES: u64 = 8 << 20;

/// Why a copy could not be made; the caller then reads from the store directly.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("not a sha256 digest")]
    NotADigest,
    #[error("reading from the object store: {0}")]
    Store(String),
    #[error("the object store's bytes hash to {got}, not to their name")]
    Mismatch { got: String },
    #[error("cache folder: {0}")]
    Io(#[from] std::io::Error),
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;

    use super::*;

    /// An artifact's bytes and digest.
    fn artifact(len: usize, seed: u8) -> (Bytes, String) {
        let bytes: Bytes = (0..len)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<_>>()
            .into();
        let sha = hex::encode(Sha256::digest(&bytes));
        (bytes, sha)
    }

    /// A store holding `bytes` whose reads are counted.
    fn store(
        bytes: Bytes,
        reads: &Arc<AtomicUsize>,
    ) -> impl Fn(std::ops::Range<u64>) -> std::future::Ready<Result<Bytes, std::convert::Infallible>>
    {
        let reads = Arc::clone(reads);
        move |range| {
            reads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(bytes.slice(range.start as usize..range.end as usize)))
        }
    }

    async fn copy_of(
        cache: &Arc<ArtifactCache>,
        sha: &str,
        bytes: &Bytes,
        reads: &Arc<AtomicUsize>,
    ) -> Vec<u8> {
        match cache
            .file(sha, bytes.len() as u64, store(bytes.clone(), reads))
            .await
            .unwrap()
        {
            Cached::At(path) => std::fs::read(path).unwrap(),
            Cached::TooLarge => panic!("{sha} fits"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_agents_asking_at_once_read_the_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
        // 10 MiB: two reads of the store (8 + 2 MiB) make the copy.
        let (bytes, sha) = artifact(10 << 20, 1);
        let reads = Arc::new(AtomicUsize::new(0));
        let mut asking = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, sha, bytes, reads) =
                (cache.clone(), sha.clone(), bytes.clone(), reads.clone());
            asking.spawn(async move { copy_of(&cache, &sha, &bytes, &reads).await });
        }
        let copies = asking.join_all().await;
        assert!(copies.iter().all(|c| c[..] == bytes[..]));
        assert_eq!(reads.load(Ordering::SeqCst), 2, "one fill for 50 requests");
        assert_eq!(cache.bytes(), 10 << 20);
        assert!(cache.fills.lock().unwrap().is_empty(), "no fill lock left");
        // Later requests are met by the copy.
        copy_of(&cache, &sha, &bytes, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_given_up_on_does_not_abandon_the_copy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
        let (bytes, sha) = artifact(10 << 20, 9);
        let slow_reads = Arc::new(AtomicUsize::new(0));
        let begun = Arc::new(AtomicUsize::new(0));
        let slow = {
            let (bytes, slow_reads, begun) = (bytes.clone(), slow_reads.clone(), begun.clone());
            move |range: std::ops::Range<u64>| {
                let (bytes, slow_reads) = (bytes.clone(), slow_reads.clone());
                begun.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    slow_reads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(
                        bytes.slice(range.start as usize..range.end as usize),
                    )
                }
            }
        };
        // The first request gives up after 100 ms, as an agent past its deadline does.
        let first = cache.file(&sha, bytes.len() as u64, slow);
        let given_up = tokio::time::timeout(std::time::Duration::from_millis(100), first).await;
        assert!(given_up.is_err());
        // The fill is under way (the first read begun) before the next request comes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while begun.load(Ordering::SeqCst) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the fill's first read did not begin within 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The copy is made all the same: the next request waits for it and reads nothing.
        let reads = Arc::new(AtomicUsize::new(0));
        assert_eq!(copy_of(&cache, &sha, &bytes, &reads).await, bytes[..]);
        assert_eq!(reads.load(Ordering::SeqCst), 0);
        assert_eq!(slow_reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_copy_changed_on_disk_is_found_after_a_restart_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, sha) = artifact(3 << 20, 2);
        let reads = Arc::new(AtomicUsize::new(0));
        {
            let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
            copy_of(&cache, &sha, &bytes, &reads).await;
        }
        // Unchanged: a restarted controller checks the copy and does not read the store.
        let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
        assert_eq!(cache.bytes(), 3 << 20);
        assert_eq!(copy_of(&cache, &sha, &bytes, &reads).await, bytes[..]);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // One byte flipped on disk: found on the first request after a restart.
        let path = dir.path().join(&sha);
        let mut on_disk = std::fs::read(&path).unwrap();
        on_disk[12345] ^= 0xff;
        std::fs::write(&path, on_disk).unwrap();
        let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
        assert_eq!(copy_of(&cache, &sha, &bytes, &reads).await, bytes[..]);
        assert_eq!(reads.load(Ordering::SeqCst), 2, "made again from the store");
        assert_eq!(std::fs::read(&path).unwrap(), bytes[..]);
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_their_name_or_a_failing_store_leave_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ArtifactCache::open(dir.path(), 64 << 20).unwrap());
        let (bytes, sha) = artifact(1 << 20, 3);
        let (other, _) = artifact(1 << 20, 4);
        let reads = Arc::new(AtomicUsize::new(0));
        let err = cache
            .file(&sha, bytes.len() as u64, store(other, &reads))
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::Mismatch { .. }), "{err}");
        let failing =
            |_range: std::ops::Range<u64>| std::future::ready(Err::<Bytes, _>("503 Slow Down"));
        let err = cache
            .file(&sha, bytes.len() as u64, failing)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading from the object store: 503 Slow Down"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "nothing left in the cache folder: {left:?}"
        );
        assert_eq!(cache.bytes(), 0);
        // The next request tries again.
        assert_eq!(copy_of(&cache, &sha, &bytes, &reads).await, bytes[..]);
    }

    #[tokio::test]
    async fn the_least_recently_sent_copy_makes_room_and_one_too_large_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ArtifactCache::open(dir.path(), 10 << 20).unwrap());
        let (a, sha_a) = artifact(6 << 20, 5);
        let (b, sha_b) = artifact(3 << 20, 6);
        let (c, sha_c) = artifact(3 << 20, 7);
        let reads = Arc::new(AtomicUsize::new(0));
        copy_of(&cache, &sha_a, &a, &reads).await;
        copy_of(&cache, &sha_b, &b, &reads).await;
        copy_of(&cache, &sha_a, &a, &reads).await; // a is now the more recent
        copy_of(&cache, &sha_c, &c, &reads).await; // 12 MiB would not fit: b goes
        assert!(dir.path().join(&sha_a).exists());
        assert!(!dir.path().join(&sha_b).exists());
        assert!(dir.path().join(&sha_c).exists());
        assert_eq!(cache.bytes(), 9 << 20);
        let (big, sha_big) = artifact(11 << 20, 8);
        let outcome = cache
            .file(&sha_big, big.len() as u64, store(big.clone(), &reads))
            .await
            .unwrap();
        assert!(matches!(outcome, Cached::TooLarge));
        cache.remove(&sha_a);
        assert!(!dir.path().join(&sha_a).exists());
        assert_eq!(cache.bytes(), 3 << 20);
        // A smaller limit at the next start drops copies until they fit.
        drop(cache);
        let cache = ArtifactCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.bytes(), 0);
        assert!(!dir.path().join(&sha_c).exists());
    }
}
