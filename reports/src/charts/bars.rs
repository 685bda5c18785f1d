//! Grouped horizontal bar charts: p50 latency with p90 whiskers, peak memory, generation
//! timings and energy (where a value was not measured the bar's place says so: never a zero bar).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    axis_number, clip, draw_header, first_seen, fmt_mb, fmt_num, header_height, index_of,
    model_label, msg, padded, palette, text_style, text_width, Chart, Settings, GREY, TEXT, WIDTH,
};
use crate::ResultRecord;

/// Pixels per bar.
const SLOT: f64 = 24.0;
/// Space between two models' bar groups, in bars.
const GROUP_GAP: f64 = 0.6;

/// Horizontal grouped bars: one group per model, one bar per agent (and setting), coloured by
/// agent, with an optional whisker from the bar's end to a second value.
pub(crate) struct BarChart {
    title: String,
    x_desc: String,
    /// Agents, with their colours.
    legend: Vec<(String, usize)>,
    /// Model labels with the y of their group's centre.
    groups: Vec<(String, f64)>,
    separators: Vec<f64>,
    bars: Vec<Bar>,
    slots: f64,
    x_max: f64,
}

struct Bar {
    y: f64,
    colour: usize,
    /// `None`: not measured; the slot shows `text` and no bar.
    value: Option<f64>,
    whisker: Option<f64>,
    text: String,
    /// The model and the agent it stands for (the chart's table).
    model: String,
    agent: String,
}

/// p50 latency per model × agent with a p90 whisker; `None` without usable records.
pub(crate) fn latency_overview(records: &[ResultRecord]) -> Option<BarChart> {
    let title = "p50 latency by model and agent (whisker: p90)";
    bar_chart(
        records,
        title,
        "latency (ms)",
        |v| format!("{} ms", fmt_num(v)),
        |r| Some((r.latency_ms.p50, Some(r.latency_ms.p90))),
        None,
    )
}

/// Peak resident memory per model × agent; `None` without records.
pub(crate) fn peak_memory(records: &[ResultRecord]) -> Option<BarChart> {
    let title = "Peak memory (RSS) by model and agent";
    bar_chart(
        records,
        title,
        "peak RSS (MB)",
        |v| format!("{} MB", fmt_mb(v)),
        |r| Some((r.peak_rss_bytes as f64 / 1e6, None)),
        None,
    )
}

/// A bar per record: `value` gives the bar and an optional whisker, `None` when the record has
/// no such value; with `gap` such records keep their slot, labelled `gap`, instead of vanishing.
pub(crate) fn bars(
    records: &[ResultRecord],
    title: &str,
    x_desc: &str,
    fmt: impl Fn(f64) -> String,
    value: impl Fn(&ResultRecord) -> Option<(f64, Option<f64>)>,
    gap: Option<&str>,
) -> Option<BarChart> {
    bar_chart(records, title, x_desc, fmt, value, gap)
}

fn bar_chart(
    records: &[ResultRecord],
    title: &str,
    x_desc: &str,
    fmt: impl Fn(f64) -> String,
    value: impl Fn(&ResultRecord) -> Option<(f64, Option<f64>)>,
    gap: Option<&str>,
) -> Option<BarChart> {
    let settings = Settings::of(records);
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    let usable: Vec<_> = records
        .iter()
        .filter_map(|r| match value(r) {
            Some((v, w)) if ok(v) => Some((r, Some(v), w.filter(|&w| ok(w) && w >= v))),
            _ => gap.map(|_| (r, None, None)),
        })
        .collect();
    if usable.iter().all(|(_, v, _)| v.is_none()) {
        return None;
    }
    let agents = first_seen(usable.iter().map(|(r, ..)| r.agent.clone()));
    let models = first_seen(usable.iter().map(|(r, ..)| model_label(r)));
    let slots = usable.len() as f64 + GROUP_GAP * (models.len() - 1) as f64;
    let (mut top, mut groups, mut separators, mut bars) = (slots, vec![], vec![], vec![]);
    for model in &models {
        if top < slots {
            separators.push(top - GROUP_GAP / 2.0);
            top -= GROUP_GAP;
        }
        let mut members: Vec<_> = usable
            .iter()
            .filter(|(r, ..)| model_label(r) == *model)
            .collect();
        members.sort_by_key(|(r, ..)| (index_of(&agents, &r.agent), r.threads, r.scenario.clone()));
        let start = top;
        for &&(r, v, whisker) in &members {
            let text = v.map_or_else(|| gap.unwrap_or("").to_string(), &fmt) + &settings.suffix(r);
            let colour = index_of(&agents, &r.agent);
            bars.push(Bar {
                y: top - 0.5,
                colour,
                value: v,
                whisker,
                text,
                model: model.clone(),
                agent: r.agent.clone(),
            });
            top -= 1.0;
        }
        groups.push((clip(model, 48), (start + top) / 2.0));
    }
    let x_max = bars
        .iter()
        .filter_map(|b| b.whisker.or(b.value))
        .fold(0.0, f64::max);
    let (title, x_desc) = (title.to_string(), x_desc.to_string());
    let legend = agents
        .iter()
        .enumerate()
        .map(|(i, a)| (clip(a, 48), i))
        .collect();
    Some(BarChart {
        title,
        x_desc,
        legend,
        groups,
        separators,
        bars,
        slots,
        x_max,
    })
}

impl BarChart {
    fn label_width(&self) -> u32 {
        let widest = self
            .groups
            .iter()
            .map(|(l, _)| text_width(l))
            .max()
            .unwrap_or(0);
        (widest + 16).clamp(60, WIDTH * 2 / 5)
    }

    fn right_margin(&self) -> u32 {
        let widest = self
            .bars
            .iter()
            .map(|b| text_width(&b.text))
            .max()
            .unwrap_or(0);
        (widest + 16).clamp(24, WIDTH / 3)
    }
}

impl Chart for BarChart {
    fn name(&self) -> &str {
        &self.title
    }

    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let columns = vec!["Model".into(), "Agent".into(), self.x_desc.clone()];
        let rows = self
            .bars
            .iter()
            .map(|b| {
                let whisker = b
                    .whisker
                    .map_or(String::new(), |w| format!(" (to {})", fmt_num(w)));
                vec![
                    b.model.clone(),
                    b.agent.clone(),
                    format!("{}{whisker}", b.text),
                ]
            })
            .collect();
        (columns, rows)
    }

    fn size(&self) -> (u32, u32) {
        let plot = (self.slots * SLOT).ceil() as u32;
        (WIDTH, header_height(&self.legend) + plot + 60)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        draw_header(root, &self.title, &self.legend, false)?;
        let (_, body) = root.split_vertically(header_height(&self.legend));
        let x_range = padded(0.0, self.x_max);
        let mut chart = ChartBuilder::on(&body)
            .margin_top(4)
            .margin_bottom(8)
            .margin_left(8)
            .margin_right(self.right_margin())
            .x_label_area_size(48)
            .y_label_area_size(self.label_width())
            .build_cartesian_2d(x_range.0..x_range.1, 0.0..self.slots)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(8)
            .x_label_formatter(&|v| axis_number(*v))
            .x_desc(self.x_desc.as_str())
            .max_light_lines(2)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.15))
            .label_style(text_style(TEXT))
            .axis_desc_style(text_style(TEXT))
            .draw()
            .map_err(msg)?;
        let grey = RGBColor(190, 190, 190);
        let separators = self
            .separators
            .iter()
            .map(|&y| PathElement::new(vec![(x_range.0, y), (x_range.1, y)], grey));
        chart.draw_series(separators).map_err(msg)?;
        for colour in 0..self.legend.len() {
            let style = palette(colour).filled();
            let bars = self.bars.iter().filter(|b| b.colour == colour);
            let rects = bars.filter_map(|b| {
                let v = b.value?;
                Some(Rectangle::new([(0.0, b.y - 0.36), (v, b.y + 0.36)], style))
            });
            chart.draw_series(rects).map_err(msg)?;
        }
        let whisker = BLACK.stroke_width(2);
        for b in &self.bars {
            if let (Some(v), Some(w)) = (b.value, b.whisker) {
                let (y0, y1) = (b.y - 0.25, b.y + 0.25);
                let lines = [vec![(v, b.y), (w, b.y)], vec![(w, y0), (w, y1)]];
                chart
                    .draw_series(lines.map(|l| PathElement::new(l, whisker)))
                    .map_err(msg)?;
            }
        }
        let label = text_style(TEXT).pos(Pos::new(HPos::Right, VPos::Center));
        for (text, y) in &self.groups {
            let (x, y) = chart.backend_coord(&(x_range.0, *y));
            root.draw_text(text, &label, (x - 8, y)).map_err(msg)?;
        }
        let value = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        let missing = FontDesc::new(FontFamily::SansSerif, TEXT, FontStyle::Normal)
            .color(&GREY)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for b in &self.bars {
            let end = b.whisker.or(b.value).unwrap_or(x_range.0);
            let (x, y) = chart.backend_coord(&(end, b.y));
            let style = if b.value.is_some() { &value } else { &missing };
            root.draw_text(&b.text, style, (x + 6, y)).map_err(msg)?;
        }
        Ok(())
    }
}
