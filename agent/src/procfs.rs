//! Reading process memory and CPU time from Linux `/proc`, for measuring benchmark workers from
//! outside and the daemon's own footprint.

use std::path::Path;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every mainstream
/// architecture (x86, arm, aarch64, riscv).
const TICKS_PER_SECOND: f64 = 100.0;

/// A `kB` field of `/proc/PID/status` (such as `VmHWM`, the peak resident set), in bytes.
pub fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Peak resident memory (`VmHWM`) of a process, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    read_status(format!("/proc/{pid}/status"), "VmHWM")
}

/// Current resident memory (`VmRSS`) of this process, in bytes.
pub fn own_rss_bytes() -> Option<u64> {
    read_status("/proc/self/status", "VmRSS")
}

/// Peak resident memory (`VmHWM`) of this process, in bytes.
pub fn own_peak_rss_bytes() -> Option<u64> {
    read_status("/proc/self/status", "VmHWM")
}

fn read_status(path: impl AsRef<Path>, field: &str) -> Option<u64> {
    status_field_bytes(&std::fs::read_to_string(path).ok()?, field)
}

/// User + system CPU seconds from the text of `/proc/PID/stat`.
pub fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// CPU seconds this process has used so far.
pub fn own_cpu_seconds() -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU use of this process over `wall` since `before` (from [`own_cpu_seconds`]), in percent of
/// one core.
pub fn cpu_percent_since(before: Option<f64>, wall: std::time::Duration) -> Option<f64> {
    Some((own_cpu_seconds()? - before?) / wall.as_secs_f64() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\tworker\nVmPeak:\t  200000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t   1000 kB\nThreads:\t3\n";
        assert_eq!(status_field_bytes(status, "VmHWM"), Some(123456 * 1024));
        assert_eq!(status_field_bytes(status, "VmRSS"), Some(1000 * 1024));
        assert_eq!(status_field_bytes(status, "VmSwap"), None);
        assert_eq!(status_field_bytes(status, "Threads"), None);
    }

    #[test]
    fn cpu_time_survives_odd_process_names() {
        let stat = "4242 (my (odd) worker) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 100 1000000 250 18446744073709551615";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
        assert_eq!(stat_cpu_seconds("garbage"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        // The peak read after the current size can only be larger (other tests allocate too).
        let rss = own_rss_bytes().unwrap();
        let peak = own_peak_rss_bytes().unwrap();
        assert!(rss > 0 && peak >= rss, "rss {rss}, peak {peak}");
        assert!(own_cpu_seconds().is_some());
        assert!(peak_rss_bytes(std::process::id()).is_some());
    }
}
