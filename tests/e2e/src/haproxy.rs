//! A load balancer for the end-to-end tests: Debian's HAProxy (2.6) in TCP mode in front of
//! several controller replicas, run in the foreground (`haproxy -db -f CONFIG`) with a config
//! generated in a temporary folder. Mutual TLS passes through and ends on the replicas, as in
//! `deploy/haproxy/haproxy.cfg`. `scripts/setup_packaging.sh` installs it; the tests start
//! their own, never the system's service.
//!
//! What it does here, checked by hand: a backend that refuses connections is marked down after
//! two failed checks a second apart and skipped; a connection to a backend that died mid-way is
//! closed on the client's side (the agent reconnects through it to a live one); `retries` with
//! `option redispatch` sends a connection whose backend refuses it to another one.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_until;

/// A running HAProxy with its own config; killed when dropped.
pub struct Haproxy {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Haproxy {
    /// Balances connections on a free loopback port over `backends` (`HOST:PORT` each),
    /// round robin, checking each backend every second.
    pub fn start(backends: &[String]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, address)| {
                format!("    server replica{i} {address} check inter 1s fall 2 rise 1\n")
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4000\n\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    \
             timeout server 1h\n    retries 3\n    option redispatch\n\n\
             frontend fleet\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\n\
             backend replicas\n    balance roundrobin\n{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log file");
        let child = Command::new(program())
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        wait_until(
            "HAProxy to accept connections",
            Duration::from_secs(20),
            || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok(),
        );
        Haproxy { dir, port, child }
    }

    /// `https://127.0.0.1:PORT`: the one address agents and the CLI are given.
    pub fn address(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// What HAProxy printed (a backend marked down or up again).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program() -> String {
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "HAProxy is not installed: run scripts/setup_packaging.sh (as root), \
                 or apt-get install haproxy"
            )
        })
        .to_string()
}
