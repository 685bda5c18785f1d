//! Reading a controller's Prometheus endpoint (`serve --metrics-listen`) from tests and the
//! scale examples: its address from the log, a plain HTTP GET, the samples by series.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use crate::Controller;

/// `GET path` over one plain HTTP/1.1 connection: the status line and the body.
pub fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Sample lines (`name{labels} value`) by their name and labels, comments skipped.
pub fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The address `serve` logged for its metrics.
pub fn metrics_address(ctl: &Controller) -> String {
    ctl.process
        .wait_for_log("metrics served at", Duration::from_secs(10));
    let log = ctl.process.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("metrics served at"))
        .unwrap();
    line.split("address=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line}"))
        .to_string()
}
