//! `results.csv`: one row per record under a header row, nested values flattened into dotted
//! columns (`latency_ms.p90`, `quality.cosine_mean`), lists joined with `;`, `null` as an empty
//! cell, quoted as RFC 4180 says.

use std::collections::HashSet;

use serde_json::Value;

use crate::ResultRecord;

/// The records as CSV text (CRLF line ends, a header row even without records).
pub(crate) fn to_csv(records: &[ResultRecord]) -> String {
    let rows: Vec<Vec<(String, String)>> = records
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            let value = serde_json::to_value(r).expect("records always serialize");
            flatten("", &value, &mut cells);
            cells
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    if rows.is_empty() {
        // The header of an empty file: the record's top-level fields.
        columns = record_fields();
    }
    for (key, _) in rows.iter().flatten() {
        if seen.insert(key.clone()) {
            columns.push(key.clone());
        }
    }
    // A field that is null in one record and an object in another keeps the object's columns.
    let parents: HashSet<String> = (columns.iter())
        .filter_map(|c| c.rsplit_once('.').map(|(p, _)| p.to_string()))
        .collect();
    columns.retain(|c| !parents.contains(c));
    let mut out = line(columns.iter().map(String::as_str));
    for row in &rows {
        let cell = |c: &String| {
            (row.iter())
                .find(|(k, _)| k == c)
                .map_or("", |(_, v)| v.as_str())
        };
        out += &line(columns.iter().map(cell));
    }
    out
}

/// The top-level field names of a record, in declaration order.
fn record_fields() -> Vec<String> {
    const FIELDS: &str = include_str!("lib.rs");
    let body = FIELDS
        .split("pub struct ResultRecord {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .unwrap_or("");
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split(':').next())
        .map(str::to_string)
        .collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        Value::Object(_) => out.push((prefix.to_string(), String::new())),
        Value::Array(items) => {
            let text: Vec<String> = items.iter().map(scalar).collect();
            out.push((prefix.to_string(), text.join(";")));
        }
        v => out.push((prefix.to_string(), scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// One CSV line with its CRLF.
fn line<'a>(cells: impl Iterator<Item = &'a str>) -> String {
    let cells: Vec<String> = cells.map(quote).collect();
    cells.join(",") + "\r\n"
}

/// A cell quoted when it holds a comma, a quote or a line break (quotes doubled).
fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_as_rfc_4180_says() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn an_empty_file_still_has_the_header() {
        let csv = to_csv(&[]);
        assert!(csv.starts_with("agent,agent_id,target,labels,"), "{csv}");
        assert!(csv.ends_with("generate\r\n"), "{csv}");
        assert_eq!(csv.matches("\r\n").count(), 1);
    }
}
