//! The model × device-class heatmap of p90 latency: one row per model, one column per device
//! class (numbered, with a key underneath), each cell shaded on a log scale and labelled.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{clip, fmt_num, model_label, msg, text_style, text_width, Chart, GREY, TEXT, WIDTH};
use crate::analysis::main_scenario;
use crate::ResultRecord;

const ROW: i32 = 26;
const KEY_ROW: i32 = 20;
const TOP: i32 = 84;

pub(crate) struct HeatmapChart {
    title: String,
    models: Vec<String>,
    classes: Vec<String>,
    /// p90 per [model][class], `None` where that model did not run on that class.
    cells: Vec<Vec<Option<f64>>>,
    range: (f64, f64),
}

/// The heatmap over `records` (the latest of each setting), in their most common scenario;
/// `None` without a finite p90.
pub(crate) fn p90_heatmap(records: &[&ResultRecord]) -> Option<HeatmapChart> {
    let scenario = main_scenario(records);
    let used: Vec<&ResultRecord> = (records.iter().copied())
        .filter(|r| {
            r.scenario == scenario && r.latency_ms.p90.is_finite() && r.latency_ms.p90 > 0.0
        })
        .collect();
    // Results of different workloads (suites, prompt lengths) are rows of their own.
    let workloads: std::collections::BTreeSet<String> = used.iter().map(|r| r.workload()).collect();
    let row = |r: &ResultRecord| match workloads.len() {
        0 | 1 => model_label(r),
        _ => format!("{} · {}", model_label(r), r.workload()),
    };
    let models = super::first_seen(used.iter().map(|r| row(r)));
    let classes = super::first_seen(used.iter().map(|r| r.device_class()));
    if used.is_empty() {
        return None;
    }
    let mut cells = vec![vec![None::<f64>; classes.len()]; models.len()];
    for r in &used {
        let (m, c) = (
            super::index_of(&models, &row(r)),
            super::index_of(&classes, &r.device_class()),
        );
        let cell = &mut cells[m][c];
        *cell = Some(cell.map_or(r.latency_ms.p90, |v| v.min(r.latency_ms.p90)));
    }
    let values = || cells.iter().flatten().flatten().copied();
    let range = (
        values().fold(f64::INFINITY, f64::min),
        values().fold(0.0, f64::max),
    );
    Some(HeatmapChart {
        title: format!("p90 latency (ms) by model and device class ({scenario})"),
        models: models.iter().map(|m| clip(m, 64)).collect(),
        classes,
        cells,
        range,
    })
}

impl HeatmapChart {
    fn label_width(&self) -> i32 {
        let widest = self.models.iter().map(|m| text_width(m)).max().unwrap_or(0);
        (widest as i32 + 20).clamp(80, WIDTH as i32 * 2 / 5)
    }

    /// 0 (fastest) to 1 (slowest), on a log scale.
    fn shade(&self, v: f64) -> f64 {
        let (lo, hi) = (self.range.0.ln(), self.range.1.ln());
        if hi - lo > 1e-12 {
            ((v.ln() - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }
}

/// Pale sky blue → Okabe–Ito blue → dark blue: one hue, so every reader sees the order.
fn ramp(t: f64) -> RGBColor {
    let stops = [
        (235.0, 245.0, 252.0),
        (0.0, 114.0, 178.0),
        (8.0, 40.0, 80.0),
    ];
    let (a, b, u) = if t < 0.6 {
        (stops[0], stops[1], t / 0.6)
    } else {
        (stops[1], stops[2], (t - 0.6) / 0.4)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

impl Chart for HeatmapChart {
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut columns = vec!["Model".to_string()];
        columns.extend(self.classes.iter().cloned());
        let rows = self
            .models
            .iter()
            .zip(&self.cells)
            .map(|(model, cells)| {
                let mut row = vec![model.clone()];
                row.extend(cells.iter().map(|c| c.map_or("—".into(), super::fmt_num)));
                row
            })
            .collect();
        (columns, rows)
    }

    fn name(&self) -> &str {
        &self.title
    }

    fn size(&self) -> (u32, u32) {
        let rows = self.models.len() as i32 * ROW;
        let key = self.classes.len() as i32 * KEY_ROW;
        (WIDTH, (TOP + rows + 20 + key + 12) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        super::draw_title(root, &self.title)?;
        let left = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        let centre = text_style(TEXT).pos(Pos::new(HPos::Center, VPos::Center));
        // The scale: fastest to slowest in ten swatches.
        let (lo, hi) = (fmt_num(self.range.0), fmt_num(self.range.1));
        root.draw_text(&format!("{lo} ms (fastest)"), &left, (12, 54))
            .map_err(msg)?;
        let x0 = 12 + text_width(&format!("{lo} ms (fastest)")) as i32 + 10;
        for i in 0..10 {
            let x = x0 + i * 22;
            let c = ramp(f64::from(i) / 9.0);
            root.draw(&Rectangle::new([(x, 46), (x + 22, 62)], c.filled()))
                .map_err(msg)?;
        }
        root.draw_text(
            &format!("{hi} ms (slowest), log scale"),
            &left,
            (x0 + 230, 54),
        )
        .map_err(msg)?;
        let label_w = self.label_width();
        let n = self.classes.len().max(1) as i32;
        let col = ((WIDTH as i32 - label_w - 16) / n).clamp(40, 200);
        let right = text_style(TEXT).pos(Pos::new(HPos::Right, VPos::Center));
        for c in 0..self.classes.len() {
            let x = label_w + c as i32 * col + col / 2;
            root.draw_text(&format!("D{}", c + 1), &centre, (x, TOP - 8))
                .map_err(msg)?;
        }
        for (m, model) in self.models.iter().enumerate() {
            let y = TOP + m as i32 * ROW;
            root.draw_text(model, &right, (label_w - 8, y + ROW / 2))
                .map_err(msg)?;
            for (c, cell) in self.cells[m].iter().enumerate() {
                let x = label_w + c as i32 * col;
                let rect = [(x + 1, y + 1), (x + col - 1, y + ROW - 1)];
                let (fill, text, ink) = match cell {
                    Some(v) => {
                        let t = self.shade(*v);
                        let ink = if t > 0.45 { WHITE } else { BLACK };
                        (ramp(t), fmt_num(*v), ink)
                    }
                    None => (RGBColor(242, 242, 242), "–".to_string(), GREY),
                };
                root.draw(&Rectangle::new(rect, fill.filled()))
                    .map_err(msg)?;
                let style = text_style(TEXT - 1.0)
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                if text_width(&text) as i32 + 4 < col {
                    root.draw_text(&text, &style, (x + col / 2, y + ROW / 2))
                        .map_err(msg)?;
                }
            }
        }
        let key_top = TOP + self.models.len() as i32 * ROW + 20;
        for (c, class) in self.classes.iter().enumerate() {
            let y = key_top + c as i32 * KEY_ROW;
            let text = format!("D{} = {}", c + 1, clip(class, 110));
            root.draw_text(&text, &left, (12, y + KEY_ROW / 2))
                .map_err(msg)?;
        }
        Ok(())
    }
}
