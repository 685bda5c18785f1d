//! Report charts: plotters drawing code (bars, latency CDFs, Pareto fronts, the p90 heatmap,
//! line charts for threads, trends and rollouts), drawn with the bundled DejaVu Sans font as
//! inline SVG for the HTML and as PNG files.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::{ReportError, ResultRecord};

mod bars;
mod cdf;
mod heatmap;
mod pareto;
mod xy;

pub(crate) use bars::{bars, latency_overview, peak_memory, BarChart};
pub(crate) use cdf::{latency_cdf, CdfChart};
pub(crate) use heatmap::{p90_heatmap, HeatmapChart};
pub(crate) use pareto::{pareto, ParetoChart};
pub(crate) use xy::{Mark, Series, Shape, XAxis, XyChart};

const WIDTH: u32 = 960;
/// Text size for labels, legends and values; plotters' SVG output shows it at about 12 px.
const TEXT: f64 = 15.0;
const TITLE: f64 = 20.0;
const LEGEND_ROW: i32 = 22;
/// The Okabe–Ito palette, which colour-blind readers tell apart: blue, orange, bluish green,
/// vermillion, reddish purple, sky blue, yellow, black.
pub(crate) const OKABE_ITO: [(u8, u8, u8); 8] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (213, 94, 0),
    (204, 121, 167),
    (86, 180, 233),
    (240, 228, 66),
    (0, 0, 0),
];
/// Okabe–Ito's colours by role.
pub(crate) const BLUE: usize = 0;
pub(crate) const ORANGE: usize = 1;
pub(crate) const GREEN: usize = 2;
pub(crate) const VERMILLION: usize = 3;
pub(crate) const SKY: usize = 5;
/// A neutral grey for "not measured" and for what has no quality.
pub(crate) const GREY: RGBColor = RGBColor(150, 150, 150);

/// A chart that can be drawn on any plotters backend (SVG for the report, bitmaps for checks).
pub(crate) trait Chart {
    /// The chart's title, also its name in errors.
    fn name(&self) -> &str;
    /// The numbers it draws, as a table (its columns, then its rows): what a reader who cannot
    /// see the chart, or wants the exact values, reads beside it.
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>);
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Every kind of chart the report draws, so a list of them can be drawn twice (SVG and PNG).
pub(crate) enum AnyChart {
    Bar(BarChart),
    Cdf(CdfChart),
    Heatmap(HeatmapChart),
    Pareto(ParetoChart),
    Xy(XyChart),
}

macro_rules! each_chart {
    ($value:expr, $c:ident => $body:expr) => {
        match $value {
            AnyChart::Bar($c) => $body,
            AnyChart::Cdf($c) => $body,
            AnyChart::Heatmap($c) => $body,
            AnyChart::Pareto($c) => $body,
            AnyChart::Xy($c) => $body,
        }
    };
}

impl Chart for AnyChart {
    fn name(&self) -> &str {
        each_chart!(self, c => c.name())
    }

    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        each_chart!(self, c => c.table())
    }

    fn size(&self) -> (u32, u32) {
        each_chart!(self, c => c.size())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        each_chart!(self, c => c.draw(root))
    }
}

/// Draws `chart` into the PNG file `path`.
pub(crate) fn to_png<C: Chart>(chart: &C, path: &Path) -> Result<(), ReportError> {
    let error = |message: String| ReportError::Chart {
        chart: chart.name().to_string(),
        message,
    };
    ensure_fonts().map_err(error)?;
    let root = BitMapBackend::new(path, chart.size()).into_drawing_area();
    chart.draw(&root).map_err(error)?;
    root.present().map_err(|e| error(e.to_string()))
}

/// Draws `chart` as an `<svg>` element, without XML prolog, for inlining in HTML.
pub(crate) fn to_svg<C: Chart>(chart: &C) -> Result<String, ReportError> {
    let error = |message: String| ReportError::Chart {
        chart: chart.name().to_string(),
        message,
    };
    ensure_fonts().map_err(error)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size()).into_drawing_area();
        chart.draw(&root).map_err(error)?;
        root.present().map_err(|e| error(e.to_string()))?;
    }
    match svg.find("<svg") {
        Some(start) => Ok(svg.split_off(start)),
        None => Err(error("plotters wrote no <svg> element".to_string())),
    }
}

/// Registers DejaVu Sans as "sans-serif" once, so drawing needs no system fonts.
fn ensure_fonts() -> Result<(), String> {
    static FONTS: OnceLock<Result<(), String>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .and_then(|()| register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold()))
                .map_err(|_| "the bundled DejaVu Sans font does not load".to_string())
        })
        .clone()
}

/// "name@version (quantization)": how the report names a model.
fn model_label(r: &ResultRecord) -> String {
    format!("{}@{} ({})", r.model, r.model_version, r.quantization)
}

/// A number with 1 to 3 decimals depending on its size; "–" when not finite.
pub(crate) fn fmt_num(v: f64) -> String {
    match v.abs() {
        a if !a.is_finite() => "–".to_string(),
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// Megabytes with one decimal.
pub(crate) fn fmt_mb(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "–".to_string()
    }
}

/// The thread counts, scenarios and workloads each model ran with, so series labels can name
/// the setting.
type SettingSets = (BTreeSet<u32>, BTreeSet<String>, BTreeSet<String>);
struct Settings(HashMap<String, SettingSets>);

impl Settings {
    fn of(records: &[ResultRecord]) -> Self {
        let mut map: HashMap<_, SettingSets> = HashMap::new();
        for r in records {
            let entry = map.entry(model_label(r)).or_default();
            entry.0.insert(r.threads);
            entry.1.insert(r.scenario.clone());
            entry.2.insert(r.workload());
        }
        Settings(map)
    }

    /// " · 4 threads", " · offline", " · slm-generate · 32-token prompt", or "" when the model
    /// ran in one setting only.
    fn suffix(&self, r: &ResultRecord) -> String {
        let mut suffix = String::new();
        if let Some((threads, scenarios, workloads)) = self.0.get(&model_label(r)) {
            if threads.len() > 1 {
                let s = if r.threads == 1 { "" } else { "s" };
                suffix += &format!(" · {} thread{s}", r.threads);
            }
            if scenarios.len() > 1 {
                suffix += &format!(" · {}", clip(&r.scenario, 24));
            }
            if workloads.len() > 1 {
                suffix += &format!(" · {}", clip(&r.workload(), 40));
            }
        }
        suffix
    }
}

/// Draws the title and a legend that wraps onto as many rows as it needs.
fn draw_header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    legend: &[(String, usize)],
    lines: bool,
) -> Result<(), String> {
    draw_title(root, title)?;
    let label = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
    for ((text, colour), (x, y)) in legend.iter().zip(legend_layout(legend)) {
        let (x, y) = (x + 12, y + 44 + LEGEND_ROW / 2);
        let colour = palette(*colour);
        if lines {
            let path = PathElement::new(vec![(x, y), (x + 22, y)], colour.stroke_width(3));
            root.draw(&path).map_err(msg)?;
        } else {
            root.draw(&Rectangle::new(
                [(x + 4, y - 7), (x + 18, y + 7)],
                colour.filled(),
            ))
            .map_err(msg)?;
        }
        root.draw_text(text, &label, (x + 28, y)).map_err(msg)?;
    }
    Ok(())
}

/// The chart's title in bold, cut with "…" where it would run past the chart's right edge.
fn draw_title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<(), String> {
    let bold = FontDesc::new(FontFamily::SansSerif, TITLE, FontStyle::Bold);
    let fits = |t: &str| bold.box_size(t).map_or(true, |(w, _)| w + 24 <= WIDTH);
    let mut text = title.to_string();
    let mut keep = title.chars().count();
    while !fits(&text) && keep > 8 {
        keep -= 2;
        text = clip(title, keep);
    }
    root.draw_text(&text, &bold.color(&BLACK), (12, 10))
        .map_err(msg)
}

/// Top-left corners of legend entries relative to the legend, wrapping before the chart's edge.
fn legend_layout(legend: &[(String, usize)]) -> Vec<(i32, i32)> {
    let (mut x, mut y) = (0, 0);
    let mut place = |(text, _): &(String, usize)| {
        let w = 28 + text_width(text) as i32 + 20;
        if x > 0 && x + w > WIDTH as i32 - 24 {
            (x, y) = (0, y + LEGEND_ROW);
        }
        x += w;
        (x - w, y)
    };
    legend.iter().map(&mut place).collect()
}

fn header_height(legend: &[(String, usize)]) -> u32 {
    let rows = legend_layout(legend)
        .last()
        .map_or(0, |&(_, y)| y + LEGEND_ROW);
    (44 + rows + 6) as u32
}

/// The colour of series `i`: Okabe–Ito, then the same eight darker, then lighter (a legend
/// that long needs its labels anyway).
pub(crate) fn palette(i: usize) -> RGBAColor {
    let (r, g, b) = OKABE_ITO[i % OKABE_ITO.len()];
    let shade = |c: u8, f: f64| (f64::from(c) * f).round().clamp(0.0, 255.0) as u8;
    let tint = |c: u8| (f64::from(c) + (255.0 - f64::from(c)) * 0.45).round() as u8;
    match (i / OKABE_ITO.len()) % 3 {
        0 => RGBColor(r, g, b).to_rgba(),
        1 => RGBColor(shade(r, 0.6), shade(g, 0.6), shade(b, 0.6)).to_rgba(),
        _ => RGBColor(tint(r), tint(g), tint(b)).to_rgba(),
    }
}

fn text_style(size: f64) -> TextStyle<'static> {
    FontDesc::new(FontFamily::SansSerif, size, FontStyle::Normal).color(&BLACK)
}

fn text_width(text: &str) -> u32 {
    let font = FontDesc::new(FontFamily::SansSerif, TEXT, FontStyle::Normal);
    (font.box_size(text).map(|(w, _)| w))
        .unwrap_or_else(|_| (text.chars().count() as f64 * TEXT * 0.6) as u32)
}

/// `lo..hi` widened by 5 % (or around the value when `lo == hi`), never below 0 when `lo` is not.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return (0.0, 1.0);
    }
    let min_span = lo.abs().max(hi.abs()) * 0.02 + 1e-6;
    let pad = ((hi - lo) * 0.05).max((min_span - (hi - lo)) / 2.0);
    let (a, b) = (lo - pad, hi + pad);
    let a = if lo >= 0.0 { a.max(0.0) } else { a };
    if a.is_finite() && b.is_finite() {
        (a, b)
    } else {
        (0.0, 1.0)
    }
}

/// An axis tick: up to 6 decimals, trailing zeros dropped.
fn axis_number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn first_seen(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn index_of(items: &[String], item: &str) -> usize {
    items.iter().position(|i| i == item).unwrap_or(0)
}

fn msg(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(padded(f64::NAN, 1.0), (0.0, 1.0));
        assert_eq!(padded(2.0, 1.0), (0.0, 1.0));
        let (a, b) = padded(1.0, 1.0);
        assert!(a < 1.0 && b > 1.0);
        let (a, b) = padded(0.0, 0.0);
        assert!(a == 0.0 && b > 0.0);
        let (a, b) = padded(f64::MAX / 2.0, f64::MAX);
        assert!(a.is_finite() && b.is_finite() && a < b);
    }

    #[test]
    fn numbers_and_names_are_formatted() {
        assert_eq!(fmt_num(123.456), "123.5");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_num(0.12345), "0.123");
        assert_eq!(fmt_num(f64::NAN), "–");
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(10.0), "10");
        assert_eq!(clip("ünïcödé", 3), "ünï…");
        assert_eq!(clip("short", 8), "short");
    }
}
