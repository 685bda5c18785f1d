//! Line and point charts on numeric axes: throughput against threads, trends over time with
//! regressions and baselines marked, and rollout gate ratios by wave with their limits.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    axis_number, draw_header, header_height, msg, padded, palette, text_style, Chart, GREY, TEXT,
    WIDTH,
};

/// What the x values are, for their tick labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// Whole numbers only (threads, waves).
    Integer,
    /// Seconds since the epoch, shown as UTC dates.
    Date,
}

/// A line through points, in a colour and with a legend label.
pub(crate) struct Series {
    pub label: String,
    pub colour: usize,
    pub points: Vec<(f64, f64)>,
}

/// A point marked on top of the series.
pub(crate) struct Mark {
    pub at: (f64, f64),
    pub shape: Shape,
    pub colour: usize,
    /// Drawn beside the mark (empty: none).
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Triangle,
    Cross,
}

pub(crate) struct XyChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub x_axis: XAxis,
    /// Start the y axis at zero (rates) rather than near the smallest value.
    pub y_from_zero: bool,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
    /// Dashed vertical lines with a label at the top (baselines).
    pub vlines: Vec<(f64, String)>,
    /// Dashed horizontal lines in a colour with a label at the right (limits).
    pub hlines: Vec<(f64, usize, String)>,
    /// A line under the chart saying what the marks mean (empty: none).
    pub note: String,
}

impl XyChart {
    pub(crate) fn new(title: String, x_desc: &str, y_desc: &str, x_axis: XAxis) -> Self {
        XyChart {
            title,
            x_desc: x_desc.to_string(),
            y_desc: y_desc.to_string(),
            x_axis,
            y_from_zero: false,
            series: vec![],
            marks: vec![],
            vlines: vec![],
            hlines: vec![],
            note: String::new(),
        }
    }

    /// Drops non-finite points; `None` when nothing is left to draw.
    pub(crate) fn finish(mut self) -> Option<Self> {
        let ok = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
        for s in &mut self.series {
            s.points.retain(ok);
            s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        self.series.retain(|s| !s.points.is_empty());
        self.marks.retain(|m| ok(&m.at));
        // Marks on one point (p50 and p90 of one result) become one mark with both labels, so
        // their labels never print over each other.
        let mut merged: Vec<Mark> = Vec::new();
        for m in self.marks.drain(..) {
            match merged
                .iter_mut()
                .find(|o| o.at == m.at && o.shape == m.shape)
            {
                Some(o) if !m.label.is_empty() => {
                    if o.label.is_empty() {
                        o.label = m.label;
                    } else {
                        o.label = format!("{}; {}", o.label, m.label);
                    }
                }
                Some(_) => {}
                None => merged.push(m),
            }
        }
        self.marks = merged;
        self.vlines.retain(|(x, _)| x.is_finite());
        self.hlines.retain(|(y, ..)| y.is_finite());
        (!self.series.is_empty() || !self.marks.is_empty()).then_some(self)
    }

    fn legend(&self) -> Vec<(String, usize)> {
        self.series
            .iter()
            .map(|s| (s.label.clone(), s.colour))
            .collect()
    }

    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let points = || {
            let series = self.series.iter().flat_map(|s| s.points.iter().copied());
            series.chain(self.marks.iter().map(|m| m.at))
        };
        let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn((f64, f64)) -> f64| {
            points().map(pick).fold(init, f)
        };
        let (mut x0, mut x1) = (
            fold(f64::min, f64::INFINITY, |p| p.0),
            fold(f64::max, f64::NEG_INFINITY, |p| p.0),
        );
        for (x, _) in &self.vlines {
            (x0, x1) = (x0.min(*x), x1.max(*x));
        }
        let (mut y0, mut y1) = (
            fold(f64::min, f64::INFINITY, |p| p.1),
            fold(f64::max, f64::NEG_INFINITY, |p| p.1),
        );
        for (y, ..) in &self.hlines {
            (y0, y1) = (y0.min(*y), y1.max(*y));
        }
        if self.y_from_zero {
            y0 = y0.min(0.0);
        }
        let y = padded(y0, y1.max(y0));
        let x = match self.x_axis {
            // Whole steps: half a step either side, so the first and last ticks read.
            XAxis::Integer => (x0 - 0.5, x1 + 0.5),
            // Times: 5% either side, at least half a minute (runs minutes apart stay apart).
            XAxis::Date => {
                let pad = ((x1 - x0) * 0.05).max(30.0);
                (x0 - pad, x1 + pad)
            }
        };
        if x.0.is_finite() && x.1.is_finite() && x.0 < x.1 {
            (x, y)
        } else {
            ((0.0, 1.0), y)
        }
    }
}

impl Chart for XyChart {
    fn name(&self) -> &str {
        &self.title
    }

    fn table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let columns = vec!["Series".into(), self.x_desc.clone(), self.y_desc.clone()];
        let x_text = |x: f64| match self.x_axis {
            XAxis::Integer => format!("{x:.0}"),
            XAxis::Date => crate::rfc3339((x * 1000.0) as i64),
        };
        let mut rows: Vec<Vec<String>> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .map(|&(x, y)| vec![s.label.clone(), x_text(x), super::fmt_num(y)])
            })
            .collect();
        rows.extend(
            self.marks
                .iter()
                .filter(|m| !m.label.is_empty())
                .map(|m| vec![m.label.clone(), x_text(m.at.0), super::fmt_num(m.at.1)]),
        );
        (columns, rows)
    }

    fn size(&self) -> (u32, u32) {
        let note = if self.note.is_empty() { 0 } else { 26 };
        (WIDTH, header_height(&self.legend()) + 380 + note)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(msg)?;
        let legend = self.legend();
        draw_header(root, &self.title, &legend, true)?;
        let (_, body) = root.split_vertically(header_height(&legend));
        let (body, note) = if self.note.is_empty() {
            (body, None)
        } else {
            let h = body.dim_in_pixel().1.saturating_sub(26);
            let (b, n) = body.split_vertically(h);
            (b, Some(n))
        };
        let ((x0, x1), (y0, y1)) = self.ranges();
        let right = if self.hlines.is_empty() { 24 } else { 150 };
        let mut chart = ChartBuilder::on(&body)
            .margin_top(14)
            .margin_bottom(8)
            .margin_left(8)
            .margin_right(right)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(msg)?;
        let axis = self.x_axis;
        let span = x1 - x0;
        let x_fmt = move |v: &f64| match axis {
            XAxis::Integer if v.fract().abs() > 1e-9 => String::new(),
            XAxis::Integer => format!("{v:.0}"),
            XAxis::Date => date_label(*v, span),
        };
        let x_labels = match axis {
            XAxis::Integer => ((x1 - x0).round() as usize + 1).clamp(2, 16),
            XAxis::Date => 6,
        };
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .y_labels(8)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| axis_number(*v))
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .max_light_lines(2)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.15))
            .label_style(text_style(TEXT))
            .axis_desc_style(text_style(TEXT))
            .draw()
            .map_err(msg)?;
        for (y, colour, _) in &self.hlines {
            let style = palette(*colour).stroke_width(2);
            chart
                .draw_series(dashed((x0, *y), (x1, *y)).map(|l| PathElement::new(l, style)))
                .map_err(msg)?;
        }
        for (x, _) in &self.vlines {
            let style = GREY.stroke_width(2);
            chart
                .draw_series(dashed((*x, y0), (*x, y1)).map(|l| PathElement::new(l, style)))
                .map_err(msg)?;
        }
        for s in &self.series {
            let colour = palette(s.colour);
            let line = LineSeries::new(s.points.iter().copied(), colour.stroke_width(2));
            chart.draw_series(line).map_err(msg)?;
            let dots = s.points.iter().map(|&p| Circle::new(p, 3, colour.filled()));
            chart.draw_series(dots).map_err(msg)?;
        }
        for m in &self.marks {
            let colour = palette(m.colour);
            match m.shape {
                Shape::Triangle => {
                    chart.draw_series([TriangleMarker::new(m.at, 9, colour.filled())])
                }
                Shape::Cross => chart.draw_series([Cross::new(m.at, 7, colour.stroke_width(3))]),
            }
            .map_err(msg)?;
        }
        let label = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        let leftwards = text_style(TEXT).pos(Pos::new(HPos::Right, VPos::Center));
        for m in self.marks.iter().filter(|m| !m.label.is_empty()) {
            let (x, y) = chart.backend_coord(&m.at);
            // A label that would run past the right edge goes to the mark's left.
            if x + 10 + super::text_width(&m.label) as i32 > WIDTH as i32 - 4 {
                root.draw_text(&m.label, &leftwards, (x - 12, y - 12))
            } else {
                root.draw_text(&m.label, &label, (x + 10, y - 12))
            }
            .map_err(msg)?;
        }
        let top = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Bottom));
        for (x, text) in &self.vlines {
            let (px, py) = chart.backend_coord(&(*x, y1));
            root.draw_text(text, &top, (px + 4, py + 16)).map_err(msg)?;
        }
        for (y, _, text) in &self.hlines {
            let (px, py) = chart.backend_coord(&(x1, *y));
            root.draw_text(text, &label, (px + 6, py)).map_err(msg)?;
        }
        if let Some(note) = note {
            let style = text_style(TEXT).pos(Pos::new(HPos::Left, VPos::Center));
            note.draw_text(&self.note, &style, (12, 12)).map_err(msg)?;
        }
        Ok(())
    }
}

/// A dashed line from `a` to `b` as 15 dashes.
fn dashed(a: (f64, f64), b: (f64, f64)) -> impl Iterator<Item = Vec<(f64, f64)>> {
    let at = move |t: f64| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
    (0..15).map(move |i| {
        let t = f64::from(i) / 15.0;
        vec![at(t), at(t + 0.6 / 15.0)]
    })
}

/// A UTC date, with the time when the axis spans under three days, and only the time (to the
/// second) when it spans under two hours.
fn date_label(seconds: f64, span: f64) -> String {
    if !seconds.is_finite() {
        return String::new();
    }
    let Ok(t) = jiff::Timestamp::from_second(seconds.round() as i64) else {
        return String::new();
    };
    let format = if span < 7200.0 {
        "%H:%M:%S"
    } else if span < 3.0 * 86_400.0 {
        "%m-%d %H:%M"
    } else {
        "%Y-%m-%d"
    };
    t.strftime(format).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_days_or_hours() {
        assert_eq!(date_label(1_748_779_200.0, 10.0 * 86_400.0), "2025-06-01");
        assert_eq!(date_label(1_748_779_200.0, 86_400.0), "06-01 12:00");
        assert_eq!(date_label(1_748_779_200.0, 600.0), "12:00:00");
        assert_eq!(date_label(f64::NAN, 1.0), "");
    }

    #[test]
    fn marks_on_one_point_share_one_label() {
        let mut chart = XyChart::new("t".into(), "x", "y", XAxis::Date);
        for label in ["p50 1.09×", "p90 2.19×"] {
            chart.marks.push(Mark {
                at: (1.0, 2.0),
                shape: Shape::Triangle,
                colour: 0,
                label: label.into(),
            });
        }
        let chart = chart.finish().unwrap();
        assert_eq!(chart.marks.len(), 1);
        assert_eq!(chart.marks[0].label, "p50 1.09×; p90 2.19×");
        // Runs seconds apart are not squeezed into one point of a day-wide axis.
        let ((x0, x1), _) = chart.ranges();
        assert!(x1 - x0 < 120.0, "{x0}..{x1}");
    }
}
