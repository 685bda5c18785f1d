//! A throwaway S3 server for tests: `s3s-fs` 0.14.1, which checks request signatures and the
//! expiry of presigned URLs (tampered, wrong-secret and expired ones get 403) and serves ranges,
//! on a free loopback port with a bucket in a temporary folder, stopped and removed when the
//! [`S3Server`] is dropped or this test process ends.
//!
//! Nothing here is optional: without the binary a test that asks for a server fails and says
//! how to build it (`scripts/setup_packaging.sh` builds it once into `.cache/s3s-fs/`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bucket every server starts with.
pub const BUCKET: &str = "edgefleet";

/// A running `s3s-fs`.
pub struct S3Server {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
}

/// The `s3s-fs` binary: `EDGEFLEET_S3S_FS`, or `.cache/s3s-fs/bin/s3s-fs` in the repository.
fn server_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("EDGEFLEET_S3S_FS") {
        return Ok(PathBuf::from(path));
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/s3s-fs/bin/s3s-fs");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the S3 server for tests is not built ({} is missing): run scripts/setup_packaging.sh, \
             which runs `cargo install s3s-fs --version 0.14.1 --features binary --locked --root \
             .cache/s3s-fs`, or set EDGEFLEET_S3S_FS",
            path.display()
        ))
    }
}

impl S3Server {
    /// Starts a server with a bucket named [`BUCKET`] and random credentials.
    pub fn start() -> S3Server {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "edgefleet-s3-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data").join(BUCKET))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let nonce = format!("{:x}", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
        let mut server = S3Server {
            child: None,
            dir,
            port: 0,
            access_key: format!("TEST{}", &nonce[nonce.len() - 8..]).to_uppercase(),
            secret_key: format!("secret-{nonce}"),
        };
        server.spawn(0).unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// Starts `s3s-fs` on `port` (0: any) and reads the address it says it bound.
    fn spawn(&mut self, port: u16) -> Result<(), String> {
        let mut child = Command::new(server_binary()?)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.dir.join("data"))
            // Its bound address is printed at info level only.
            .env("RUST_LOG", "s3s_fs=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.join("log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start s3s-fs: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let bound = lines.by_ref().map_while(Result::ok).find_map(|line| {
            let at = line.find("server is running at http://")?;
            let address = &line[at + "server is running at http://".len()..];
            address.trim().rsplit(':').next()?.parse::<u16>().ok()
        });
        let Some(bound) = bound else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "s3s-fs did not say where it listens; its log: {}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            ));
        };
        // Its later log lines are not read: drain them so it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.watch_parent(child.id());
        self.port = bound;
        self.child = Some(child);
        Ok(())
    }

    /// A shell that waits for this test process to end, then stops the server and removes its
    /// folder (libtest never runs destructors of statics, and a killed test runs none).
    fn watch_parent(&self, server: u32) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -9 {server} 2>/dev/null; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://edgefleet/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The environment a controller reads the credentials from.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
        ]
    }

    /// The `serve` flags that put artifacts in this server under `prefix`.
    pub fn serve_flags(&self, prefix: &str) -> Vec<String> {
        vec![
            "--artifacts".into(),
            self.url(prefix),
            "--s3-endpoint".into(),
            self.endpoint(),
        ]
    }

    /// The objects under `prefix` in the bucket, as (key, size), sorted: what the server's
    /// folder holds, read directly (its own bookkeeping files left out).
    pub fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let root = self.dir.join("data").join(BUCKET);
        let mut out = Vec::new();
        let mut stack = vec![root.join(prefix)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let key = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((key, entry.metadata().map_or(0, |m| m.len())));
                }
            }
        }
        out.sort();
        out
    }

    /// Multipart uploads begun and neither completed nor aborted (s3s-fs keeps each one's
    /// record beside the buckets).
    pub fn unfinished_uploads(&self) -> usize {
        std::fs::read_dir(self.dir.join("data"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }

    /// Stops the server (its data stays), as a store that went down would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on its port after [`S3Server::stop`], with the same data.
    pub fn start_again(&mut self) {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn(port) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("s3s-fs did not start again on port {port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
