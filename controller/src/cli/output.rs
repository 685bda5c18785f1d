//! How results reach people and scripts: aligned tables, the results summary, JSON, and times
//! as "12 s ago".

use edgefleet_reports::{FailedRun, ResultRecord};

/// Prints rows as aligned columns under a header.
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", edgefleet_reports::text::table(header, rows));
}

/// The results summary shown after a run and by the demo.
pub(super) fn print_results(records: &[ResultRecord], failures: &[FailedRun]) {
    print!("{}", edgefleet_reports::text::summary(records, failures));
}

/// Prints a value as pretty JSON on stdout.
pub(super) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "12 s ago", "3 min ago", … (one unit, rounded down: a listing needs no more).
pub(super) fn ago(then_ms: i64, now_ms: i64) -> String {
    let secs = ((now_ms - then_ms).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ago_reads_naturally() {
        assert_eq!(super::ago(0, 5_000), "5 s ago");
        assert_eq!(super::ago(0, 125_000), "2 min ago");
        assert_eq!(super::ago(0, 7_200_000), "2 h ago");
        assert_eq!(super::ago(10, 0), "0 s ago");
    }
}
