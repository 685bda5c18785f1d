//! Latency distribution (CDF) charts, one per agent.

use std::collections::HashMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    axis_number, clip, draw_header, first_seen, fmt_num, header_height, index_of, model_label, msg,
    padded, palette, text_style, Chart, Settings, TEXT, WIDTH,
};
use crate::ResultRecord;

/// One agent's latency CDF: x = latency, y = percentile, one line per model (and setting).
pub(crate) struct CdfChart {
    title: String,
    x_desc: String,
    x_range: (f64, f64),
    /// Series labels with their colours.
    legend: Vec<(String, usize)>,
    /// Colour index and points, one per legend entry.
    lines: Vec<(usize, Vec<(f64, f64)>)>,
}

/// `agent`'s latency distribution chart; `None` when none of its records has percentiles.
/// Colours follow the series' order over all `records`, so a model keeps its colour across agents.
pub(crate) fn latency_cdf(agent: &str, records: &[ResultRecord]) -> Option<CdfChart> {
    let settings = Settings::of(records);
    // Series names: model and setting, numbered when an agent has several such records.
    let mut seen = HashMap::new();
    let names: Vec<String> = (records.iter())
        .map(|r| {
            let name = model_label(r) + &settings.suffix(r);
            let n: &mut usize = seen.entry((r.agent.as_str(), name.clone())).or_default();
            *n += 1;
            if *n > 1 {
                format!("{name} #{n}")
            } else {
                name
            }
        })
        .collect();
    let keys = first_seen(names.iter().cloned());
    let (mut legend, mut lines) = (vec![], vec![]);
    for (r, name) in records.iter().zip(&names).filter(|(r, _)| r.agent == agent) {
        let step = 100.0 / (r.latency_percentiles_ms.len().max(2) - 1) as f64;
        let points: Vec<_> = (r.latency_percentiles_ms.iter().enumerate())
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (v, (i as f64 * step).min(100.0)))
            .collect();
        if !points.is_empty() {
            let colour = index_of(&keys, name);
            legend.push((clip(name, 64), colour));
            lines.push((colour, points));
        }
    }
    let all = || lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
    let (lo, hi) = (
        all().fold(f64::INFINITY, f64::min),
        all().fold(f64::NEG_INFINITY, f64::max),
    );
    let p99 = (lines.iter())
        .filter_map(|(_, p)| p.iter().rev().find(|p| p.1 <= 99.0).map(|p| p.0))
        .fold(lo, f64::max);
    // A far tail squeezes every line against the axis: cut the axis and say so.
    let cut = lo + (p99 - lo) * 1.5;
    let mut x_desc = "latency (ms)".to_string();
    let x_hi = if p99 > lo && hi > cut {
        x_desc += &format!(
            ", axis cut at {} (slowest query: {})",
            fmt_num(cut),
            fmt_num(hi)
        );
        lines.iter_mut().for_each(|(_, p)| *p = clip_line(p, cut));
        cut
    } else {
        hi
    };
    let title = format!("{}: latency distribution", clip(agent, 64));
    let x_range = padded(lo, x_hi);
    (!lines.is_empty()).then_some(CdfChart {
        title,
        x_desc,
        x_range,
        legend,
        lines,
    })
}

impl Chart for CdfChart {
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let quantiles = [50.0, 90.0, 99.0, 100.0];
        let mut columns = vec!["Series".to_string()];
        columns.extend(quantiles.iter().map(|q| format!("p{q} ({})", self.x_desc)));
        let rows = self
            .legend
            .iter()
            .zip(&self.lines)
            .map(|((label, _), (_, points))| {
                let mut row = vec![label.clone()];
                row.extend(quantiles.iter().map(|&q| {
                    points
                        .iter()
                        .find(|p| p.1 >= q - 1e-9)
                        .map_or("—".to_string(), |p| super::fmt_num(p.0))
                }));
                row
            })
            .collect();
        (columns, rows)
    }

    fn name(&self) -> &str {
        &self.title
    }

    fn size(&self) -> (u32, u32) {
        (WIDTH, header_height(&self.legend) + 380)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        draw_header(root, &self.title, &self.legend, true)?;
        let (_, body) = root.split_vertically(header_height(&self.legend));
        let mut chart = ChartBuilder::on(&body)
            .margin_top(8)
            .margin_bottom(8)
            .margin_left(8)
            .margin_right(24)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(self.x_range.0..self.x_range.1, 0.0..100.0)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(11)
            .x_label_formatter(&|v| axis_number(*v))
            .y_label_formatter(&|v| axis_number(*v))
            .x_desc(self.x_desc.as_str())
            .y_desc("percentile")
            .max_light_lines(2)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.15))
            .label_style(text_style(TEXT))
            .axis_desc_style(text_style(TEXT))
            .draw()
            .map_err(msg)?;
        for (colour, points) in &self.lines {
            let style = palette(*colour).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(msg)?;
        }
        Ok(())
    }
}

/// `points` (ascending in x) up to `x_max`, ending exactly at `x_max` when they went past it.
fn clip_line(points: &[(f64, f64)], x_max: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = vec![];
    for &(x, y) in points {
        if x <= x_max {
            out.push((x, y));
            continue;
        }
        if let Some(&(px, py)) = out.last() {
            out.push((x_max, py + (y - py) * (x_max - px) / (x - px)));
        }
        break;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_the_axis_end() {
        let points = [(1.0, 0.0), (2.0, 50.0), (4.0, 100.0)];
        assert_eq!(
            clip_line(&points, 3.0),
            vec![(1.0, 0.0), (2.0, 50.0), (3.0, 75.0)]
        );
        assert_eq!(clip_line(&points, 9.0), points.to_vec());
    }
}
