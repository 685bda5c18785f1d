//! A wrong wall clock for a process under test, changed while it runs: Debian's libfaketime
//! (0.9.10, package `libfaketime`, which `faketime` pulls in and `scripts/setup_packaging.sh`
//! installs) preloaded into it (`LD_PRELOAD`), reading the fake time from a file the test
//! rewrites. A device whose clock is off (no RTC battery, no NTP yet) sees certificates as not
//! yet valid or expired; setting the clock right again must not need a restart.
//!
//! The mechanism, as checked by hand with `date`, Python loops, a C program with 8 threads and a
//! Rust program (std threads, sleeps, condvars) on Debian 12:
//! - `FAKETIME_TIMESTAMP_FILE=FILE` with `FAKETIME_NO_CACHE=1` makes every time call read FILE
//!   again (a few microseconds each), so a change applies at once; without it the setting is
//!   cached for 10 s (`FAKETIME_CACHE_DURATION` sets how long).
//! - The file holds one spec: `+0` is the real clock; `-20h`, `+90d`, `-300` (seconds) are
//!   offsets from it that keep running; `@YYYY-MM-DD hh:mm:ss` starts the clock there and runs
//!   on; `YYYY-MM-DD hh:mm:ss` without `@` stops the clock at that instant. A missing file is the
//!   real clock too; an EMPTY file changes nothing (the last setting stays), so the file is
//!   replaced whole (written beside it, then renamed) and never truncated in place.
//!   [`FakeClock::set_absolute`] writes an offset in seconds, so that the process and the
//!   children it starts later agree (a `@` start date starts over in each child unless
//!   `FAKETIME_DONT_RESET=1`, which is set too).
//! - `FAKETIME_DONT_FAKE_MONOTONIC=1` keeps `CLOCK_MONOTONIC` (Rust's `Instant`, tokio's timers)
//!   real; without it the monotonic clock is faked too (with an offset of `-20h` it read the
//!   fake wall-clock time, 1.8e9 s, instead of the uptime).
//! - The multi-threaded variant `libfaketimeMT.so.1` is needed: with `libfaketime.so.1`, 8
//!   threads reading the clock while the file changes made the process exit (status 1), in
//!   each of 6 runs, with "libfaketime: In parse_ft_string(), failed to parse FAKETIME
//!   timestamp."; with `libfaketimeMT.so.1` 6 runs of about 1.5 million reads each went right.
//! - Relative sleeps and waits keep their real length under any setting: `nanosleep`, relative
//!   `clock_nanosleep` (Rust's `thread::sleep`), `epoll_wait` and `poll` timeouts (tokio), and
//!   futex waits on absolute monotonic deadlines (Rust's condvars and `park_timeout`, which call
//!   the kernel directly). An ABSOLUTE `clock_nanosleep` on `CLOCK_MONOTONIC` is broken under
//!   libfaketime 0.9.10 whatever the setting (even `+0`): it fails at once with `EINVAL` (or,
//!   without `FAKETIME_DONT_FAKE_MONOTONIC`, never returns), which is how Python's
//!   `time.sleep` sleeps: do not use Python under it.
//! - File timestamps (`stat`) are not shifted by offsets.
//! - libfaketime keeps `/dev/shm/faketime_shm_PID` and `/dev/shm/sem.faketime_sem_PID` for each
//!   process (and exports `FAKETIME_SHARED` naming them to its children). A process that exits
//!   by itself removes them; one killed (SIGKILL, as [`crate::Process`]'s drop does), or started
//!   through a program that execs it (`ip netns exec`), leaves them. A leftover pair is harmless
//!   (a later process with the same PID skips making its own), but a leftover `faketime_shm_PID`
//!   WITHOUT its semaphore makes the next process with that PID exit at once with "libfaketime:
//!   In ft_shm_create(), shm_open failed: File exists". [`FakeClock`] removes the pairs of
//!   processes that are gone (shared memory first) when made and when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The multi-threaded libfaketime Debian installs for this machine's architecture.
pub fn library() -> PathBuf {
    let path = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1",
        std::env::consts::ARCH
    ));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup_packaging.sh (the test command does), or apt-get \
         install faketime",
        path.display()
    );
    path
}

/// A fake wall clock: a timestamp file that the processes it is [applied](FakeClock::apply) to
/// read on every time call. It starts as the real clock.
pub struct FakeClock {
    dir: tempfile::TempDir,
}

impl Default for FakeClock {
    fn default() -> Self {
        FakeClock::new()
    }
}

impl FakeClock {
    /// A clock that reads real time until told otherwise.
    pub fn new() -> FakeClock {
        library();
        remove_stale_shared_memory();
        let clock = FakeClock {
            dir: tempfile::tempdir().expect("temporary folder"),
        };
        clock.set_real();
        clock
    }

    /// Makes `cmd` run under this clock: preloads libfaketime (replacing any `LD_PRELOAD`)
    /// and points it at the timestamp file. Its children inherit it.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", library())
            .env("FAKETIME_TIMESTAMP_FILE", self.timestamp_file())
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("FAKETIME_DONT_RESET", "1")
            .env_remove("FAKETIME")
            .env_remove("FAKETIME_SHARED");
    }

    /// Sets the wall clock to `when` (`YYYY-MM-DD hh:mm:ss`, UTC, e.g. `2020-01-01 00:00:00`)
    /// now; it runs on from there.
    pub fn set_absolute(&self, when: &str) {
        let target = parse_utc(when)
            .unwrap_or_else(|| panic!("{when:?} is not a time as `YYYY-MM-DD hh:mm:ss` (UTC)"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs() as i64;
        self.write(&format!("{:+}", target - now));
    }

    /// Sets the wall clock `offset` from the real one: libfaketime's `+N`/`-N` seconds, or with
    /// `m`, `h`, `d`, `y` (e.g. `-20h`, `+400d`).
    pub fn set_offset(&self, offset: &str) {
        let number = offset
            .strip_prefix(['+', '-'])
            .map(|rest| rest.trim_end_matches(['m', 'h', 'd', 'y']));
        assert!(
            number.is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())),
            "{offset:?} is not an offset as libfaketime takes it (`-20h`, `+300`, `+2d`)"
        );
        self.write(offset);
    }

    /// Sets the wall clock back to the real one (`+0`).
    pub fn set_real(&self) {
        self.write("+0");
    }

    /// The file libfaketime reads (`FAKETIME_TIMESTAMP_FILE`).
    pub fn timestamp_file(&self) -> PathBuf {
        self.dir.path().join("faketime.rc")
    }

    /// Replaces the file whole: a reader sees the old spec or the new one, never an empty file.
    fn write(&self, spec: &str) {
        let next = self.dir.path().join("faketime.rc.next");
        std::fs::write(&next, format!("{spec}\n")).expect("write the timestamp file");
        std::fs::rename(&next, self.timestamp_file()).expect("replace the timestamp file");
    }
}

impl Drop for FakeClock {
    fn drop(&mut self) {
        remove_stale_shared_memory();
    }
}

/// Removes libfaketime's shared memory and semaphore of processes that are gone (what a killed
/// process leaves), the shared memory first: a semaphore left alone is harmless, shared memory
/// left alone is not (see the module's notes).
pub fn remove_stale_shared_memory() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    let gone = |pid: &str| {
        !pid.is_empty()
            && pid.chars().all(|c| c.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
    };
    for entry in dir.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("faketime_shm_").filter(|pid| gone(pid)) {
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
        }
    }
}

/// Seconds since 1970 of `YYYY-MM-DD hh:mm:ss` in UTC.
fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(' ')?;
    let date: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let time: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [year, month, day] = date[..] else {
        return None;
    };
    let [hour, minute, second] = time[..] else {
        return None;
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..61).contains(&second)
    {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}
