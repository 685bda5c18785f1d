//! An HTTP proxy for the end-to-end tests: Debian's `tinyproxy` (1.11), started in the
//! foreground (`tinyproxy -d -c CONFIG`) with a config generated in a temporary folder, as a
//! site's proxy that agents in a [`crate::netns::NetNamespace`] must tunnel through (HTTP
//! `CONNECT`) to reach the controller. `scripts/setup_packaging.sh` installs it; the tests start
//! their own, never the system's service.
//!
//! What tinyproxy does, checked by hand with `curl -p -x` and raw requests from a namespace:
//! - `CONNECT HOST:PORT` to any port by default (no `ConnectPort` line); it answers
//!   `HTTP/1.0 200 Connection established` and logs `Request (file descriptor N): CONNECT
//!   HOST:PORT HTTP/1.1` and `Established connection to host "HOST"`. A target that refuses the
//!   connection gets `HTTP/1.1 500 Unable to connect`.
//! - With [`ProxyOptions::connect_only_443`] (`ConnectPort 443`), a `CONNECT` to another port
//!   gets [`REFUSED_PORT_STATUS`] (`HTTP/1.1 403 Access violation`, its page says "The CONNECT
//!   method not allowed with the port you tried to use.") and the log says
//!   `Refused CONNECT method on port PORT`.
//! - With [`ProxyOptions::basic_auth`], a request without credentials gets
//!   `HTTP/1.0 407 Proxy Authentication Required` (`Proxy-Authenticate: Basic
//!   realm="Tinyproxy"`), one with wrong credentials `HTTP/1.0 401 Unauthorized`.
//! - A client outside `Allow` (here: the /30 the listening address is in, i.e. both sides of a
//!   namespace's link) gets `HTTP/1.0 403 Access denied`.
//! - As root without `User`/`Group` lines it runs as root and warns "You SHOULD set a UserName";
//!   the config says `User root` and `Group root`. Killing it closes every tunnel at once (one
//!   process, threads); it starts again on the same port at once, even with connections to
//!   that port still in `TIME_WAIT`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// The status line tinyproxy answers a `CONNECT` to a port its `ConnectPort` lines do not list.
pub const REFUSED_PORT_STATUS: &str = "HTTP/1.1 403 Access violation";

/// What tinyproxy logs when it refuses a `CONNECT` for its port (followed by the port).
pub const REFUSED_PORT_LOG: &str = "Refused CONNECT method on port ";

/// How the proxy is set up beyond its defaults (every port open to `CONNECT`, no password).
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// `ConnectPort 443`: refuse a `CONNECT` to any other port with [`REFUSED_PORT_STATUS`],
    /// as many sites' proxies do.
    pub connect_only_443: bool,
    /// `BasicAuth USER PASSWORD`: ask clients for these credentials (407 without them).
    pub basic_auth: Option<(String, String)>,
}

/// A running `tinyproxy` with its own config, log and port; killed when dropped.
pub struct HttpProxy {
    dir: tempfile::TempDir,
    listen: Ipv4Addr,
    port: u16,
    options: ProxyOptions,
    child: Option<Child>,
}

impl HttpProxy {
    /// Starts tinyproxy listening on a free port of `listen` (for a namespace: its
    /// [`crate::netns::NetNamespace::host_address`]), allowing clients from the /30 that
    /// address is in, and waits until it accepts connections.
    pub fn start(listen: Ipv4Addr, options: ProxyOptions) -> HttpProxy {
        let port = free_port(listen);
        let dir = tempfile::tempdir().expect("temporary folder");
        let mut proxy = HttpProxy {
            dir,
            listen,
            port,
            options,
            child: None,
        };
        std::fs::write(proxy.config_path(), proxy.config()).expect("write tinyproxy's config");
        proxy.spawn();
        proxy
    }

    /// `http://ADDRESS:PORT`, with `USER:PASSWORD@` when it asks for credentials: what
    /// `https_proxy` or a `--proxy` flag takes.
    pub fn url(&self) -> String {
        match &self.options.basic_auth {
            Some((user, password)) => {
                format!("http://{user}:{password}@{}:{}", self.listen, self.port)
            }
            None => format!("http://{}:{}", self.listen, self.port),
        }
    }

    /// The port it listens on (the same after [`HttpProxy::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((self.listen, self.port))
    }

    /// Its log so far (`LogLevel Info`; kept across restarts).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The `HOST:PORT` of every `CONNECT` request its log shows so far, in order (refused ones
    /// too).
    pub fn connect_requests(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| line.split_once("): CONNECT ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// Kills it (SIGKILL, which closes every tunnel through it) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`HttpProxy::stop`], on the same address and port, and waits until
    /// it accepts connections.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "the proxy is still running: stop it before starting it again"
        );
        self.spawn();
    }

    /// Whether it is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.out_path())
            .expect("tinyproxy's output file");
        let err = out.try_clone().expect("tinyproxy's output file");
        let child = Command::new(tinyproxy())
            .arg("-d")
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start tinyproxy");
        self.child = Some(child);
        let address = self.address();
        wait_until(
            &format!("tinyproxy to accept connections on {address}"),
            Duration::from_secs(10),
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().expect("try_wait"))
                {
                    panic!(
                        "tinyproxy on {address} exited ({status}) before it accepted \
                         connections:\n{}\n{}",
                        std::fs::read_to_string(self.out_path()).unwrap_or_default(),
                        self.log_text()
                    );
                }
                TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
            },
        );
    }

    fn config(&self) -> String {
        let allowed = Ipv4Addr::from(u32::from(self.listen) & !3);
        let mut config = format!(
            "# Written by the end-to-end tests (tests/e2e/src/http_proxy.rs).\n\
             User root\n\
             Group root\n\
             Listen {listen}\n\
             Port {port}\n\
             Timeout 600\n\
             MaxClients 100\n\
             Allow {allowed}/30\n\
             LogFile \"{log}\"\n\
             LogLevel Info\n\
             PidFile \"{pid}\"\n",
            listen = self.listen,
            port = self.port,
            log = self.log_path().display(),
            pid = self.dir.path().join("tinyproxy.pid").display(),
        );
        if self.options.connect_only_443 {
            config.push_str("ConnectPort 443\n");
        }
        if let Some((user, password)) = &self.options.basic_auth {
            config.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        config
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// Its stdout and stderr: what it says before its log is open (a bad config).
    fn out_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.out")
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `tinyproxy` program (Debian 12: /usr/bin; some releases: /usr/sbin).
fn tinyproxy() -> PathBuf {
    ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "tinyproxy is missing: run scripts/setup_packaging.sh (the test command does), \
                 or apt-get install tinyproxy-bin"
            )
        })
}

/// A port free on `address` now: bound on port 0, then released for tinyproxy to take.
fn free_port(address: Ipv4Addr) -> u16 {
    TcpListener::bind((address, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("cannot find a free port on {address}: {e}"))
        .port()
}
