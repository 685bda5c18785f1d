//! The Pareto chart of one device class: model size (or peak memory) against p90 latency,
//! points coloured by quality against the reference, the front of the best trade-offs drawn.

use std::collections::BTreeSet;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    axis_number, clip, draw_header, header_height, model_label, msg, padded, palette, text_style,
    Chart, BLUE, GREEN, TEXT, VERMILLION, WIDTH,
};
use crate::analysis::quality_score;
use crate::ResultRecord;

/// Legend colours for quality bins; index 8 + i would be a shade, so "not measured" is grey.
const NOT_MEASURED: usize = usize::MAX;

pub(crate) struct ParetoChart {
    title: String,
    x_desc: String,
    /// log10 of the x values, so 4 MB and 400 MB models both read.
    log_x: bool,
    legend: Vec<(String, usize)>,
    /// x, p90, colour, label.
    points: Vec<(f64, f64, usize, String)>,
    front: Vec<(f64, f64)>,
}

/// The Pareto chart of `class`'s records in `scenario`; `None` without a usable point.
pub(crate) fn pareto(
    class: &str,
    scenario: &str,
    records: &[&ResultRecord],
    references: &BTreeSet<String>,
    floor: f64,
) -> Option<ParetoChart> {
    let members: Vec<&ResultRecord> = (records.iter().copied())
        .filter(|r| r.device_class() == class && r.scenario == scenario)
        .filter(|r| r.latency_ms.p90.is_finite() && r.latency_ms.p90 >= 0.0)
        .collect();
    let by_size = members.iter().all(|r| r.model_bytes > 0);
    let x_of = |r: &ResultRecord| {
        if by_size {
            r.model_bytes as f64 / 1e6
        } else {
            r.peak_rss_bytes as f64 / 1e6
        }
    };
    let members: Vec<_> = members.into_iter().filter(|r| x_of(r) > 0.0).collect();
    if members.is_empty() {
        return None;
    }
    let (lo, hi) = members
        .iter()
        .map(|r| x_of(r))
        .fold((f64::MAX, 0.0_f64), |(a, b), x| (a.min(x), b.max(x)));
    let log_x = hi / lo > 20.0;
    let pct = format!("{:.0}%", floor * 100.0);
    let bins = [
        ("reference".to_string(), BLUE),
        (format!("≥ {pct} of the reference"), GREEN),
        (format!("< {pct} of the reference"), VERMILLION),
        ("quality not measured".to_string(), NOT_MEASURED),
    ];
    let bin = |r: &ResultRecord| match quality_score(r, references) {
        Some(q) if q >= 1.0 && references.contains(&r.model_ref()) => BLUE,
        Some(q) if q >= floor => GREEN,
        Some(_) => VERMILLION,
        None => NOT_MEASURED,
    };
    // One point (and one name) per model: agents of one class that measured the same model are
    // one figure of the class, their median p90.
    let mut by_model: std::collections::BTreeMap<String, Vec<&ResultRecord>> =
        std::collections::BTreeMap::new();
    for r in &members {
        by_model.entry(model_label(r)).or_default().push(r);
    }
    let mut points: Vec<_> = by_model
        .into_values()
        .map(|rs| {
            let median = |f: &dyn Fn(&ResultRecord) -> f64| {
                let mut v: Vec<f64> = rs.iter().map(|r| f(r)).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let p90 = median(&|r| r.latency_ms.p90);
            let x = median(&|r| x_of(r));
            let x = if log_x { x.log10() } else { x };
            // Coloured by the agent that measured quality, if one did.
            let measured = rs
                .iter()
                .copied()
                .find(|r| quality_score(r, references).is_some())
                .unwrap_or(rs[0]);
            (x, p90, bin(measured), clip(&model_label(rs[0]), 40))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front = Vec::new();
    for &(x, y, ..) in &points {
        if front.last().is_none_or(|&(_, best): &(f64, f64)| y < best) {
            front.push((x, y));
        }
    }
    let used: BTreeSet<usize> = points.iter().map(|p| p.2).collect();
    let legend = bins.into_iter().filter(|(_, c)| used.contains(c)).collect();
    Some(ParetoChart {
        title: format!("Size against p90 ({scenario}): {}", clip(class, 80)),
        x_desc: format!(
            "{}{}",
            if by_size {
                "model size (MB)"
            } else {
                "peak RSS (MB)"
            },
            if log_x { ", log scale" } else { "" }
        ),
        log_x,
        legend,
        points,
        front,
    })
}

fn colour(c: usize) -> RGBAColor {
    if c == NOT_MEASURED {
        super::GREY.to_rgba()
    } else {
        palette(c)
    }
}

impl Chart for ParetoChart {
    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let columns = vec![
            "Model".into(),
            self.x_desc.clone(),
            "p90 (ms)".into(),
            "On the front".into(),
        ];
        let rows = self
            .points
            .iter()
            .map(|&(x, y, _, ref label)| {
                let on_front = self.front.iter().any(|&(fx, fy)| fx == x && fy == y);
                let x = if self.log_x { 10f64.powf(x) } else { x };
                vec![
                    label.clone(),
                    super::fmt_num(x),
                    super::fmt_num(y),
                    if on_front { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        (columns, rows)
    }

    fn name(&self) -> &str {
        &self.title
    }

    fn size(&self) -> (u32, u32) {
        (WIDTH, header_height(&self.legend) + 400)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        draw_header(root, &self.title, &[], false)?;
        // The legend's squares in the bins' own colours (grey is outside the palette).
        let label = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        let mut x = 12;
        for (text, c) in &self.legend {
            let y = 44 + super::LEGEND_ROW / 2;
            root.draw(&Circle::new((x + 10, y), 6, colour(*c).filled()))
                .map_err(msg)?;
            root.draw_text(text, &label, (x + 22, y)).map_err(msg)?;
            x += 22 + super::text_width(text) as i32 + 24;
        }
        root.draw(&PathElement::new(
            vec![(x, 44 + 11), (x + 22, 44 + 11)],
            BLACK.stroke_width(2),
        ))
        .map_err(msg)?;
        root.draw_text("Pareto front", &label, (x + 28, 44 + 11))
            .map_err(msg)?;
        let (_, body) = root.split_vertically(header_height(&self.legend));
        let xs = || self.points.iter().map(|p| p.0);
        let ys = || self.points.iter().map(|p| p.1);
        let x_range = padded(
            xs().fold(f64::INFINITY, f64::min),
            xs().fold(f64::NEG_INFINITY, f64::max),
        );
        let x_range = if self.log_x {
            (
                x_range.0.min(xs().fold(f64::INFINITY, f64::min) - 0.1),
                x_range.1,
            )
        } else {
            x_range
        };
        let y_range = padded(0.0, ys().fold(0.0, f64::max) * 1.08);
        let mut chart = ChartBuilder::on(&body)
            .margin_top(8)
            .margin_bottom(8)
            .margin_left(8)
            .margin_right(24)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(msg)?;
        let log_x = self.log_x;
        let x_fmt = move |v: &f64| {
            if log_x {
                significant(10f64.powf(*v))
            } else {
                axis_number(*v)
            }
        };
        chart
            .configure_mesh()
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| axis_number(*v))
            .x_desc(self.x_desc.as_str())
            .y_desc("p90 latency (ms)")
            .max_light_lines(2)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.15))
            .label_style(text_style(TEXT))
            .axis_desc_style(text_style(TEXT))
            .draw()
            .map_err(msg)?;
        // The front as a staircase from the top of the chart to its right edge: everything
        // above and right of it is beaten by a model on it.
        let mut steps = Vec::new();
        for (i, &(x, y)) in self.front.iter().enumerate() {
            let above = if i == 0 {
                y_range.1
            } else {
                steps.last().map_or(y, |p: &(f64, f64)| p.1)
            };
            steps.push((x, above));
            steps.push((x, y));
        }
        if let Some(&(_, y)) = self.front.last() {
            steps.push((x_range.1, y));
        }
        chart
            .draw_series(LineSeries::new(steps, BLACK.stroke_width(2)))
            .map_err(msg)?;
        let dots = (self.points.iter()).map(|p| Circle::new((p.0, p.1), 7, colour(p.2).filled()));
        chart.draw_series(dots).map_err(msg)?;
        let rings = (self.points.iter()).map(|p| Circle::new((p.0, p.1), 7, BLACK.stroke_width(1)));
        chart.draw_series(rings).map_err(msg)?;
        // Names beside the front's points, and beside every point when there are few.
        let on_front = |p: &(f64, f64, usize, String)| self.front.contains(&(p.0, p.1));
        let all = self.points.len() <= 12;
        // Each name goes to the first free place around its point (right above, right below,
        // left above, left below); a name with no free place is left out (the heatmap and the
        // tables name every model).
        let mut placed: Vec<[i32; 4]> = (self.points.iter())
            .map(|p| {
                let (x, y) = chart.backend_coord(&(p.0, p.1));
                [x - 8, y - 8, x + 8, y + 8]
            })
            .collect();
        let size = TEXT - 2.0;
        let h = size as i32 + 2;
        for p in self.points.iter().filter(|p| all || on_front(p)) {
            let (px, py) = chart.backend_coord(&(p.0, p.1));
            let w = super::text_width(&p.3) as i32 * 13 / 15 + 4;
            let spots = [
                (px + 9, py - 6 - h),
                (px + 9, py + 6),
                (px - 9 - w, py - 6 - h),
                (px - 9 - w, py + 6),
            ];
            let free = spots.into_iter().find(|&(x, y)| {
                let r = [x, y, x + w, y + h];
                x >= 0
                    && x + w <= WIDTH as i32
                    && !placed
                        .iter()
                        .any(|q| r[0] < q[2] && q[0] < r[2] && r[1] < q[3] && q[1] < r[3])
            });
            if let Some((x, y)) = free {
                placed.push([x, y, x + w, y + h]);
                let style = text_style(size).pos(Pos::new(HPos::Left, VPos::Top));
                root.draw_text(&p.3, &style, (x, y)).map_err(msg)?;
            }
        }
        Ok(())
    }
}

/// Two significant figures, e.g. 3.2, 45, 120.
fn significant(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return String::new();
    }
    let digits = (1 - v.log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn two_agents_of_one_class_make_one_point_and_one_name_per_model() {
        let record = crate::html::tests::record;
        let (a1, a2, b1, b2) = (
            record("pi-a", "resnet50", 38.0, 4),
            record("pi-b", "resnet50", 40.0, 4),
            record("pi-a", "mobilenetv3", 6.5, 4),
            record("pi-b", "mobilenetv3", 6.9, 4),
        );
        let all = [&a1, &a2, &b1, &b2];
        let chart = super::pareto(
            &a1.device_class(),
            &a1.scenario,
            &all,
            &BTreeSet::new(),
            0.99,
        )
        .unwrap();
        let names: Vec<&str> = chart.points.iter().map(|p| p.3.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let distinct: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(distinct.len(), 2, "{names:?}");
    }
}
