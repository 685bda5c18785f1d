//! `compare`, `baseline set|ls` and `regressions`: comparisons as tables people read (or JSON),
//! and the `--since` times they take.

use edgefleet_controller::compare::{Comparison, Metric, Row, Side};
use edgefleet_proto::v1::{Baseline, CompareRequest, Regression};

use super::client::Client;
use super::output::{print_json, print_table};
use super::target::Target;
use super::{BaselineCommand, ConfigError};

/// `compare A B`.
pub(super) async fn compare(
    target: &Target,
    request: CompareRequest,
    json: bool,
) -> anyhow::Result<()> {
    let comparison = Client::connect(target).await?.compare(request).await?;
    if json {
        return print_json(&comparison);
    }
    print!("{}", comparison_text(&comparison));
    Ok(())
}

/// The comparison as a heading and a table.
fn comparison_text(c: &Comparison) -> String {
    let by_model = c.rows.iter().any(|r| {
        r.a.as_ref()
            .zip(r.b.as_ref())
            .is_some_and(|(a, b)| a.model == b.model)
    });
    let mut out = format!(
        "{} against {}: {} ({})\nB/A with its 95% bootstrap interval; changes under {:.0}% are no difference\n",
        c.b,
        c.a,
        c.metric.name(),
        // Memory is stored in bytes and shown in MB.
        if c.metric == Metric::Memory { "MB" } else { c.unit.as_str() },
        c.threshold * 100.0
    );
    let classes =
        edgefleet_reports::text::ClassLegend::new(c.rows.iter().map(|r| r.device_class.as_str()));
    let mut header = vec!["class", "scenario"];
    if by_model {
        header.push("model");
    }
    header.extend([
        "A",
        "B",
        "B/A",
        "95% CI",
        "verdict",
        "memory Δ",
        "energy Δ",
        "quality Δ",
    ]);
    let rows: Vec<Vec<String>> = c
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![
                classes.label(&r.device_class),
                edgefleet_reports::text::short_scenario(&r.scenario).to_string(),
            ];
            if by_model {
                row.push(side_model(r));
            }
            row.extend([
                value(r.a.as_ref(), c.metric),
                value(r.b.as_ref(), c.metric),
                r.ratio.map_or("-".into(), |x| format!("{x:.3}")),
                r.ci95
                    .map_or("-".into(), |[lo, hi]| format!("{lo:.3}–{hi:.3}")),
                r.verdict_text.clone(),
                r.memory_delta_bytes.map_or("-".into(), signed_mb),
                match (r.a.as_ref(), r.b.as_ref(), r.energy_delta_j) {
                    (_, _, Some(d)) => format!("{d:+.4} J"),
                    (Some(_), Some(_), None) => "n/m".into(),
                    _ => "-".into(),
                },
                r.quality_delta.map_or("-".into(), |d| format!("{d:+.4}")),
            ]);
            row
        })
        .collect();
    out.push_str(&edgefleet_reports::text::table(&header, &rows));
    out.push_str(&classes.text());
    if out.contains("n/m") {
        out.push_str("(n/m: not measured, no energy sensor)\n");
    }
    out
}

fn side_model(r: &Row) -> String {
    r.a.as_ref()
        .or(r.b.as_ref())
        .map(|s| s.model.clone())
        .unwrap_or_default()
}

fn value(side: Option<&Side>, metric: Metric) -> String {
    match side {
        None => "never measured".into(),
        Some(Side { value: None, .. }) => "not measured".into(),
        Some(Side { value: Some(v), .. }) if metric == Metric::Memory => {
            format!("{:.1} MB", v / 1e6)
        }
        Some(Side { value: Some(v), .. }) if metric == Metric::Energy => format!("{v:.4}"),
        Some(Side { value: Some(v), .. }) if *v >= 100.0 => format!("{v:.0}"),
        Some(Side { value: Some(v), .. }) if *v >= 10.0 => format!("{v:.1}"),
        Some(Side { value: Some(v), .. }) => format!("{v:.3}"),
    }
}

fn signed_mb(bytes: i64) -> String {
    format!("{:+.1} MB", bytes as f64 / 1e6)
}

/// `baseline set SUITE [--run ID]` and `baseline ls [SUITE]`.
pub(super) async fn baseline(target: &Target, command: BaselineCommand) -> anyhow::Result<()> {
    let mut client = Client::connect(target).await?;
    match command {
        BaselineCommand::Set { suite, run } => {
            let set = client
                .set_baseline(&suite, run.as_deref().unwrap_or_default())
                .await?;
            print_baselines(&set);
            Ok(())
        }
        BaselineCommand::Ls { suite, json } => {
            let list = client
                .baselines(suite.as_deref().unwrap_or_default())
                .await?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no baselines (set one with `edgefleet baseline set SUITE`)");
            } else {
                print_baselines(&list);
            }
            Ok(())
        }
    }
}

fn print_baselines(list: &[Baseline]) {
    let classes =
        edgefleet_reports::text::ClassLegend::new(list.iter().map(|b| b.device_class.as_str()));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.suite.clone(),
                classes.label(&b.device_class),
                b.run_id.clone(),
                edgefleet_reports::rfc3339(b.set_at_unix_ms),
            ]
        })
        .collect();
    print_table(&["suite", "class", "baseline run", "set at"], &rows);
    print!("{}", classes.text());
}

/// `regressions [--since T] [--ack ID] [--json]`.
pub(super) async fn regressions(
    target: &Target,
    since_ms: Option<i64>,
    ack: Option<i64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut client = Client::connect(target).await?;
    if let Some(id) = ack {
        let r = client.acknowledge_regression(id).await?;
        if json {
            return print_json(&r);
        }
        println!(
            "regression {} acknowledged: {} {} on {} ({})",
            r.id, r.model, r.metric, r.device_class, r.run_id
        );
        return Ok(());
    }
    let list = client.regressions(since_ms.unwrap_or(0)).await?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no regressions");
        return Ok(());
    }
    let classes =
        edgefleet_reports::text::ClassLegend::new(list.iter().map(|r| r.device_class.as_str()));
    let now = edgefleet_controller::now_ms();
    print_table(
        &[
            "id",
            "found",
            "run",
            "model",
            "scenario",
            "class",
            "metric",
            "against",
            "ratio",
            "95% interval",
            "z",
            "ack",
        ],
        &list
            .iter()
            .map(|r| regression_row(r, &classes, now))
            .collect::<Vec<_>>(),
    );
    print!("{}", classes.text());
    Ok(())
}

fn regression_row(
    r: &Regression,
    classes: &edgefleet_reports::text::ClassLegend,
    now_ms: i64,
) -> Vec<String> {
    vec![
        r.id.to_string(),
        super::output::ago(r.detected_at_unix_ms, now_ms),
        r.run_id.clone(),
        r.model.clone(),
        r.scenario.clone(),
        classes.label(&r.device_class),
        r.metric.clone(),
        match r.kind.as_str() {
            "drift" => format!("history ({})", r.against),
            _ => format!("baseline {}", r.against),
        },
        format!("{:.3}", r.ratio),
        r.ci_low
            .zip(r.ci_high)
            .map_or("-".into(), |(l, h)| format!("{l:.3}–{h:.3}")),
        r.robust_z.map_or("-".into(), |z| format!("{z:.1}")),
        if r.acknowledged_at_unix_ms == 0 {
            "no".into()
        } else {
            super::output::ago(r.acknowledged_at_unix_ms, now_ms)
        },
    ]
}

/// `--since`: an RFC 3339 time (`2026-11-30T03:00:00Z`) or a duration ago (`7d`, `12h`), as
/// Unix milliseconds.
pub(super) fn parse_since(text: &str) -> Result<i64, ConfigError> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    let ago = super::agents::parse_duration(text).map_err(|_| {
        ConfigError(format!(
            "--since `{text}` is neither an RFC 3339 time (2026-11-30T03:00:00Z) nor a duration ago (7d, 12h)"
        ))
    })?;
    Ok(edgefleet_controller::now_ms() - ago.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_times_and_durations_ago() {
        assert_eq!(parse_since("1970-01-01T00:00:01Z").unwrap(), 1000);
        let now = edgefleet_controller::now_ms();
        let day_ago = parse_since("1d").unwrap();
        assert!((now - 86_400_000 - day_ago).abs() < 5_000);
        let err = parse_since("yesterday").unwrap_err().to_string();
        assert!(err.contains("neither an RFC 3339 time"), "{err}");
    }
}
