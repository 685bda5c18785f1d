//! A throwaway PostgreSQL cluster for tests: Debian's PostgreSQL server binaries (`initdb`,
//! `pg_ctl`) on a free loopback port, in a temporary folder, started once per test process and
//! removed when that process exits. Each test takes a database of its own from it.
//!
//! Nothing here is optional: without the binaries a test that asks for a cluster fails and
//! says how to install them (`scripts/setup_packaging.sh` does it for the test command).
//!
//! Run as root (CI, containers), the cluster runs as the `postgres` user, as `initdb` demands.
//!
//! The cluster also takes TLS (`ssl=on`) with a server certificate for 127.0.0.1 and localhost
//! from a CA of its own ([`Cluster::ca_file`]), for the tests of `sslmode=require`; a client that
//! does not ask for TLS gets plaintext as before.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

/// The cluster of this test process, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start().unwrap_or_else(|e| panic!("{e}")))
}

/// The folder with `initdb` and `pg_ctl`: `EDGEFLEET_POSTGRES_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout).
fn server_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("EDGEFLEET_POSTGRES_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb): \
         run `apt-get install postgresql` or scripts/setup_packaging.sh, or set \
         EDGEFLEET_POSTGRES_BIN"
            .to_string()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let bin = server_binaries()?;
        let as_postgres_user = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("edgefleet-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres_user,
        };
        if as_postgres_user {
            run(Command::new("chown").arg("postgres").arg(&cluster.dir))?;
        }
        run(cluster
            .server_command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(cluster.data()))?;
        cluster.make_certificates()?;
        cluster.watch_parent()?;
        // A port found free can be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(format!("PostgreSQL did not start: {last}"))
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A command for one of the server's programs, as the user that owns the cluster.
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 \
             -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key",
            self.port,
            self.dir.display()
        );
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]))
    }

    /// A shell that waits for this test process to end, then stops the cluster and removes it
    /// (libtest never runs destructors of statics).
    fn watch_parent(&self) -> Result<(), String> {
        let stop = format!(
            "{} -D {} stop -m immediate",
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let stop = if self.as_postgres_user {
            format!("runuser -u postgres -- {stop}")
        } else {
            stop
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|e| format!("cannot start the cluster's cleanup watcher: {e}"))
    }

    /// Writes a CA (`ca.pem` in the cluster's folder) and the server's certificate and key
    /// (`server.crt`, `server.key` in its data folder, the key 0600 and the postgres user's).
    fn make_certificates(&self) -> Result<(), String> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let failed = |e: rcgen::Error| format!("cannot make the cluster's certificates: {e}");
        let ca_key = KeyPair::generate().map_err(failed)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca.distinguished_name
            .push(DnType::CommonName, "edgefleet test PostgreSQL CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).map_err(failed)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().map_err(failed)?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(failed)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "edgefleet test PostgreSQL");
        let server_pem = server.signed_by(&key, &issuer).map_err(failed)?.pem();
        let write = |path: PathBuf, text: &str, mode: u32| -> Result<(), String> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if self.as_postgres_user {
                run(Command::new("chown").arg("postgres").arg(&path))?;
            }
            Ok(())
        };
        write(self.ca_file(), &ca_pem, 0o644)?;
        write(self.data().join("server.crt"), &server_pem, 0o644)?;
        write(self.data().join("server.key"), &key.serialize_pem(), 0o600)
    }

    /// The CA the cluster's TLS certificate is signed by (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The port the cluster listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` in this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new, empty database and returns its URL. `hint` goes into its name (letters,
    /// digits and `_` kept), after a number unique in this process.
    pub fn database(&self, hint: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let hint: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{}_{hint}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.url(&name)
    }

    /// Runs one SQL command as the superuser, in database `postgres`.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL command as the superuser in the database a [`Cluster::database`] URL names.
    pub fn psql_on(&self, url: &str, sql: &str) -> Result<String, String> {
        let name = url.rsplit('/').next().unwrap_or("postgres");
        self.psql_in(name, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql `{sql}`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, as a crash or a failover would).
    pub fn stop(&self) {
        run(self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]))
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server again on its port after [`Cluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl_start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// The cluster's folder (its log is `log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
