//! Comparisons, baselines and regressions: `compare`, `baseline set|ls`, `regressions`.

use edgefleet_proto::v1::{
    AcknowledgeRegressionRequest, Baseline, BaselinesReply, CompareReply, CompareRequest,
    ListRegressionsRequest, Regression, RegressionsReply, SetBaselineRequest,
};
use tonic::Status;

use super::internal;
use crate::clock::now_ms;
use crate::compare::{query, CompareError, Metric};
use crate::server::Controller;
use crate::store::{BaselineRow, RegressionRow};
use crate::{records, selector};

pub(super) fn compare(ctl: &Controller, req: CompareRequest) -> Result<CompareReply, Status> {
    let invalid = |e: CompareError| Status::invalid_argument(e.to_string());
    let metric = if req.metric.is_empty() {
        Metric::P50
    } else {
        Metric::parse(&req.metric).map_err(invalid)?
    };
    let select = selector::parse_selectors(&req.select)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let q = query::Query {
        a: req.a,
        b: req.b,
        suite: (!req.suite.is_empty()).then_some(req.suite),
        select,
        metric,
        threshold: req.threshold,
    };
    match query::run(&ctl.store, &q) {
        Ok(comparison) => Ok(CompareReply {
            comparison_json: serde_json::to_string(&comparison).map_err(internal)?,
        }),
        Err(CompareError::Store(e)) => Err(e.into()),
        Err(
            e @ (CompareError::NothingMatches(_)
            | CompareError::NoCommonDeviceClass { .. }
            | CompareError::DifferentScenarios { .. }),
        ) => Err(Status::failed_precondition(e.to_string())),
        Err(e @ CompareError::Histogram { .. }) => Err(internal(e)),
        Err(e) => Err(invalid(e)),
    }
}

fn baseline(row: BaselineRow) -> Baseline {
    Baseline {
        suite: row.suite,
        device_class: row.device_class,
        run_id: row.run_id,
        set_at_unix_ms: row.set_ms,
    }
}

pub(super) fn set_baseline(
    ctl: &Controller,
    req: SetBaselineRequest,
) -> Result<BaselinesReply, Status> {
    let run = if req.run_id.is_empty() {
        ctl.store.newest_measured_run(&req.suite)?.ok_or_else(|| {
            Status::failed_precondition(format!("suite {} has no run with results yet", req.suite))
        })?
    } else {
        let run = ctl
            .store
            .run(&req.run_id)?
            .ok_or_else(|| Status::not_found(format!("no run {}", req.run_id)))?;
        if run.suite != req.suite {
            return Err(Status::invalid_argument(format!(
                "run {} is a run of suite {}, not {}",
                run.id, run.suite, req.suite
            )));
        }
        run
    };
    let (records, _) = records::collect(&ctl.store, Some(&run.id))?;
    let mut classes: Vec<String> = records.iter().map(|r| r.device_class()).collect();
    classes.sort();
    classes.dedup();
    if classes.is_empty() {
        return Err(Status::failed_precondition(format!(
            "run {} has no results to judge others by",
            run.id
        )));
    }
    ctl.store
        .set_baselines(&run.suite, &run.id, &classes, now_ms())?;
    tracing::info!(suite = %run.suite, run_id = %run.id, device_classes = classes.len(), "baseline set");
    list_baselines(ctl, &run.suite)
}

pub(super) fn list_baselines(ctl: &Controller, suite: &str) -> Result<BaselinesReply, Status> {
    let suite = (!suite.is_empty()).then_some(suite);
    Ok(BaselinesReply {
        baselines: ctl
            .store
            .baselines(suite)?
            .into_iter()
            .map(baseline)
            .collect(),
    })
}

pub(super) fn regression(row: RegressionRow) -> Regression {
    Regression {
        id: row.id,
        run_id: row.run_id,
        suite: row.suite,
        model: row.model,
        scenario: row.scenario,
        device_class: row.device_class,
        metric: row.metric,
        kind: row.kind.to_string(),
        against: row.against,
        ratio: row.ratio,
        ci_low: row.ci95.map(|c| c[0]),
        ci_high: row.ci95.map(|c| c[1]),
        robust_z: row.robust_z,
        detected_at_unix_ms: row.detected_ms,
        acknowledged_at_unix_ms: row.acknowledged_ms.unwrap_or(0),
    }
}

pub(super) fn list_regressions(
    ctl: &Controller,
    req: ListRegressionsRequest,
) -> Result<RegressionsReply, Status> {
    Ok(RegressionsReply {
        regressions: ctl
            .store
            .regressions(req.since_unix_ms)?
            .into_iter()
            .map(regression)
            .collect(),
    })
}

pub(super) fn acknowledge(
    ctl: &Controller,
    req: AcknowledgeRegressionRequest,
) -> Result<Regression, Status> {
    let row = ctl
        .store
        .acknowledge_regression(req.id, now_ms())?
        .ok_or_else(|| Status::not_found(format!("no regression {}", req.id)))?;
    tracing::info!(id = row.id, run_id = %row.run_id, model = %row.model, "regression acknowledged");
    ctl.changes.publish(crate::server::changes::REGRESSIONS);
    Ok(regression(row))
}
