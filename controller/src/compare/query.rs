//! What `compare A B` means against the store: each side is a model version (`name@version`)
//! or a run id, narrowed by suite and by an agent selector, then compared.

use std::collections::HashSet;

use edgefleet_reports::ResultRecord;

use super::{compare, CompareError, Comparison, Metric, Options, DEFAULT_THRESHOLD};
use crate::selector::Condition;
use crate::store::{ResultFilter, Store};

/// A comparison as asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub a: String,
    pub b: String,
    pub suite: Option<String>,
    pub select: Vec<Condition>,
    pub metric: Metric,
    /// `None`: [`DEFAULT_THRESHOLD`].
    pub threshold: Option<f64>,
}

/// What one side of a comparison names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SideRef {
    Model(String, String),
    Run(String),
}

fn resolve(store: &Store, text: &str) -> Result<SideRef, CompareError> {
    if let Some((name, version)) = text.split_once('@') {
        return match store.model(name, version)? {
            Some(_) => Ok(SideRef::Model(name.to_string(), version.to_string())),
            None => Err(CompareError::NothingMatches(format!(
                "no model version {text} is registered (see `edgefleet models ls`)"
            ))),
        };
    }
    match store.run(text)? {
        Some(_) => Ok(SideRef::Run(text.to_string())),
        None => Err(CompareError::NothingMatches(format!(
            "{text} is neither a model version (name@version) nor a run id"
        ))),
    }
}

/// Runs `query` against the store.
pub fn run(store: &Store, query: &Query) -> Result<Comparison, CompareError> {
    let a = resolve(store, &query.a)?;
    let b = resolve(store, &query.b)?;
    let by_model = match (&a, &b) {
        (SideRef::Model(..), SideRef::Model(..)) => false,
        (SideRef::Run(_), SideRef::Run(_)) => true,
        _ => return Err(CompareError::MixedSides),
    };
    let selected: Option<HashSet<String>> = if query.select.is_empty() {
        None
    } else {
        Some(
            store
                .agents()?
                .into_iter()
                .filter(|agent| crate::planning::matches(agent, &query.select))
                .map(|agent| agent.id)
                .collect(),
        )
    };
    let records = |side: &SideRef, label: &str| -> Result<Vec<ResultRecord>, CompareError> {
        let mut filter = ResultFilter {
            suite: query.suite.clone(),
            ..ResultFilter::default()
        };
        match side {
            SideRef::Model(n, v) => filter.model = Some((n.clone(), v.clone())),
            SideRef::Run(id) => filter.run_id = Some(id.clone()),
        }
        let (mut records, _) = crate::records::collect_where(store, &filter)?;
        if let Some(ids) = &selected {
            records.retain(|r| ids.contains(&r.agent_id));
        }
        if records.is_empty() {
            let mut why = format!("{label} has no results");
            if let Some(suite) = &query.suite {
                why.push_str(&format!(" in suite {suite}"));
            }
            if selected.is_some() {
                why.push_str(" on the selected agents");
            }
            return Err(CompareError::NothingMatches(why));
        }
        Ok(records)
    };
    let a_records = records(&a, &query.a)?;
    let b_records = records(&b, &query.b)?;
    compare(
        &query.a,
        &a_records,
        &query.b,
        &b_records,
        Options {
            metric: query.metric,
            threshold: query.threshold.unwrap_or(DEFAULT_THRESHOLD),
            by_model,
        },
    )
}
