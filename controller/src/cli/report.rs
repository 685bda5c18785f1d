//! `edgefleet report`: result records, failures, the agents that produced them and (for a report
//! of everything) every rollout, fetched from the controller and written by `edgefleet-reports`.

use std::path::Path;

use edgefleet_proto::v1::{AgentInfo, GetResultsRequest, Regression};
use edgefleet_reports::{
    rfc3339, AgentSummary, BaselineMark, FailedRun, RegressionMark, ReportFiles, ReportInput,
    ResultRecord,
};

use super::client::Client;
use super::rollout_view;
use super::target::Target;

/// Which results a report covers.
#[derive(Debug, Clone, Default)]
pub(super) struct Scope {
    /// One run (and then nothing else narrows it).
    pub(super) run: Option<String>,
    pub(super) suite: Option<String>,
    pub(super) since_ms: Option<i64>,
    /// Agent selector conditions, all of which must hold.
    pub(super) select: Vec<String>,
}

impl Scope {
    /// The narrowing in words (`--suite nightly --select hw=rpi5`), `None` for everything.
    fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(run) = &self.run {
            parts.push(format!("--run {run}"));
        }
        if let Some(suite) = &self.suite {
            parts.push(format!("--suite {suite}"));
        }
        if let Some(since) = self.since_ms {
            parts.push(format!("--since {}", rfc3339(since)));
        }
        for s in &self.select {
            parts.push(format!("--select {s}"));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    pub(super) fn run(id: &str) -> Scope {
        Scope {
            run: Some(id.to_string()),
            ..Scope::default()
        }
    }
}

/// `report --out DIR [--run ID | --suite NAME --since T] [--select EXPR]`.
pub(super) async fn run(target: &Target, out: &Path, scope: &Scope) -> anyhow::Result<()> {
    let mut client = Client::connect(target).await?;
    let (files, records, failures) = write_report(&mut client, out, scope).await?;
    let failed_runs: std::collections::BTreeSet<&str> =
        failures.iter().map(|f| f.run_id.as_str()).collect();
    println!(
        "{} results, {}",
        records.len(),
        edgefleet_reports::failed_jobs_in_words(failures.len(), failed_runs.len())
    );
    println!("report   {}", files.html.display());
    println!("results  {}", files.json.display());
    Ok(())
}

/// Writes the report of the results in `scope` into `out`.
pub(super) async fn write_report(
    client: &mut Client,
    out: &Path,
    scope: &Scope,
) -> anyhow::Result<(ReportFiles, Vec<ResultRecord>, Vec<FailedRun>)> {
    let run_id = scope.run.as_deref();
    let (records, failures) = client
        .results_where(GetResultsRequest {
            run_id: scope.run.clone().unwrap_or_default(),
            suite: scope.suite.clone().unwrap_or_default(),
            since_unix_ms: scope.since_ms.unwrap_or(0),
            select: scope.select.clone(),
        })
        .await?;
    // A report of an empty store, or of a run still waiting for its results, says so; an unknown
    // run, or a suite, time or selector that matches nothing, is a mistake to name in one line.
    if records.is_empty() && failures.is_empty() {
        let only_a_run =
            scope.suite.is_none() && scope.since_ms.is_none() && scope.select.is_empty();
        match (&scope.run, scope.describe()) {
            (Some(run), _) if only_a_run => {
                client.run_status(run).await?;
            }
            (_, Some(what)) => anyhow::bail!("no results match {what}; nothing written"),
            (_, None) => {}
        }
    }
    let agents: Vec<AgentSummary> = client
        .agents()
        .await?
        .iter()
        .filter(|a| {
            records.iter().any(|r| r.agent_id == a.agent_id)
                || failures.iter().any(|f| f.agent == a.name)
        })
        .map(agent_summary)
        .collect();
    let input = ReportInput {
        title: match (run_id, &scope.suite) {
            (Some(id), _) => format!("edgefleet benchmark report: {id}"),
            (None, Some(suite)) => format!("edgefleet benchmark report: suite {suite}"),
            (None, None) => "edgefleet benchmark report".to_string(),
        },
        generated_at: rfc3339(edgefleet_controller::now_ms()),
        agents,
        records: records.clone(),
        failures: failures.clone(),
        // A report of everything also tells the story of every rollout.
        rollouts: match run_id {
            Some(_) => Vec::new(),
            None => client
                .rollouts("")
                .await?
                .iter()
                .map(rollout_view::summary)
                .collect(),
        },
        regressions: client
            .regressions(0)
            .await?
            .into_iter()
            .filter(|r| records.iter().any(|rec| rec.run_id == r.run_id))
            .map(regression_mark)
            .collect(),
        baselines: client
            .baselines("")
            .await?
            .into_iter()
            .filter(|b| records.iter().any(|rec| rec.suite == b.suite))
            .map(|b| BaselineMark {
                suite: b.suite,
                device_class: b.device_class,
                run_id: b.run_id,
                set_at: rfc3339(b.set_at_unix_ms),
            })
            .collect(),
        quality_floor: None,
    };
    let files = edgefleet_reports::write_report(out, &input)?;
    Ok((files, records, failures))
}

fn regression_mark(r: Regression) -> RegressionMark {
    RegressionMark {
        id: r.id,
        run_id: r.run_id,
        suite: r.suite,
        model: r.model,
        scenario: r.scenario,
        device_class: r.device_class,
        metric: r.metric,
        ratio: r.ratio,
        ci95: r.ci_low.zip(r.ci_high).map(|(l, h)| [l, h]),
        robust_z: r.robust_z,
        kind: r.kind,
        acknowledged: r.acknowledged_at_unix_ms != 0,
        detected_at: rfc3339(r.detected_at_unix_ms),
    }
}

/// How the report describes an agent.
fn agent_summary(agent: &AgentInfo) -> AgentSummary {
    let hw = agent.hardware.clone().unwrap_or_default();
    let runtime = if hw.onnxruntime_version.is_empty() {
        "ONNX Runtime unavailable".to_string()
    } else {
        format!(
            "ONNX Runtime {} ({})",
            hw.onnxruntime_version,
            hw.execution_providers.join(", ")
        )
    };
    AgentSummary {
        name: agent.name.clone(),
        target: agent.target.clone(),
        labels: agent.labels.clone().into_iter().collect(),
        hardware: format!(
            "{} {}, {} cores, {:.1} GiB; {}; kernel {}; {runtime}",
            hw.arch,
            hw.cpu_model,
            hw.cpu_cores,
            hw.memory_bytes as f64 / (1u64 << 30) as f64,
            hw.os,
            hw.kernel
        ),
    }
}
