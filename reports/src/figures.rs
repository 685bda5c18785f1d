//! Which charts a report has: each section's charts built from the input, named by a slug that
//! is both the HTML figure's id and the PNG's file name.

use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::{instant, main_scenario};
use crate::charts::{self, AnyChart, Mark, Series, XAxis, XyChart};
use crate::charts::{fmt_num, BLUE, ORANGE, VERMILLION};
use crate::{ReportInput, ResultRecord, RolloutSummary};

/// One chart of the report.
pub(crate) struct Figure {
    /// File-name safe and unique in the report, e.g. `pareto-1`.
    pub slug: String,
    /// What it shows, for the browser check: `pareto`, `heatmap`, `cdf`, ...
    pub kind: &'static str,
    pub chart: AnyChart,
}

/// The figures of each section, in the order the report shows them.
#[derive(Default)]
pub(crate) struct Figures {
    pub pareto: Vec<Figure>,
    pub heatmap: Vec<Figure>,
    pub latency: Vec<Figure>,
    pub threads: Vec<Figure>,
    pub generation: Vec<Figure>,
    pub energy: Vec<Figure>,
    pub trends: Vec<Figure>,
    pub rollouts: Vec<Figure>,
}

impl Figures {
    pub(crate) fn all(&self) -> impl Iterator<Item = &Figure> {
        [
            &self.pareto,
            &self.heatmap,
            &self.latency,
            &self.threads,
            &self.generation,
            &self.energy,
            &self.trends,
            &self.rollouts,
        ]
        .into_iter()
        .flatten()
    }
}

fn figure(kind: &'static str, n: usize, chart: AnyChart) -> Figure {
    let slug = if n == 0 {
        kind.to_string()
    } else {
        format!("{kind}-{n}")
    };
    Figure { slug, kind, chart }
}

fn numbered(kind: &'static str, charts: impl Iterator<Item = AnyChart>) -> Vec<Figure> {
    charts
        .enumerate()
        .map(|(i, c)| figure(kind, i + 1, c))
        .collect()
}

/// Builds every chart; `latest` is the newest record of each setting.
pub(crate) fn build(
    input: &ReportInput,
    latest: &[&ResultRecord],
    references: &BTreeSet<String>,
    floor: f64,
    agents: &[String],
) -> Figures {
    let classes = charts_classes(latest);
    let pareto = classes.iter().filter_map(|class| {
        let members: Vec<&ResultRecord> = (latest.iter().copied())
            .filter(|r| r.device_class() == *class)
            .collect();
        let scenario = main_scenario(&members);
        charts::pareto(class, &scenario, &members, references, floor).map(AnyChart::Pareto)
    });
    let owned: Vec<ResultRecord> = latest.iter().map(|r| (*r).clone()).collect();
    let cdfs = (agents.iter()).filter_map(|a| charts::latency_cdf(a, &owned).map(AnyChart::Cdf));
    let mut latency: Vec<Figure> = Vec::new();
    if let Some(c) = charts::latency_overview(&owned) {
        latency.push(figure("latency", 0, AnyChart::Bar(c)));
    }
    latency.extend(numbered("cdf", cdfs));
    if let Some(c) = charts::peak_memory(&owned) {
        latency.push(figure("memory", 0, AnyChart::Bar(c)));
    }
    Figures {
        pareto: numbered("pareto", pareto),
        heatmap: charts::p90_heatmap(latest)
            .map(|c| vec![figure("heatmap", 0, AnyChart::Heatmap(c))])
            .unwrap_or_default(),
        latency,
        threads: numbered("threads", threads(latest).into_iter().map(AnyChart::Xy)),
        generation: generation(&owned),
        energy: energy(&owned),
        trends: numbered("trend", trends(input).into_iter().map(AnyChart::Xy)),
        rollouts: numbered(
            "rollout",
            (input.rollouts.iter()).filter_map(|r| rollout(r).map(AnyChart::Xy)),
        ),
    }
}

/// Device classes in first-seen order.
fn charts_classes(records: &[&ResultRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        let c = r.device_class();
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The device class without its thread count: the hardware and engine a thread sweep ran on.
fn sweep_key(r: &ResultRecord) -> String {
    format!(
        "{} · {} {} {}",
        r.target, r.engine, r.engine_version, r.execution_provider
    )
}

/// Throughput against threads, one chart per hardware and engine that ran more than one thread
/// count, one line per model, scenario and agent.
fn threads(latest: &[&ResultRecord]) -> Vec<XyChart> {
    let mut groups: BTreeMap<String, Vec<&ResultRecord>> = BTreeMap::new();
    for r in latest {
        groups.entry(sweep_key(r)).or_default().push(r);
    }
    let mut out = Vec::new();
    for (key, members) in groups {
        let counts: BTreeSet<u32> = members.iter().map(|r| r.threads).collect();
        if counts.len() < 2 {
            continue;
        }
        let title = format!("Throughput against threads: {}", charts_clip(&key));
        let mut chart = XyChart::new(title, "threads", "throughput (samples/s)", XAxis::Integer);
        chart.y_from_zero = true;
        let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in members {
            let label = format!("{} · {} · {}", label(r), r.scenario, r.agent);
            let point = (f64::from(r.threads), r.throughput_per_s);
            lines.entry(label).or_default().push(point);
        }
        chart.series = (lines.into_iter().enumerate())
            .map(|(i, (label, points))| Series {
                label,
                colour: i,
                points,
            })
            .collect();
        out.extend(chart.finish());
    }
    out
}

fn label(r: &ResultRecord) -> String {
    format!("{} ({})", r.model_ref(), r.quantization)
}

fn charts_clip(s: &str) -> String {
    match s.char_indices().nth(70) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// TTFT and TPOT (p50, whisker p90) and decode tokens/s of generative runs.
fn generation(records: &[ResultRecord]) -> Vec<Figure> {
    let gen: Vec<ResultRecord> = (records.iter())
        .filter(|r| r.generate.is_some() || r.ttft_ms.is_some())
        .cloned()
        .collect();
    let ms = |v: f64| format!("{} ms", fmt_num(v));
    let ttft = charts::bars(
        &gen,
        "Time to first token by model and agent (whisker: p90)",
        "time to first token (ms)",
        ms,
        |r| Some((r.ttft_ms?, r.generate.map(|g| g.ttft_p90_ms))),
        None,
    );
    let tpot = charts::bars(
        &gen,
        "Time per output token by model and agent (whisker: p90)",
        "time per output token (ms)",
        ms,
        |r| Some((r.tpot_ms?, r.generate.map(|g| g.tpot_p90_ms))),
        None,
    );
    let decode = charts::bars(
        &gen,
        "Decode speed by model and agent",
        "decode (tokens/s)",
        |v| format!("{} tokens/s", fmt_num(v)),
        |r| Some((r.decode_tokens_per_s?, None)),
        None,
    );
    [("ttft", ttft), ("tpot", tpot), ("decode", decode)]
        .into_iter()
        .filter_map(|(kind, c)| Some(figure(kind, 0, AnyChart::Bar(c?))))
        .collect()
}

/// Energy per inference (per token for generative runs); a run without a measurement keeps its
/// place, marked "not measured", so the gap shows.
fn energy(records: &[ResultRecord]) -> Vec<Figure> {
    let (gen, other): (Vec<ResultRecord>, Vec<ResultRecord>) =
        records.iter().cloned().partition(|r| r.generate.is_some());
    let j = |v: f64| format!("{} J", fmt_num(v));
    let per_inference = charts::bars(
        &other,
        "Energy per inference by model and agent",
        "energy per inference (J)",
        j,
        |r| Some((r.energy_j_per_inference?, None)),
        Some("not measured"),
    );
    let per_token = charts::bars(
        &gen,
        "Energy per generated token by model and agent",
        "energy per token (J)",
        j,
        |r| {
            let tokens = f64::from(r.generate?.generated_tokens);
            Some((r.energy_j_per_inference? / tokens, None))
        },
        Some("not measured"),
    );
    [("energy", per_inference), ("energy-token", per_token)]
        .into_iter()
        .filter_map(|(kind, c)| Some(figure(kind, 0, AnyChart::Bar(c?))))
        .collect()
}

/// p90 over time per (model, scenario), one chart per device class that has more than one
/// run, regressions marked where they were found and baselines drawn as dashed lines.
fn trends(input: &ReportInput) -> Vec<XyChart> {
    let mut by_class: BTreeMap<String, Vec<&ResultRecord>> = BTreeMap::new();
    for r in &input.records {
        by_class.entry(r.device_class()).or_default().push(r);
    }
    let mut out = Vec::new();
    for (class, members) in by_class {
        let runs: BTreeSet<&str> = members.iter().map(|r| r.run_id.as_str()).collect();
        if runs.len() < 2 {
            continue;
        }
        let title = format!("p90 over time: {}", charts_clip(&class));
        let mut chart = XyChart::new(title, "run start (UTC)", "p90 latency (ms)", XAxis::Date);
        // One point per run: the median p90 of the class's agents in that run, at its start.
        let mut per_run: BTreeMap<(String, &str), (f64, Vec<f64>)> = BTreeMap::new();
        for r in &members {
            let Some(t) = instant(&r.started_at) else {
                continue;
            };
            let key = format!("{} · {}", label(r), r.scenario);
            let entry = per_run
                .entry((key, r.run_id.as_str()))
                .or_insert((t, Vec::new()));
            entry.0 = entry.0.min(t);
            entry.1.push(r.latency_ms.p90);
        }
        let points: BTreeMap<(String, &str), (f64, f64)> = per_run
            .into_iter()
            .map(|(key, (t, mut values))| {
                values.sort_by(f64::total_cmp);
                (key, (t, values[values.len() / 2]))
            })
            .collect();
        let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for ((key, _), point) in &points {
            lines.entry(key.clone()).or_default().push(*point);
        }
        chart.series = (lines.into_iter().enumerate())
            .map(|(i, (label, points))| Series {
                label,
                colour: i,
                points,
            })
            .collect();
        for g in input.regressions.iter().filter(|g| g.device_class == class) {
            let hit = members.iter().find(|r| {
                r.run_id == g.run_id && r.model_ref() == g.model && r.scenario == g.scenario
            });
            let Some(r) = hit else { continue };
            let key = format!("{} · {}", label(r), r.scenario);
            let Some(&at) = points.get(&(key, r.run_id.as_str())) else {
                continue;
            };
            let ack = if g.acknowledged { ", acknowledged" } else { "" };
            chart.marks.push(Mark {
                at,
                shape: charts::Shape::Triangle,
                colour: VERMILLION,
                label: format!("{} {:.2}× ({}{ack})", g.metric, g.ratio, g.kind),
            });
        }
        for b in input.baselines.iter().filter(|b| b.device_class == class) {
            let run_start = (members.iter())
                .filter(|r| r.run_id == b.run_id)
                .filter_map(|r| instant(&r.started_at))
                .reduce(f64::min);
            if let Some(t) = run_start.or_else(|| instant(&b.set_at)) {
                chart
                    .vlines
                    .push((t, format!("baseline {}", charts_clip(&b.run_id))));
            }
        }
        chart.note = "▲ regression (metric, new/baseline ratio) · dashed line: baseline run".into();
        out.extend(chart.finish());
    }
    out
}

/// A rollout's gate decisions: each metric's measured value by wave, its limit dashed,
/// passed as dots and breached as crosses.
fn rollout(r: &RolloutSummary) -> Option<XyChart> {
    let measured: Vec<_> = r.gates.iter().filter(|g| g.value.is_some()).collect();
    if measured.is_empty() {
        return None;
    }
    let title = format!(
        "Rollout {} of {}: gate by wave ({})",
        r.id, r.model, r.state
    );
    let mut chart = XyChart::new(
        title,
        "wave",
        "candidate / active (×), quality",
        XAxis::Integer,
    );
    let metrics: Vec<String> = {
        let mut m: Vec<String> = Vec::new();
        for g in &measured {
            if !m.contains(&g.metric) {
                m.push(g.metric.clone());
            }
        }
        m
    };
    for (i, metric) in metrics.iter().enumerate() {
        let colour = [BLUE, ORANGE, charts::GREEN, charts::SKY][i % 4];
        let gates: Vec<_> = measured.iter().filter(|g| &g.metric == metric).collect();
        chart.series.push(Series {
            label: metric.clone(),
            colour,
            points: (gates.iter())
                .map(|g| (f64::from(g.wave), g.value.unwrap_or(f64::NAN)))
                .collect(),
        });
        if let Some(g) = gates.first() {
            let limit = format!("{metric} {} {}", g.comparison, fmt_num(g.limit));
            chart.hlines.push((g.limit, colour, limit));
        }
        for g in gates.iter().filter(|g| g.outcome == "breached") {
            chart.marks.push(Mark {
                at: (f64::from(g.wave), g.value.unwrap_or(f64::NAN)),
                shape: charts::Shape::Cross,
                colour: VERMILLION,
                label: format!("breached on {}", g.agent),
            });
        }
    }
    chart.note = "✕ breached · dashed: the gate's limit · dots: passed".into();
    chart.finish()
}
