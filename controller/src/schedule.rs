//! Scheduled benchmark runs, the pure part: cron expressions parsed exactly as
//! tokio-cron-scheduler parses them (croner, six fields, seconds first) and read in a time zone
//! (`--tz Europe/Berlin`, UTC by default), `--jitter` durations, when a schedule fires next
//! (across daylight-saving changes: a fire the change skips or doubles happens once), which
//! fires a stopped controller missed, and which agents a `--when-idle` fire leaves out. No I/O;
//! `server/schedules.rs` carries the decisions out.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// At most this many missed fires are recorded one row each (the newest); the rest are counted.
pub const MISSED_ROWS: usize = 100;

/// A cron expression that does not parse, with the parser's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression `{cron}`: {reason} (six fields, the first is seconds: \"0 0 3 * * *\" is 03:00:00 every day)")]
    Cron { cron: String, reason: String },
    #[error("`{0}` is not a duration such as 30s, 10m or 1h")]
    Duration(String),
    #[error(
        "unknown time zone `{0}`: use an IANA name such as Europe/Berlin, America/Denver or UTC"
    )]
    TimeZone(String),
}

/// A time zone by its IANA name (`Europe/Berlin`), or the error saying what is expected.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| ScheduleError::TimeZone(name.to_string()))
}

/// A parsed six-field cron expression (seconds first) and the time zone it is read in, with its
/// text.
#[derive(Debug, Clone)]
pub struct CronSpec {
    text: String,
    cron: Cron,
    zone: Tz,
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &CronSpec) -> bool {
        self.text == other.text && self.zone == other.zone
    }
}

impl CronSpec {
    /// Parses `text` read in UTC.
    pub fn parse(text: &str) -> Result<CronSpec, ScheduleError> {
        CronSpec::parse_in(text, Tz::UTC)
    }

    /// Parses `text` with the settings tokio-cron-scheduler uses (seconds required, day of
    /// month and day of week both must match), read in `zone`: "0 0 3 * * *" in Europe/Berlin
    /// is 03:00 on the Berlin clock, summer and winter.
    pub fn parse_in(text: &str, zone: Tz) -> Result<CronSpec, ScheduleError> {
        let refuse = |reason: String| ScheduleError::Cron {
            cron: text.to_string(),
            reason,
        };
        // croner quietly puts a seconds field in front of five fields; ours must be explicit.
        let fields = text.split_whitespace().count();
        if fields != 6 && !text.trim_start().starts_with('@') {
            return Err(refuse(format!("it has {fields} fields, not 6")));
        }
        // croner skips an empty item of a list (`,` or `1,,2`): a field of only commas would then
        // match nothing, and finding that out takes a search to the year 5000 (found by fuzzing).
        if let Some(field) = text
            .split_whitespace()
            .find(|field| field.split(',').any(str::is_empty))
        {
            return Err(refuse(format!("`{field}` has an empty item in its list")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|e| refuse(e.to_string().trim_end_matches('.').to_string()))?;
        // A pattern that never matches (31 February) is refused now rather than never firing.
        cron.find_next_occurrence(&Utc::now().with_timezone(&zone), false)
            .map_err(|e| refuse(e.to_string().trim_end_matches('.').to_string()))?;
        Ok(CronSpec {
            text: text.trim().to_string(),
            cron,
            zone,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The zone the expression is read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire strictly after `after_ms` (Unix ms), if there is one. croner walks the
    /// zone's wall clock: a time a spring change skips fires at the first time after it, and a
    /// time an autumn change repeats fires at its first occurrence only. Searched from inside
    /// the repeated hour, croner answers that first occurrence, which is already past: the
    /// search goes on from there until it finds a fire after `after_ms`, so fires never go back
    /// in time.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let mut from = utc(after_ms)?.with_timezone(&self.zone);
        // A repeated hour holds at most 3,600 fires of a per-second cron.
        for _ in 0..4000 {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            if next.timestamp_millis() > after_ms {
                return Some(next.timestamp_millis());
            }
            from = next;
        }
        None
    }
}

/// `ms` as a time, rounded down to its second: cron fires fall on whole seconds, and croner
/// would otherwise carry the milliseconds into the fire times it finds.
fn utc(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms.div_euclid(1000) * 1000)
}

/// The fires a controller that was down missed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Missed {
    /// How many fires fell into the gap.
    pub count: u64,
    /// The newest of them (at most `limit`), oldest first, in Unix ms.
    pub recent: Vec<i64>,
}

/// The fires planned in (`since_ms`, `now_ms`]: those after the last fire (or the schedule's
/// creation) up to now. Counting stops at `cap`, so a per-second schedule left for years
/// costs bounded time; `count` is then `cap`.
pub fn missed_fires(cron: &CronSpec, since_ms: i64, now_ms: i64, limit: usize) -> Missed {
    const CAP: u64 = 1_000_000;
    let mut missed = Missed::default();
    let mut recent = std::collections::VecDeque::with_capacity(limit.min(1024));
    let mut at = since_ms;
    while missed.count < CAP {
        match cron.next_after(at) {
            Some(next) if next <= now_ms => {
                missed.count += 1;
                if recent.len() == limit {
                    recent.pop_front();
                }
                if limit > 0 {
                    recent.push_back(next);
                }
                at = next;
            }
            _ => break,
        }
    }
    missed.recent = recent.into();
    missed
}

/// `30s`, `10m`, `1h` (also `500ms`, `2d`; a bare number is seconds; `0` is no jitter).
pub fn parse_jitter(text: &str) -> Result<Duration, ScheduleError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if unit_ms > 0 => n
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(|| ScheduleError::Duration(text.to_string())),
        _ => Err(ScheduleError::Duration(text.to_string())),
    }
}

/// How long a fire waits before it starts its run: uniform in [0, `jitter`), from `unit` in
/// [0, 1) (the caller's random draw).
pub fn jitter_delay(jitter: Duration, unit: f64) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let ms = (jitter.as_millis() as f64 * unit.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(ms.min((jitter.as_millis() as u64).saturating_sub(1)))
}

/// Splits the agents a fire would use into those that start and those left out: with
/// `when_idle`, an agent that is `busy` (an unfinished benchmark job, a rollout install in
/// progress) is left out of this fire; without it nobody is.
pub fn split_idle<'a>(
    candidates: &'a [String],
    busy: &BTreeSet<String>,
    when_idle: bool,
) -> (Vec<&'a String>, Vec<&'a String>) {
    candidates
        .iter()
        .partition(|id| !when_idle || !busy.contains(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;

    #[test]
    fn cron_expressions_have_six_fields_seconds_first() {
        let every_two = CronSpec::parse("*/2 * * * * *").unwrap();
        assert_eq!(every_two.next_after(T0), Some(T0 + 2000));
        assert_eq!(every_two.next_after(T0 + 1), Some(T0 + 2000));
        let nightly = CronSpec::parse("0 0 3 * * *").unwrap();
        assert_eq!(nightly.next_after(T0), Some(T0 + 3 * 3_600_000));
        assert_eq!(nightly.as_str(), "0 0 3 * * *");

        for (bad, why) in [
            ("0 0 3 * *", "it has 5 fields, not 6"),
            ("61 * * * * *", "61"),
            ("", "it has 0 fields"),
            ("* * * * * * * *", "it has 8 fields"),
            ("0 0 0 31 2 *", "0 0 0 31 2 *"),
            ("0 , 3 * * 4", "`,` has an empty item"),
            ("0 0 3,,4 * * *", "`3,,4` has an empty item"),
            ("0 0 3, * * *", "`3,` has an empty item"),
            ("a b c d e f", "a b c d e f"),
        ] {
            let err = CronSpec::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("the first is seconds"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn jitter_reads_as_people_write_it() {
        for (text, ms) in [
            ("10m", 600_000),
            ("30s", 30_000),
            ("1h", 3_600_000),
            ("45", 45_000),
            ("500ms", 500),
            ("0", 0),
            (" 2d ", 172_800_000),
        ] {
            assert_eq!(
                parse_jitter(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in [
            "",
            "m",
            "-1m",
            "1w",
            "1.5h",
            "10 m",
            "99999999999999999999d",
        ] {
            assert!(parse_jitter(bad).is_err(), "{bad}");
        }
        let d = Duration::from_secs(10);
        assert_eq!(jitter_delay(d, 0.0), Duration::ZERO);
        assert_eq!(jitter_delay(d, 0.5), Duration::from_secs(5));
        assert!(jitter_delay(d, 1.0) < d);
        assert_eq!(jitter_delay(Duration::ZERO, 0.7), Duration::ZERO);
    }

    #[test]
    fn missed_fires_are_those_after_the_last_fire_up_to_now() {
        let every_two = CronSpec::parse("*/2 * * * * *").unwrap();
        // Down from T0 (a fire) to T0 + 9.5 s: the fires at +2, +4, +6, +8 s were missed.
        let m = missed_fires(&every_two, T0, T0 + 9_500, 100);
        assert_eq!(m.count, 4);
        assert_eq!(m.recent, vec![T0 + 2000, T0 + 4000, T0 + 6000, T0 + 8000]);
        // Only the newest are kept one by one.
        let m = missed_fires(&every_two, T0, T0 + 9_500, 2);
        assert_eq!((m.count, m.recent), (4, vec![T0 + 6000, T0 + 8000]));
        // A fire at exactly now counts as missed (it cannot run late); nothing when no gap.
        assert_eq!(missed_fires(&every_two, T0, T0 + 2000, 10).count, 1);
        assert_eq!(
            missed_fires(&every_two, T0, T0 + 1999, 10),
            Missed::default()
        );
        assert_eq!(missed_fires(&every_two, T0, T0, 10), Missed::default());
        // A nightly schedule down for three days missed three nights.
        let nightly = CronSpec::parse("0 0 3 * * *").unwrap();
        let m = missed_fires(&nightly, T0, T0 + 3 * 86_400_000, 100);
        assert_eq!(m.count, 3);
        assert_eq!(m.recent[0], T0 + 3 * 3_600_000);
        // A limit of zero still counts.
        assert_eq!(missed_fires(&nightly, T0, T0 + 3 * 86_400_000, 0).count, 3);
    }

    #[test]
    fn a_when_idle_fire_leaves_busy_agents_out() {
        let agents = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let busy = BTreeSet::from(["b".to_string()]);
        let (start, left) = split_idle(&agents, &busy, true);
        assert_eq!((start.len(), left), (2, vec![&agents[1]]));
        let (start, left) = split_idle(&agents, &busy, false);
        assert_eq!((start.len(), left.len()), (3, 0));
    }
}

#[cfg(test)]
mod zone_tests {
    use chrono::TimeZone;

    use super::*;

    fn at(zone: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
        zone.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .timestamp_millis()
    }

    /// The fires after `from` for `days` days, as the zone's wall clock shows them.
    fn fires(spec: &CronSpec, from: i64, count: usize) -> Vec<String> {
        let mut at = from;
        (0..count)
            .map(|_| {
                at = spec.next_after(at).unwrap();
                utc(at)
                    .unwrap()
                    .with_timezone(&spec.zone())
                    .format("%m-%d %H:%M %Z")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn three_in_the_morning_in_berlin_stays_three_across_both_changes() {
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        let spec = CronSpec::parse_in("0 0 3 * * *", berlin).unwrap();
        // 2026: summer time from 29 March, winter time from 25 October.
        assert_eq!(
            fires(&spec, at(berlin, 2026, 3, 27, 12, 0), 4),
            [
                "03-28 03:00 CET",
                "03-29 03:00 CEST",
                "03-30 03:00 CEST",
                "03-31 03:00 CEST"
            ]
        );
        assert_eq!(
            fires(&spec, at(berlin, 2026, 10, 23, 12, 0), 4),
            [
                "10-24 03:00 CEST",
                "10-25 03:00 CET",
                "10-26 03:00 CET",
                "10-27 03:00 CET"
            ]
        );
    }

    #[test]
    fn a_fire_the_clock_change_skips_or_doubles_happens_once() {
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        let spec = CronSpec::parse_in("0 30 2 * * *", berlin).unwrap();
        // 02:30 does not exist on 29 March: that day's fire comes once, when the clock jumps.
        assert_eq!(
            fires(&spec, at(berlin, 2026, 3, 28, 12, 0), 2),
            ["03-29 03:00 CEST", "03-30 02:30 CEST"]
        );
        // 02:30 happens twice on 25 October: it fires at the first only.
        assert_eq!(
            fires(&spec, at(berlin, 2026, 10, 24, 12, 0), 2),
            ["10-25 02:30 CEST", "10-26 02:30 CET"]
        );
        // Denver, the American dates and hours (8 March 02:00 -> 03:00; 1 November 02:00 ->
        // 01:00, so there 01:30 is the time that happens twice).
        let denver = parse_time_zone("America/Denver").unwrap();
        let spec = CronSpec::parse_in("0 30 2 * * *", denver).unwrap();
        assert_eq!(
            fires(&spec, at(denver, 2026, 3, 7, 12, 0), 2),
            ["03-08 03:00 MDT", "03-09 02:30 MDT"]
        );
        let spec = CronSpec::parse_in("0 30 1 * * *", denver).unwrap();
        assert_eq!(
            fires(&spec, at(denver, 2026, 10, 31, 12, 0), 2),
            ["11-01 01:30 MDT", "11-02 01:30 MST"]
        );
    }

    #[test]
    fn from_inside_the_repeated_hour_the_next_fire_is_never_in_the_past() {
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        // 25 October 2026, 02:10 CET: the second time the clock shows 02:10 (00:10 UTC was the
        // first, 01:10 UTC is this one).
        let second_0210 = chrono::Utc
            .with_ymd_and_hms(2026, 10, 25, 1, 10, 0)
            .unwrap()
            .timestamp_millis();
        let daily = CronSpec::parse_in("0 30 2 * * *", berlin).unwrap();
        let next = daily.next_after(second_0210).unwrap();
        assert!(next > second_0210);
        assert_eq!(fires(&daily, second_0210, 1), ["10-26 02:30 CET"]);
        // Every 15 minutes: the repeated hour's own quarter hours, forward only.
        let quarterly = CronSpec::parse_in("0 */15 * * * *", berlin).unwrap();
        let mut at = second_0210;
        for _ in 0..8 {
            let next = quarterly.next_after(at).unwrap();
            assert!(next > at, "{next} after {at}");
            at = next;
        }
    }

    #[test]
    fn unknown_zones_are_refused_naming_what_is_expected() {
        let err = parse_time_zone("Berlin").unwrap_err().to_string();
        assert!(err.contains("unknown time zone `Berlin`") && err.contains("Europe/Berlin"));
        assert_eq!(parse_time_zone("UTC").unwrap(), Tz::UTC);
    }
}
