//! A run's charts on its page: the report's own charts (`edgefleet-reports`, the same code as
//! `edgefleet report`), each an inline SVG with an accessible name and its numbers in a table
//! beside it.

use edgefleet_reports::{ReportInput, ResultRecord};
use maud::{html, Markup};

use super::layout;

/// The charts of a report on `records`; a chart that cannot be drawn says so in its place.
pub(crate) fn of_records(records: &[ResultRecord]) -> Vec<Markup> {
    if records.is_empty() {
        return Vec::new();
    }
    let input = ReportInput {
        records: records.to_vec(),
        ..ReportInput::default()
    };
    match edgefleet_reports::chart_views(&input) {
        Err(e) => vec![html! { p.problem { "The charts cannot be drawn: " (e.to_string()) } }],
        Ok(views) => views
            .into_iter()
            .map(|view| {
                let columns: Vec<&str> = view.columns.iter().map(String::as_str).collect();
                html! {
                    div.chart-pair {
                        // The chart draws its own title, and names itself (aria-label).
                        figure.chart id=(view.slug) data-chart=(view.kind) {
                            (layout::svg(&view.svg))
                        }
                        (layout::table(&format!("The numbers of “{}”", view.name), &columns, html! {
                            @for row in &view.rows {
                                tr { @for cell in row { td { (cell) } } }
                            }
                        }))
                    }
                }
            })
            .collect(),
    }
}
