//! A network namespace for the end-to-end tests: a device on a network whose only way out is a
//! proxy. The namespace has its own loopback and one veth link to this machine, addressed as a
//! /30 of 10.201.0.0/16 (this machine's side `10.201.X.Y+1`, the namespace's side `10.201.X.Y+2`)
//! and no other route: a process started in it (with [`NetNamespace::command`]) reaches
//! nothing but this machine's side of the link, and there only what listens on that address or
//! on `0.0.0.0`. `127.0.0.1` inside is the namespace's own loopback, so a controller listening on
//! this machine's `127.0.0.1:PORT` cannot be dialled directly; a proxy listening on
//! [`NetNamespace::host_address`] (see [`crate::http_proxy`]) can, and is the one way through.
//!
//! Checked by hand on Debian 12 (as root): from inside, `curl http://127.0.0.1:PORT/` to a
//! listener this machine bound on `127.0.0.1` is refused (it is the namespace's own loopback),
//! `curl http://10.201.X.Y+1:PORT/` to one bound on the host side answers, and this machine's
//! other addresses and the internet are unreachable (no route). IPv6 has only link-local
//! addresses on the link, and no route either.
//!
//! Made with `ip` (iproute2); needs root, as the test command runs. Dropping it deletes the veth
//! pair and the namespace: stop the processes started inside it first (drop them before it).
//! Namespaces left by a test process that died without dropping them (`ef-PID-N` with no such
//! PID) are deleted by the next [`NetNamespace::create`].

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Namespaces made by this process so far, for unique names and subnets.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The name of the link's end inside the namespace (names there are the namespace's own).
const INSIDE_LINK: &str = "ef0";

/// A Linux network namespace linked to this machine by one veth pair with a /30 of its own;
/// the namespace and the pair are deleted when dropped.
pub struct NetNamespace {
    name: String,
    host_link: String,
    host_address: Ipv4Addr,
    address: Ipv4Addr,
}

impl NetNamespace {
    /// Creates a namespace `ef-PID-N` with its loopback up and a veth pair to this machine
    /// (this side `efhPID-N`, in hexadecimal, to fit the 15 characters a link name may have),
    /// on a /30 of 10.201.0.0/16 no address of this machine is in. Panics naming the `ip`
    /// command that failed (root is needed).
    pub fn create() -> NetNamespace {
        remove_stale();
        let pid = std::process::id();
        let (n, block) = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            assert!(n < 1 << 16, "made {n} network namespaces in one process");
            // 64 /30s from PID (mod 256) on, so that test processes side by side do not meet;
            // one already in use on this machine is skipped.
            let block = ((pid % 256) * 64 + n) % 16384;
            let network = subnet(block, 0);
            let in_use = ip_output(&["-4", "-o", "addr", "show", "to", &format!("{network}/30")]);
            if in_use.trim().is_empty() {
                break (n, block);
            }
        };
        let ns = NetNamespace {
            name: format!("ef-{pid}-{n}"),
            host_link: host_link_name(pid, n),
            host_address: subnet(block, 1),
            address: subnet(block, 2),
        };
        // From here a failure panics with `ns` in scope: its drop deletes what was made.
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            INSIDE_LINK,
            "netns",
            &ns.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_address),
            "dev",
            &ns.host_link,
        ]);
        ip(&["link", "set", &ns.host_link, "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{}/30", ns.address),
            "dev",
            INSIDE_LINK,
        ]);
        ip(&["-n", &ns.name, "link", "set", INSIDE_LINK, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (`ip netns exec NAME …`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This machine's side of the link (`10.201.X.Y+1`): the one address a process inside can
    /// reach, where a proxy for it listens.
    pub fn host_address(&self) -> Ipv4Addr {
        self.host_address
    }

    /// The namespace's side of the link (`10.201.X.Y+2`): where its connections come from, as
    /// a proxy on [`NetNamespace::host_address`] sees them.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// `ip netns exec NAME PROGRAM`: add the arguments, environment and the rest as for any
    /// command. `ip` execs the program in place, so the child's PID is the program's own (a
    /// signal sent to it reaches the program).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.name).arg(program);
        cmd
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        // Deleting either end of a veth pair deletes both, even while a process still holds the
        // namespace (which then lives on until it exits, with no link).
        let _ = quiet_ip(&["link", "del", &self.host_link]);
        let _ = quiet_ip(&["netns", "del", &self.name]);
    }
}

/// The address `host` (0 network, 1 this side, 2 the namespace's) of /30 number `block` of
/// 10.201.0.0/16.
fn subnet(block: u32, host: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 201, 0, 0)) + block * 4 + host)
}

/// This side's link name for namespace `n` of process `pid`: at most 15 characters.
fn host_link_name(pid: u32, n: u32) -> String {
    let name = format!("efh{pid:x}-{n:x}");
    assert!(name.len() <= 15, "link name {name} is over 15 characters");
    name
}

/// Deletes the namespaces (and their links) of test processes that are gone.
fn remove_stale() {
    let Ok(list) = quiet_ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        // `ef-123-0 (id: 4)` or `ef-123-0`
        let name = line.split_whitespace().next().unwrap_or_default();
        let mut parts = name.strip_prefix("ef-").unwrap_or_default().split('-');
        let (Some(Ok(pid)), Some(Ok(n)), None) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u32>),
            parts.next(),
        ) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = quiet_ip(&["link", "del", &host_link_name(pid, n)]);
            let _ = quiet_ip(&["netns", "del", name]);
        }
    }
}

/// Runs `ip ARGS`; its stdout, or its stderr as the error.
fn quiet_ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip ARGS`, panicking with what it said when it fails.
fn ip(args: &[&str]) {
    ip_output(args);
}

/// Runs `ip ARGS` and returns its stdout, panicking with what it said when it fails.
fn ip_output(args: &[&str]) -> String {
    quiet_ip(args).unwrap_or_else(|e| {
        panic!(
            "`ip {}` failed ({e}); network namespaces need root",
            args.join(" ")
        )
    })
}
