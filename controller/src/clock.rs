//! The wall clock as the store records it: milliseconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds as an RFC 3339 UTC time to the second (`2026-12-06T05:32:02Z`), for
/// messages.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{ms} ms after 1970"))
}

/// A span as people say it: whole days when it is at least one, seconds otherwise.
pub fn span_text(span: std::time::Duration) -> String {
    let secs = span.as_secs();
    match secs / 86_400 {
        0 => format!("{secs} s"),
        1 => "1 day".to_string(),
        days => format!("{days} days"),
    }
}
