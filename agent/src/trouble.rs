//! Why the agent cannot reach or stay with the controller, in words a person can act on, read
//! from the error chain of a failed call: the device clock outside the controller's certificate
//! (no real-time clock, NTP blocked), the controller refusing this agent's certificate (expired,
//! revoked, unknown), a proxy that cannot be reached or refuses the tunnel, or anything else as
//! it came. The link and the certificate upkeep say a trouble once when it begins or changes,
//! not at every retry ([`Reporter`]).

use std::error::Error;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::{AlertDescription, CertificateError};

use crate::proxy::ProxyFailure;

/// What stands between the agent and the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The device clock reads a time before the controller's certificate is valid.
    ClockBehind { device_s: i64, valid_from_s: i64 },
    /// The device clock reads a time after the controller's certificate expired.
    ClockAhead { device_s: i64, valid_until_s: i64 },
    /// The controller refused this agent's certificate as expired (or not yet valid, by its
    /// clock).
    CertificateExpired,
    /// The controller refused this agent's certificate: the agent was revoked.
    CertificateRevoked,
    /// The controller refused this agent's certificate for another reason (not its CA, an agent
    /// it does not know).
    CertificateRefused(String),
    /// The proxy could not be reached, or refused the tunnel.
    Proxy(String),
    /// Anything else, as it came.
    Other(String),
}

impl Trouble {
    /// The same trouble again (which the reporter does not repeat): the kind, and the message
    /// for kinds whose message names the cause.
    fn key(&self) -> String {
        match self {
            Trouble::ClockBehind { .. } => "clock-behind".into(),
            Trouble::ClockAhead { .. } => "clock-ahead".into(),
            Trouble::CertificateExpired => "expired".into(),
            Trouble::CertificateRevoked => "revoked".into(),
            Trouble::CertificateRefused(why) => format!("refused:{}", without_digits(why)),
            Trouble::Proxy(why) => format!("proxy:{}", without_digits(why)),
            Trouble::Other(why) => format!("other:{}", without_digits(why)),
        }
    }
}

/// A message without its numbers: times and counts in it change from one retry to the next,
/// the trouble does not.
fn without_digits(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_digit()).collect()
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::ClockBehind {
                device_s,
                valid_from_s,
            } => write!(
                f,
                "the device clock reads {}, before the controller's certificate is valid (from {}): is NTP reachable? The agent reconnects by itself once the clock is right",
                utc_text(*device_s),
                utc_text(*valid_from_s)
            ),
            Trouble::ClockAhead {
                device_s,
                valid_until_s,
            } => write!(
                f,
                "the device clock reads {}, after the controller's certificate expired ({}): is the clock right (NTP)? The agent reconnects by itself once it is",
                utc_text(*device_s),
                utc_text(*valid_until_s)
            ),
            Trouble::CertificateExpired => write!(
                f,
                "the controller refused this agent's certificate as expired; the agent asks for a new one with the key it holds"
            ),
            Trouble::CertificateRevoked => write!(
                f,
                "the controller refused this agent's certificate: the agent was revoked; enroll the device again (`edgefleet agents enroll --name NAME` on the controller, then `edgefleet-agent enroll TOKEN` here)"
            ),
            Trouble::CertificateRefused(why) => write!(
                f,
                "the controller refused this agent's certificate ({why}); enroll the device again (`edgefleet agents enroll --name NAME` on the controller)"
            ),
            Trouble::Proxy(why) | Trouble::Other(why) => f.write_str(why),
        }
    }
}

/// A Unix time as `2020-01-01T00:00:00Z`.
pub fn utc_text(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Every error in a chain, looking inside `io::Error`s (whose `source` skips the error they
/// wrap).
fn chain<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut all = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        all.push(e);
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
        if all.len() > 32 {
            break;
        }
    }
    all
}

/// What a failed call's error says, as a [`Trouble`].
pub fn classify(error: &(dyn Error + 'static)) -> Trouble {
    let errors = chain(error);
    for e in &errors {
        if let Some(proxy) = e.downcast_ref::<ProxyFailure>() {
            return Trouble::Proxy(proxy.to_string());
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            match tls {
                rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                    time,
                    not_before,
                }) => {
                    return Trouble::ClockBehind {
                        device_s: time.as_secs() as i64,
                        valid_from_s: not_before.as_secs() as i64,
                    }
                }
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                    time,
                    not_after,
                }) => {
                    return Trouble::ClockAhead {
                        device_s: time.as_secs() as i64,
                        valid_until_s: not_after.as_secs() as i64,
                    }
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::Expired,
                ) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    return Trouble::Other(format!(
                        "the controller's certificate is not valid at the device's time ({}): is the clock right (NTP)?",
                        utc_text(now)
                    ));
                }
                rustls::Error::AlertReceived(alert) => return from_alert(*alert),
                _ => {}
            }
        }
    }
    // The alert can reach us as text only (through a layer that does not keep its source).
    let text = describe(error);
    for (needle, alert) in [
        ("CertificateExpired", AlertDescription::CertificateExpired),
        ("CertificateRevoked", AlertDescription::CertificateRevoked),
        ("UnknownCA", AlertDescription::UnknownCA),
        ("AccessDenied", AlertDescription::AccessDenied),
    ] {
        if text.contains(&format!("received fatal alert: {needle}")) {
            return from_alert(alert);
        }
    }
    Trouble::Other(text)
}

fn from_alert(alert: AlertDescription) -> Trouble {
    match alert {
        AlertDescription::CertificateExpired => Trouble::CertificateExpired,
        AlertDescription::CertificateRevoked => Trouble::CertificateRevoked,
        AlertDescription::UnknownCA => Trouble::CertificateRefused("its CA did not sign it".into()),
        AlertDescription::AccessDenied => Trouble::CertificateRefused(
            "no agent with this certificate's id is enrolled there".into(),
        ),
        other => Trouble::Other(format!("the controller ended the TLS handshake: {other:?}")),
    }
}

/// An error and its causes in one line, each said once.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = String::new();
    for e in chain(error) {
        let part = e.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text += ": ";
        }
        text += &part;
    }
    text
}

/// Says each trouble once, when it begins or changes; a success ends it (and is said, when
/// something was wrong before).
#[derive(Debug, Default)]
pub struct Reporter {
    current: Option<String>,
}

impl Reporter {
    /// Whether `trouble` is news (it should be logged); repeats are not.
    pub fn news(&mut self, trouble: &Trouble) -> bool {
        let key = trouble.key();
        if self.current.as_deref() == Some(&key) {
            return false;
        }
        self.current = Some(key);
        true
    }

    /// The trouble is over; `true` when there was one.
    pub fn cleared(&mut self) -> bool {
        self.current.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_read_as_utc() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_text(1_577_836_800), "2020-01-01T00:00:00Z");
        assert_eq!(utc_text(1_796_522_378), "2026-12-06T01:59:38Z");
        assert_eq!(utc_text(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn a_time_error_deep_in_a_chain_is_a_clock_trouble_said_once() {
        let tls = rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_577_836_800,
            )),
            not_before: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_796_522_378),
            ),
        });
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let trouble = classify(&io);
        assert_eq!(
            trouble.to_string(),
            "the device clock reads 2020-01-01T00:00:00Z, before the controller's certificate is valid (from 2026-12-06T01:59:38Z): is NTP reachable? The agent reconnects by itself once the clock is right"
        );
        let mut reporter = Reporter::default();
        assert!(reporter.news(&trouble));
        // The clock moved on a second: the same trouble.
        let later = Trouble::ClockBehind {
            device_s: 1_577_836_801,
            valid_from_s: 1_796_522_378,
        };
        assert!(!reporter.news(&later));
        assert!(reporter.cleared());
        assert!(!reporter.cleared());
        assert!(reporter.news(&later));
    }

    #[test]
    fn alerts_and_proxy_failures_are_named() {
        let alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
        );
        assert_eq!(classify(&alert), Trouble::CertificateRevoked);
        let proxy = std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            ProxyFailure(
                "the proxy http://p:1 refused CONNECT to c:7: HTTP/1.1 403 Forbidden".into(),
            ),
        );
        assert!(matches!(classify(&proxy), Trouble::Proxy(m) if m.contains("403")));
        let text = std::io::Error::other("h2: received fatal alert: CertificateExpired");
        assert_eq!(classify(&text), Trouble::CertificateExpired);
    }
}
