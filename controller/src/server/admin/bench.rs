//! Benchmark runs: `bench run` (the suite parsed again, models resolved, input files stored,
//! one job per agent × model × scenario × threads planned and sent), a run's progress, and its
//! results as records.

use std::collections::BTreeMap;

use edgefleet_proto::v1::{
    controller_message, ArtifactRef, ControllerMessage, GetResultsReply, GetResultsRequest,
    InputFile, JobStatus, RunJobs, RunStatus, StartBenchReply, StartBenchRequest,
};
use edgefleet_suites::Suite;
use tonic::Status;

use super::internal;
use crate::clock::now_ms;
use crate::server::Controller;
use crate::store::{AgentRow, ModelRow, ResultFilter, RunRow};
use crate::{planning, records, selector};

/// `bench run`: plans and sends the run's jobs to the selected online agents.
pub(super) async fn start(
    ctl: &Controller,
    req: StartBenchRequest,
) -> Result<StartBenchReply, Status> {
    let origin = if req.suite_origin.is_empty() {
        "suite"
    } else {
        &req.suite_origin
    };
    let suite = Suite::parse(&req.suite_toml, origin)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let conditions = selector::parse_selectors(&req.select)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;

    let models = resolve_models(ctl, &suite, origin)?;
    let agents = online_agents(ctl, &conditions)?;
    if agents.is_empty() {
        return Err(no_agent(&req.select.join(",")));
    }
    let inputs = store_inputs(ctl, &suite, req.inputs, origin).await?;
    launch(
        ctl,
        &suite,
        &req.suite_toml,
        &models,
        &inputs,
        &agents,
        None,
    )
    .await
}

/// Every model a suite names (and each quality check's reference), looked up in the registry.
pub(crate) fn resolve_models(
    ctl: &Controller,
    suite: &Suite,
    origin: &str,
) -> Result<BTreeMap<String, ModelRow>, Status> {
    let mut models = BTreeMap::new();
    for r in suite.models().chain(
        suite
            .groups
            .iter()
            .filter_map(|g| g.quality.as_ref().map(|q| &q.reference)),
    ) {
        let r = r.registered().ok_or_else(|| {
            Status::invalid_argument(format!(
                "suite {origin} names the file {r}: files run only on one device with `edgefleet-agent bench`; register it with `edgefleet models add` and name it name@version"
            ))
        })?;
        let model = ctl.store.model(&r.name, &r.version)?.ok_or_else(|| {
            Status::not_found(format!("unknown model {r} in suite {origin}; `edgefleet models ls` lists the registered ones"))
        })?;
        models.insert(r.to_string(), model);
    }
    Ok(models)
}

/// The online agents every condition holds for.
pub(crate) fn online_agents(
    ctl: &Controller,
    conditions: &[selector::Condition],
) -> Result<Vec<AgentRow>, Status> {
    let online = ctl.online_ids();
    Ok(ctl
        .store
        .agents()?
        .into_iter()
        .filter(|a| online.contains(&a.id) && planning::matches(a, conditions))
        .collect())
}

/// The refusal when no agent can take a run (`select` as the user wrote it).
pub(crate) fn no_agent(select: &str) -> Status {
    Status::failed_precondition(if select.is_empty() {
        "no agent is online".to_string()
    } else {
        format!("no online agent matches {select}")
    })
}

/// Plans one job per agent × model × scenario × threads, stores the run (with the schedule
/// that started it, if any) and its jobs, and sends each agent its jobs: what `bench run` and a
/// schedule's fire both do once the suite, its models, inputs and agents are settled.
pub(crate) async fn launch(
    ctl: &Controller,
    suite: &Suite,
    suite_toml: &str,
    models: &BTreeMap<String, ModelRow>,
    inputs: &BTreeMap<std::path::PathBuf, ArtifactRef>,
    agents: &[AgentRow],
    schedule: Option<&str>,
) -> Result<StartBenchReply, Status> {
    let run = RunRow {
        id: format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        suite: suite.name.clone(),
        suite_sha256: suite.sha256.clone(),
        created_ms: now_ms(),
        schedule: schedule.map(str::to_string),
    };
    let mut planned = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        for job in planning::jobs_for_agent(suite, models, inputs, i) {
            planned.push((agent.id.clone(), job));
        }
    }
    ctl.store.insert_run(&run, suite_toml, &planned)?;
    if ctl.replica.is_some() {
        // The replicas holding them send them their jobs.
        ctl.wake_agents(&agents.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    }
    for agent in agents.iter().filter(|_| ctl.replica.is_none()) {
        let jobs = planned
            .iter()
            .filter(|(id, _)| *id == agent.id)
            .map(|(_, job)| job.clone())
            .collect();
        let message = ControllerMessage {
            body: Some(controller_message::Body::RunJobs(RunJobs {
                run_id: run.id.clone(),
                jobs,
            })),
        };
        if !ctl.fleet.send(&agent.id, message).await {
            tracing::warn!(agent = %agent.name, run_id = %run.id, "agent went offline before its jobs were sent; they follow when it reconnects");
        }
    }
    tracing::info!(run_id = %run.id, suite = %suite.name, schedule = schedule.unwrap_or(""), agents = agents.len(), jobs = planned.len(), "benchmark run started");
    Ok(StartBenchReply {
        run_id: run.id,
        agents: agents.len() as u32,
        jobs: planned.len() as u32,
    })
}

/// A run's progress, job by job.
pub(super) fn run_status(ctl: &Controller, run_id: &str) -> Result<RunStatus, Status> {
    let run = ctl
        .store
        .run(run_id)?
        .ok_or_else(|| Status::not_found(format!("no run {run_id}")))?;
    let names = ctl.store.agent_names()?;
    let jobs: Vec<JobStatus> = ctl
        .store
        .jobs(Some(run_id))?
        .into_iter()
        .map(|j| JobStatus {
            agent_name: names.get(&j.agent_id).cloned().unwrap_or(j.agent_id),
            model: format!("{}@{}", j.model_name, j.model_version),
            job_id: j.job_id,
            state: j.state.to_string(),
            error: j.error.unwrap_or_default(),
            scenario: j.scenario,
            threads: j.threads,
            started_unix_ms: j.started_ms.unwrap_or(0),
        })
        .collect();
    Ok(RunStatus {
        judged: ctl.store.run_judged(&run.id)?,
        run_id: run.id,
        suite: run.suite,
        jobs_total: jobs.len() as u32,
        jobs_done: jobs.iter().filter(|j| j.state == "done").count() as u32,
        jobs_failed: jobs.iter().filter(|j| j.state == "failed").count() as u32,
        jobs,
    })
}

/// Stored results per `GetResults` reply: about 1.4 kB each as protobuf, so a reply stays
/// near 3 MB.
pub(crate) const RESULTS_PER_REPLY: usize = 2000;

/// `GetResults`: the failures, then the stored results in replies of [`RESULTS_PER_REPLY`],
/// each with the agents and models it is the first to name. Nothing becomes JSON on the way:
/// the measurements are the protobuf the agents sent.
pub(super) fn results(
    ctl: &Controller,
    req: GetResultsRequest,
) -> Result<Vec<GetResultsReply>, Status> {
    let conditions = selector::parse_selectors(&req.select)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let filter = ResultFilter {
        run_id: (!req.run_id.is_empty()).then_some(req.run_id),
        model: None,
        suite: (!req.suite.is_empty()).then_some(req.suite),
        since_ms: (req.since_unix_ms != 0).then_some(req.since_unix_ms),
    };
    let mut stored = records::stored_where(&ctl.store, &filter)?;
    if !conditions.is_empty() {
        let agents = ctl.store.agents()?;
        let chosen: std::collections::HashSet<&str> = agents
            .iter()
            .filter(|a| planning::matches(a, &conditions))
            .map(|a| a.id.as_str())
            .collect();
        let names: std::collections::HashSet<&str> = agents
            .iter()
            .filter(|a| chosen.contains(a.id.as_str()))
            .map(|a| a.name.as_str())
            .collect();
        stored
            .results
            .retain(|r| chosen.contains(r.agent_id.as_str()));
        stored.failures.retain(|f| names.contains(f.agent.as_str()));
    }
    let mut replies = vec![GetResultsReply {
        failures: stored.failures.iter().map(records::failed_job).collect(),
        ..GetResultsReply::default()
    }];
    let mut agents_sent = std::collections::HashSet::new();
    let mut models_sent = std::collections::HashSet::new();
    let mut results = stored.results.into_iter().peekable();
    while results.peek().is_some() {
        let mut reply = GetResultsReply::default();
        for r in results.by_ref().take(RESULTS_PER_REPLY) {
            if agents_sent.insert(r.agent_id.clone()) {
                reply.agents.extend(stored.agents.remove(&r.agent_id));
            }
            let model = (r.model_name.clone(), r.model_version.clone());
            if models_sent.insert(model.clone()) {
                reply.models.extend(stored.models.remove(&model));
            }
            reply.results.push(r);
        }
        replies.push(reply);
    }
    Ok(replies)
}

/// Stores every input file the suite names from the bytes the CLI sent, content-addressed like
/// models (agents fetch them the same way), and returns each one's reference by its path.
pub(crate) async fn store_inputs(
    ctl: &Controller,
    suite: &Suite,
    sent: Vec<InputFile>,
    origin: &str,
) -> Result<BTreeMap<std::path::PathBuf, ArtifactRef>, Status> {
    let mut sent: BTreeMap<std::path::PathBuf, Vec<u8>> = sent
        .into_iter()
        .map(|f| (std::path::PathBuf::from(f.path), f.data))
        .collect();
    let mut out = BTreeMap::new();
    for path in suite.input_files() {
        let data = sent.remove(path).ok_or_else(|| {
            Status::invalid_argument(format!(
                "suite {origin} names the input file {} but its bytes were not sent",
                path.display()
            ))
        })?;
        let mut upload = ctl.artifacts.begin().map_err(internal)?;
        upload.write(&data).map_err(|e| {
            Status::resource_exhausted(format!("cannot store {}: {e}", path.display()))
        })?;
        let size = upload.size;
        let sha256 = ctl
            .artifacts
            .commit(upload)
            .await
            .map_err(super::models::stored)?;
        ctl.store.insert_artifact(&sha256, size, now_ms())?;
        out.insert(
            path.to_path_buf(),
            ArtifactRef {
                file_name: path.display().to_string(),
                sha256,
                size_bytes: size,
            },
        );
    }
    if let Some(extra) = sent.keys().next() {
        return Err(Status::invalid_argument(format!(
            "{} was sent but suite {origin} names no such input file",
            extra.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUITE: &str = "name = \"s\"\nmodels = [\"vad@1\"]\n[input]\nkind = \"audio\"\nfiles = [\"clip.wav\"]\n[[scenario]]\nkind = \"single-stream\"\n";

    fn file(path: &str, data: &[u8]) -> InputFile {
        InputFile {
            path: path.into(),
            data: data.to_vec(),
        }
    }

    #[tokio::test]
    async fn input_files_are_stored_content_addressed_and_must_match_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Controller::open(
            dir.path(),
            crate::Settings {
                security: crate::server::Security::Insecure {
                    shared_token: "t".into(),
                },
                heartbeat_interval: std::time::Duration::from_secs(1),
                limits: Default::default(),
                retention: None,
                max_stream_age: None,
            },
        )
        .unwrap();
        let suite = Suite::parse(SUITE, "s.toml").unwrap();

        let missing = store_inputs(&ctl, &suite, vec![], "s.toml")
            .await
            .unwrap_err();
        assert!(
            missing
                .message()
                .contains("names the input file clip.wav but its bytes were not sent"),
            "{missing:?}"
        );
        let extra = vec![file("clip.wav", b"RIFF"), file("other.wav", b"x")];
        let extra = store_inputs(&ctl, &suite, extra, "s.toml")
            .await
            .unwrap_err();
        assert!(
            extra.message().contains("other.wav was sent but"),
            "{extra:?}"
        );

        let stored = store_inputs(&ctl, &suite, vec![file("clip.wav", b"RIFF")], "s.toml")
            .await
            .unwrap();
        let clip = &stored[std::path::Path::new("clip.wav")];
        assert_eq!((clip.file_name.as_str(), clip.size_bytes), ("clip.wav", 4));
        assert_eq!(
            std::fs::read(ctl.artifacts.local_path(&clip.sha256).unwrap()).unwrap(),
            b"RIFF"
        );
        // Agents may fetch it: the store knows it as an artifact.
        assert_eq!(ctl.store.artifact_size(&clip.sha256).unwrap(), Some(4));
    }
}
