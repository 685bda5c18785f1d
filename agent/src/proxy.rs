//! Reaching the controller through an HTTP proxy, for networks that let nothing else out: which
//! proxy (the config's `proxy`, else `https_proxy`/`HTTPS_PROXY` for an `https://` controller or
//! `http_proxy`/`HTTP_PROXY` for a plaintext one, then `all_proxy`/`ALL_PROXY`; `NO_PROXY` and
//! `no_proxy` name hosts to reach directly), and the connector every connection to the
//! controller goes through: the link, artifact fetches, enrollment and recovery. Through a
//! proxy it opens a `CONNECT` tunnel; TLS still runs end to end with the controller, so the
//! proxy sees only ciphertext. Credentials in the proxy URL go in `Proxy-Authorization` and are
//! never shown: the proxy is displayed as `http://USER:***@HOST:PORT`.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// Where a proxy set in the config file is said to come from.
const CONFIG_SOURCE: &str = "the config's proxy";

/// How long reaching the proxy, or the proxy's answer to `CONNECT`, may take (each well inside
/// the 10 s a whole connection attempt may take, so that the proxy is named when it is slow).
const PROXY_TIMEOUT: Duration = Duration::from_secs(4);
/// The most a proxy's answer to `CONNECT` may hold before its blank line.
const MAX_PROXY_REPLY: usize = 16 << 10;

/// Why a proxy setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy `{shown}` (from {source_name}) is not an http://HOST:PORT URL: {why}")]
    Url {
        shown: String,
        source_name: String,
        why: String,
    },
}

/// A proxy that could not be reached or refused the tunnel, carried inside the `io::Error` the
/// connector returns so that the link can name the proxy as the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProxyFailure(pub String);

fn failure(kind: io::ErrorKind, message: String) -> io::Error {
    io::Error::new(kind, ProxyFailure(message))
}

/// An HTTP proxy: where it is, and the credentials to give it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    user: Option<(String, String)>,
    /// Where the setting came from (`config`, `HTTPS_PROXY`, ...).
    pub source: String,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self} (from {})", self.source)
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match &self.user {
            Some((user, _)) => write!(f, "http://{user}:***@{host}:{}", self.port),
            None => write!(f, "http://{host}:{}", self.port),
        }
    }
}

/// A URL with its credentials replaced, for messages about a setting that does not parse: the
/// whole user part before an `@`, scheme or none.
fn hide_password(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    match url[after_scheme..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..after_scheme], &url[after_scheme + at..]),
        None => url.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Proxy {
    /// This proxy for an HTTP client (presigned fetches from an object store), its credentials
    /// in `Proxy-Authorization`.
    pub fn for_http_client(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let proxy = reqwest::Proxy::all(format!("http://{host}:{}", self.port))?;
        Ok(match &self.user {
            Some((user, password)) => proxy.basic_auth(user, password),
            None => proxy,
        })
    }

    /// Parses `http://[USER:PASSWORD@]HOST[:PORT]` (a bare `HOST:PORT` is read as http; the
    /// port defaults to 80).
    pub fn parse(url: &str, source: &str) -> Result<Proxy, ProxyError> {
        let bad = |why: &str| ProxyError::Url {
            shown: hide_password(url),
            source_name: source.to_string(),
            why: why.to_string(),
        };
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "the `{scheme}` scheme is not supported (only an http:// proxy that tunnels with CONNECT)"
                )))
            }
            None => url,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (
                    Some((percent_decode(user), percent_decode(password))),
                    host_port,
                )
            }
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (host_port.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad("the port is not a number"))?,
            None => 80,
        };
        Ok(Proxy {
            host,
            port,
            user,
            source: source.to_string(),
        })
    }

    /// Whether the URL carries credentials (a file that keeps it must not be world-readable).
    pub fn has_credentials(&self) -> bool {
        self.user.is_some()
    }

    /// The URL with its credentials, for the config file `enroll` writes (never for a log).
    pub fn url_with_credentials(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let escape = |text: &str| {
            text.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        match &self.user {
            Some((user, password)) => format!(
                "http://{}:{}@{host}:{}",
                escape(user),
                escape(password),
                self.port
            ),
            None => format!("http://{host}:{}", self.port),
        }
    }

    /// Whether the setting came from the environment (not the config file).
    pub fn from_environment(&self) -> bool {
        self.source != CONFIG_SOURCE
    }

    /// Opens a tunnel to `host:port` through this proxy.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let unreachable = |e: io::Error| {
            failure(
                e.kind(),
                format!("cannot reach the proxy {self} (from {}): {e}", self.source),
            )
        };
        let mut stream = tokio::time::timeout(
            PROXY_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| unreachable(io::ErrorKind::TimedOut.into()))?
        .map_err(unreachable)?;
        let _ = stream.set_nodelay(true);
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, password)) = &self.user {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request += &format!("Proxy-Authorization: Basic {basic}\r\n");
        }
        request += "\r\n";
        let exchange = async {
            stream.write_all(request.as_bytes()).await?;
            read_reply_head(&mut stream).await
        };
        let head = tokio::time::timeout(PROXY_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                failure(
                    io::ErrorKind::TimedOut,
                    format!("the proxy {self} did not answer CONNECT to {target} within {PROXY_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| {
                failure(
                    e.kind(),
                    format!("the proxy {self} broke off its answer to CONNECT to {target}: {e}"),
                )
            })?;
        let status_line = head.lines().next().unwrap_or_default().trim().to_string();
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if (200..300).contains(&code) {
            return Ok(stream);
        }
        let hint = match code {
            407 if self.user.is_none() => {
                " (it asks for credentials: give them in the proxy URL, http://USER:PASSWORD@HOST:PORT)"
            }
            407 => " (it did not accept the credentials in the proxy URL)",
            403 => " (it does not allow tunnels to this host or port; ask for the controller's address and port to be allowed)",
            _ => "",
        };
        Err(failure(
            io::ErrorKind::PermissionDenied,
            format!("the proxy {self} refused CONNECT to {target}: {status_line}{hint}"),
        ))
    }
}

/// Reads a proxy's answer up to and including its blank line (and nothing after it: the tunnel
/// starts there).
async fn read_reply_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > MAX_PROXY_REPLY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "its answer has no end of headers",
            ));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Whether a `NO_PROXY` list names `host` (`*`; a host name, which also covers its subdomains,
/// with or without a leading dot; an IP address; an address range as `10.0.0.0/8`; any entry
/// may end in `:PORT`).
pub fn no_proxy_covers(list: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    list.split([',', ' '])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let name = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            if let (Some(ip), Some((net, bits))) = (ip, name.split_once('/')) {
                return match (net.parse::<IpAddr>(), bits.parse::<u32>()) {
                    (Ok(net), Ok(bits)) => in_range(ip, net, bits),
                    _ => false,
                };
            }
            if let (Some(ip), Ok(entry_ip)) = (ip, name.parse::<IpAddr>()) {
                return ip == entry_ip;
            }
            let name = name.trim_start_matches('.');
            host == name || host.ends_with(&format!(".{name}"))
        })
}

fn split_port(entry: &str) -> (&str, Option<u16>) {
    // An IPv6 address without brackets has colons of its own.
    if entry.matches(':').count() > 1 && !entry.starts_with('[') {
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((name, port)) => match port.parse() {
            Ok(port) => (name, Some(port)),
            Err(_) => (entry, None),
        },
        None => (entry, None),
    }
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip.to_canonical(), net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// What the agent would do to reach `controller`: a proxy, or direct and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Proxy(Proxy),
    /// No proxy is set.
    Direct,
    /// A proxy is set, but `NO_PROXY` (from the variable named) covers the controller.
    Excluded {
        proxy: Proxy,
        by: String,
    },
    /// The environment names a proxy this agent cannot use (another scheme, a malformed URL):
    /// it goes direct, and says why.
    Ignored {
        why: String,
    },
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Proxy(proxy) => write!(f, "{proxy} (from {})", proxy.source),
            Route::Direct => write!(f, "none (direct)"),
            Route::Excluded { proxy, by } => write!(
                f,
                "none (direct): {by} covers the controller, so {proxy} (from {}) is not used",
                proxy.source
            ),
            Route::Ignored { why } => write!(f, "none (direct): {why}"),
        }
    }
}

/// Chooses the route to `controller` from the config's `proxy` (`none` or an empty string: no
/// proxy whatever the environment says) and the environment, read through `env`.
pub fn route(
    controller: &str,
    configured: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Route, ProxyError> {
    let uri: Uri = controller.parse().map_err(|_| ProxyError::Url {
        shown: controller.to_string(),
        source_name: "the controller address".into(),
        why: "not a URL".into(),
    })?;
    let https = uri.scheme_str() != Some("http");
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let excluded_by = || {
        ["no_proxy", "NO_PROXY"]
            .into_iter()
            .find(|name| env(name).is_some_and(|list| no_proxy_covers(&list, &host, port)))
    };
    let proxy = match configured.map(str::trim) {
        Some("" | "none") => return Ok(Route::Direct),
        // The config's own setting must be right: an error stops the agent with one line.
        Some(url) => Proxy::parse(url, CONFIG_SOURCE)?,
        None => {
            let names: &[&str] = if https {
                &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
            } else {
                &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            };
            let Some((name, url)) = names.iter().find_map(|name| {
                env(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            }) else {
                return Ok(Route::Direct);
            };
            // The environment is shared with other programs: a setting this agent cannot use
            // (a socks5:// proxy for another tool) is said and passed over, not fatal.
            match Proxy::parse(&url, name) {
                Ok(proxy) => proxy,
                Err(e) if excluded_by().is_some() => {
                    return Ok(Route::Ignored {
                        why: format!("{e}; NO_PROXY covers the controller anyway"),
                    })
                }
                Err(e) => return Ok(Route::Ignored { why: e.to_string() }),
            }
        }
    };
    if let Some(name) = excluded_by() {
        return Ok(Route::Excluded {
            proxy,
            by: name.to_string(),
        });
    }
    Ok(Route::Proxy(proxy))
}

/// The connector every connection to the controller goes through: straight to it (hyper's
/// connector: every address of the name, IPv6 and IPv4 raced, TCP keepalive, no Nagle), or
/// through a `CONNECT` tunnel of the proxy. TLS, when the controller speaks it, runs inside.
#[derive(Debug, Clone)]
pub struct Dialer {
    proxy: Option<Arc<Proxy>>,
    direct: HttpConnector,
}

impl Dialer {
    pub fn new(route: &Route) -> Dialer {
        let mut direct = HttpConnector::new();
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_keepalive(Some(Duration::from_secs(30)));
        direct.set_connect_timeout(Some(Duration::from_secs(10)));
        Dialer {
            proxy: match route {
                Route::Proxy(proxy) => Some(Arc::new(proxy.clone())),
                _ => None,
            },
            direct,
        }
    }

    /// A TCP connection to `host:port`, tunnelled if there is a proxy.
    pub async fn dial(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        match &self.proxy {
            Some(proxy) => proxy.connect(host, port).await,
            None => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                let uri: Uri = format!("http://{host}:{port}")
                    .parse()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
                let mut direct = self.direct.clone();
                let stream = tonic::codegen::Service::call(&mut direct, uri)
                    .await
                    .map_err(|e| {
                        let text = match std::error::Error::source(&e) {
                            Some(cause) => format!("{e}: {cause}"),
                            None => e.to_string(),
                        };
                        io::Error::new(io::ErrorKind::ConnectionRefused, text)
                    })?;
                Ok(stream.into_inner())
            }
        }
    }
}

impl tonic::codegen::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            dialer.dial(&host, port).await.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn a_proxy_url_parses_and_never_shows_its_password() {
        let p = Proxy::parse("http://ops:s%3Acret@10.1.2.3:3128", "HTTPS_PROXY").unwrap();
        assert_eq!(p.to_string(), "http://ops:***@10.1.2.3:3128");
        assert_eq!(p.user, Some(("ops".into(), "s:cret".into())));
        assert!(!format!("{p:?}").contains("cret"));
        assert_eq!(
            Proxy::parse("proxy.lan", "x").unwrap().to_string(),
            "http://proxy.lan:80"
        );
        assert_eq!(
            Proxy::parse("http://[fd00::1]:8080/", "x")
                .unwrap()
                .to_string(),
            "http://[fd00::1]:8080"
        );
        let err = Proxy::parse("socks5://u:hunter2@h:1080", "ALL_PROXY")
            .unwrap_err()
            .to_string();
        assert!(err.contains("socks5") && !err.contains("hunter2"), "{err}");
        assert!(Proxy::parse("http://h:port", "x").is_err());
        let back = Proxy::parse(&p.url_with_credentials(), "config").unwrap();
        assert_eq!(back.user, p.user, "{}", p.url_with_credentials());
    }

    #[test]
    fn the_route_follows_config_then_the_scheme_variables_and_no_proxy() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("http_proxy", "http://q:8080"),
        ]);
        let https = route("https://ctl.lan:7070", None, &env).unwrap();
        assert_eq!(https.to_string(), "http://p:3128 (from HTTPS_PROXY)");
        let http = route("http://ctl.lan:7070", None, &env).unwrap();
        assert_eq!(http.to_string(), "http://q:8080 (from http_proxy)");
        // The lower-case variable wins, as curl reads them.
        let both = env_of(&[("HTTPS_PROXY", "http://p:1"), ("https_proxy", "http://l:2")]);
        assert!(route("https://c:1", None, &both)
            .unwrap()
            .to_string()
            .contains("http://l:2"));
        // The config wins over the environment; `none` turns proxies off.
        let configured = route("https://ctl.lan:7070", Some("http://c:9"), &env).unwrap();
        assert!(configured.to_string().contains("the config's proxy"));
        assert_eq!(
            route("https://ctl.lan:7070", Some("none"), &env).unwrap(),
            Route::Direct
        );
        assert_eq!(
            route("https://ctl.lan:7070", None, env_of(&[])).unwrap(),
            Route::Direct
        );
        let excluded = env_of(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("NO_PROXY", "localhost,.lan"),
        ]);
        assert!(matches!(
            route("https://ctl.lan:7070", None, &excluded).unwrap(),
            Route::Excluded { .. }
        ));
    }

    #[test]
    fn no_proxy_matches_names_suffixes_addresses_ranges_and_ports() {
        assert!(no_proxy_covers("*", "anything", 1));
        assert!(no_proxy_covers("example.com", "ctl.example.com", 443));
        assert!(no_proxy_covers(".example.com", "example.com", 443));
        assert!(!no_proxy_covers("example.com", "badexample.com", 443));
        assert!(no_proxy_covers(
            "10.0.0.0/8, 192.168.1.5",
            "10.20.30.40",
            7070
        ));
        assert!(no_proxy_covers(
            "10.0.0.0/8, 192.168.1.5",
            "192.168.1.5",
            7070
        ));
        assert!(!no_proxy_covers("10.0.0.0/8", "11.0.0.1", 7070));
        assert!(no_proxy_covers("ctl:7070", "ctl", 7070));
        assert!(!no_proxy_covers("ctl:7070", "ctl", 443));
        assert!(no_proxy_covers("::1", "[::1]", 7070));
        assert!(no_proxy_covers("fd00::/8", "fd12::5", 7070));
    }
}
