//! The admin service the CLI talks to: agents, the model registry, benchmark runs and results.

use std::collections::BTreeMap;
use std::io::Read;

use edgefleet_proto::v1::admin_server::Admin;
use edgefleet_proto::v1::{
    add_model_request, controller_message, AddModelRequest, AgentInfo, ArtifactRef,
    ControlRolloutRequest, ControllerMessage, GetResultsReply, GetResultsRequest, GetRunRequest,
    InputFile, JobStatus, ListAgentsReply, ListAgentsRequest, ListModelsReply, ListModelsRequest,
    ListRolloutsReply, ListRolloutsRequest, ModelDetail, ModelInfo, ModelPlacement, ModelRequest,
    RemoveModelReply, RemoveModelRequest, RolloutStatus, RunJobs, RunStatus, StartBenchReply,
    StartBenchRequest, StartRolloutRequest, TensorSignature,
};
use edgefleet_suites::Suite;
use tonic::{Request, Response, Status, Streaming};

use crate::artifact_dir::Upload;
use crate::planning::{self, target_key};
use crate::rollout::{self, state};
use crate::rollout_driver;
use crate::store::{ModelFile, ModelRow, RolloutRow, RunRow, StoreError, TargetRow};
use crate::{manifest, now_ms, onnx_model, records, Controller};

pub struct AdminService {
    controller: Controller,
}

impl AdminService {
    pub fn new(controller: Controller) -> Self {
        AdminService { controller }
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::ModelExists(_) => Status::already_exists(e.to_string()),
            other => internal(other),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_agents(
        &self,
        _: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        let ctl = &self.controller;
        let agents = ctl
            .store
            .agents()?
            .into_iter()
            .map(|a| AgentInfo {
                online: ctl.fleet.is_online(&a.id),
                target: target_key(&a.hardware),
                agent_id: a.id,
                name: a.name,
                labels: a.labels.into_iter().collect(),
                agent_version: a.agent_version,
                hardware: Some(a.hardware),
                last_seen_unix_ms: a.last_seen_ms,
                first_seen_unix_ms: a.first_seen_ms,
            })
            .collect();
        Ok(Response::new(ListAgentsReply { agents }))
    }

    async fn add_model(
        &self,
        request: Request<Streaming<AddModelRequest>>,
    ) -> Result<Response<ModelInfo>, Status> {
        let mut stream = request.into_inner();
        let header = match stream.message().await?.and_then(|m| m.part) {
            Some(add_model_request::Part::Header(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "an upload must start with its header",
                ))
            }
        };
        let model_ref = format!("{}@{}", header.name, header.version);
        model_ref
            .parse::<edgefleet_suites::ModelRef>()
            .map_err(Status::invalid_argument)?;
        if header.files.is_empty() {
            return Err(Status::invalid_argument(
                "an upload needs at least the .onnx file",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for f in &header.files {
            let plain = !f.file_name.is_empty()
                && !f.file_name.contains('/')
                && f.file_name != "."
                && f.file_name != "..";
            if !plain || !names.insert(f.file_name.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "file name `{}` must be a plain, unique file name",
                    f.file_name
                )));
            }
        }
        if self
            .controller
            .store
            .model(&header.name, &header.version)?
            .is_some()
        {
            return Err(StoreError::ModelExists(model_ref).into());
        }

        // Receive every file into a temporary upload; on any error all of them are discarded,
        // so a failed add stores nothing.
        let mut uploads: Vec<Upload> = Vec::new();
        let received =
            receive_files(&self.controller, &header.files, &mut stream, &mut uploads).await;
        let checked = match received {
            Ok(()) => check_model(&uploads[0], &header.files[0].file_name).await,
            Err(e) => Err(e),
        };
        let summary = match checked {
            Ok(summary) => summary,
            Err(e) => {
                uploads.into_iter().for_each(Upload::discard);
                return Err(e);
            }
        };

        let mut files = Vec::new();
        for (upload, declared) in uploads.into_iter().zip(&header.files) {
            let size = upload.size;
            let sha256 = self.controller.artifacts.commit(upload).map_err(internal)?;
            files.push(ModelFile {
                file_name: declared.file_name.clone(),
                sha256,
                size_bytes: size,
            });
        }
        let signature = serde_json::json!({
            "inputs": summary.inputs.iter().map(sig_json).collect::<Vec<_>>(),
            "outputs": summary.outputs.iter().map(sig_json).collect::<Vec<_>>(),
        });
        let mut row = ModelRow {
            name: header.name,
            version: header.version,
            quantization: if header.quantization.is_empty() {
                "unknown".into()
            } else {
                header.quantization
            },
            opset: summary.opset,
            signature_json: signature.to_string(),
            files,
            created_ms: now_ms(),
            manifest: Vec::new(),
            manifest_signature: Vec::new(),
        };
        manifest::sign(&mut row, &self.controller.signer);
        self.controller.store.insert_model(&row)?;
        tracing::info!(model = %model_ref, files = row.files.len(), "model registered");
        Ok(Response::new(model_info(row)))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsReply>, Status> {
        let models = self
            .controller
            .store
            .models()?
            .into_iter()
            .map(model_info)
            .collect();
        Ok(Response::new(ListModelsReply { models }))
    }

    async fn start_bench(
        &self,
        request: Request<StartBenchRequest>,
    ) -> Result<Response<StartBenchReply>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        let origin = if req.suite_origin.is_empty() {
            "suite"
        } else {
            &req.suite_origin
        };
        let suite = Suite::parse(&req.suite_toml, origin)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conditions = req
            .select
            .iter()
            .map(|s| planning::parse_condition(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;

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
        let agents: Vec<_> = ctl
            .store
            .agents()?
            .into_iter()
            .filter(|a| ctl.fleet.is_online(&a.id) && planning::matches(a, &conditions))
            .collect();
        if agents.is_empty() {
            return Err(Status::failed_precondition(if req.select.is_empty() {
                "no agent is online".to_string()
            } else {
                format!("no online agent matches {}", req.select.join(","))
            }));
        }

        let inputs = store_inputs(ctl, &suite, req.inputs, origin)?;

        let run = RunRow {
            id: format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            suite: suite.name.clone(),
            suite_sha256: suite.sha256.clone(),
            created_ms: now_ms(),
        };
        let mut planned = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            for job in planning::jobs_for_agent(&suite, &models, &inputs, i) {
                planned.push((agent.id.clone(), job));
            }
        }
        ctl.store.insert_run(&run, &req.suite_toml, &planned)?;
        for agent in &agents {
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
        tracing::info!(run_id = %run.id, suite = %suite.name, agents = agents.len(), jobs = planned.len(), "benchmark run started");
        Ok(Response::new(StartBenchReply {
            run_id: run.id,
            agents: agents.len() as u32,
            jobs: planned.len() as u32,
        }))
    }

    async fn get_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<RunStatus>, Status> {
        let run_id = request.into_inner().run_id;
        let ctl = &self.controller;
        let run = ctl
            .store
            .run(&run_id)?
            .ok_or_else(|| Status::not_found(format!("no run {run_id}")))?;
        let names = ctl.store.agent_names()?;
        let jobs: Vec<JobStatus> = ctl
            .store
            .jobs(Some(&run_id))?
            .into_iter()
            .map(|j| JobStatus {
                agent_name: names.get(&j.agent_id).cloned().unwrap_or(j.agent_id),
                model: format!("{}@{}", j.model_name, j.model_version),
                job_id: j.job_id,
                state: j.state,
                error: j.error.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(RunStatus {
            run_id: run.id,
            suite: run.suite,
            jobs_total: jobs.len() as u32,
            jobs_done: jobs.iter().filter(|j| j.state == "done").count() as u32,
            jobs_failed: jobs.iter().filter(|j| j.state == "failed").count() as u32,
            jobs,
        }))
    }

    async fn show_model(
        &self,
        request: Request<ModelRequest>,
    ) -> Result<Response<ModelDetail>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        let model = find_model(ctl, &req.name, &req.version)?;
        let names = ctl.store.agent_names()?;
        let placements = ctl
            .store
            .installed()?
            .into_iter()
            .filter(|m| m.name == req.name && m.versions.contains(&req.version))
            .map(|m| ModelPlacement {
                agent_name: names.get(&m.agent_id).cloned().unwrap_or_default(),
                role: if m.active_version == req.version {
                    "active".into()
                } else {
                    "kept".into()
                },
                agent_id: m.agent_id,
            })
            .collect();
        Ok(Response::new(ModelDetail {
            model: Some(model_info(model)),
            signed_by: ctl.signer.fingerprint(),
            placements,
        }))
    }

    async fn remove_model(
        &self,
        request: Request<RemoveModelRequest>,
    ) -> Result<Response<RemoveModelReply>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        let _guard = ctl.rollout_lock.lock().await;
        let model = find_model(ctl, &req.name, &req.version)?;
        let model_ref = format!("{}@{}", req.name, req.version);
        if !req.force {
            let names = ctl.store.agent_names()?;
            let holders: Vec<String> = ctl
                .store
                .installed()?
                .into_iter()
                .filter(|m| m.name == req.name && m.versions.contains(&req.version))
                .map(|m| {
                    let name = names.get(&m.agent_id).cloned().unwrap_or(m.agent_id);
                    if m.active_version == req.version {
                        format!("{name} (active)")
                    } else {
                        format!("{name} (kept for rollback)")
                    }
                })
                .collect();
            if !holders.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "{model_ref} is installed on {}; remove it anyway with --force",
                    holders.join(", ")
                )));
            }
            if let Some(r) = ctl.store.rollouts()?.into_iter().find(|r| {
                r.model_name == req.name
                    && r.model_version == req.version
                    && matches!(r.state.as_str(), "running" | "paused")
            }) {
                return Err(Status::failed_precondition(format!(
                    "{model_ref} is being rolled out by {} ({}); abort it first, or use --force",
                    r.id, r.state
                )));
            }
        }
        let orphaned = ctl.store.delete_model(&req.name, &req.version)?;
        let mut freed = 0;
        for sha in &orphaned {
            if let Some(path) = ctl.artifacts.path(sha) {
                freed += std::fs::metadata(&path).map_or(0, |m| m.len());
                let _ = std::fs::remove_file(path);
            }
        }
        tracing::info!(model = %model_ref, artifacts = orphaned.len(), forced = req.force, files = model.files.len(), "model removed");
        Ok(Response::new(RemoveModelReply {
            artifacts_deleted: orphaned.len() as u32,
            bytes_freed: freed,
        }))
    }

    async fn start_rollout(
        &self,
        request: Request<StartRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        let bad = Status::invalid_argument;
        let conditions = rollout::parse_selector(&req.select).map_err(bad)?;
        let waves = rollout::parse_waves(&req.waves).map_err(bad)?;
        let success = if req.success.is_empty() {
            "100%".to_string()
        } else {
            req.success.clone()
        };
        rollout::Amount::parse(&success, "success threshold").map_err(bad)?;
        if !req.abort_after.is_empty() {
            rollout::Amount::parse(&req.abort_after, "abort criterion").map_err(bad)?;
        }
        let limits = rollout::parse_gate(&req.gate).map_err(bad)?;
        let health_check = match req.health_check.as_str() {
            "" | "smoke" => "smoke",
            "bench" => "bench",
            "none" => "none",
            other => {
                return Err(bad(format!(
                    "unknown health check `{other}` (smoke, bench, none)"
                )))
            }
        };
        let model = find_model(ctl, &req.name, &req.version)?;
        let gate_suite = if req.gate_suite_toml.is_empty() {
            None
        } else if limits.is_empty() {
            return Err(bad(
                "--gate-suite gives the performance gate its workload; add --gate with the limits"
                    .into(),
            ));
        } else {
            let origin = if req.gate_suite_origin.is_empty() {
                "gate suite"
            } else {
                &req.gate_suite_origin
            };
            let suite =
                Suite::parse(&req.gate_suite_toml, origin).map_err(|e| bad(e.to_string()))?;
            Some((suite, origin.to_string()))
        };
        let gate_group = match &gate_suite {
            None => None,
            Some((suite, origin)) => Some(gate_group(suite, &req.name).ok_or_else(|| {
                bad(format!(
                    "gate suite {origin} has several groups and none names a version of {}",
                    req.name
                ))
            })?),
        };
        let text_gate =
            gate_group.is_none_or(|g| matches!(g.input, edgefleet_suites::Input::Text { .. }));
        if !limits.is_empty()
            && text_gate
            && !model.files.iter().any(|f| f.file_name == "tokenizer.json")
        {
            return Err(Status::failed_precondition(format!(
                "the performance gate benchmarks with real sentences and needs {}@{}'s tokenizer.json (add it with --with, or give the gate audio or image input with --gate-suite)",
                req.name, req.version
            )));
        }
        let gate_workload = match (&gate_suite, gate_group) {
            (Some((suite, origin)), Some(group)) => {
                let inputs = store_inputs(ctl, suite, req.gate_inputs, origin)?;
                let run = suite
                    .plan()
                    .into_iter()
                    .find(|r| std::ptr::eq(r.group, group))
                    .ok_or_else(|| bad(format!("gate suite {origin} plans no run")))?;
                let mut workload = crate::planning::workload_for(suite, &run, &inputs);
                // The gate decides the metric's reference (the version being replaced).
                workload.quality_metric = group
                    .quality
                    .as_ref()
                    .map_or_else(|| "cosine".to_string(), |q| q.metric.clone());
                if let edgefleet_suites::Input::Text { sentences, .. } = &group.input {
                    workload.golden = match &group.quality {
                        Some(q) if !q.golden.is_empty() => q.golden.clone(),
                        _ => sentences.clone(),
                    };
                }
                prost::Message::encode_to_vec(&workload)
            }
            _ => Vec::new(),
        };
        let _guard = ctl.rollout_lock.lock().await;
        if let Some(r) =
            ctl.store.rollouts()?.into_iter().find(|r| {
                r.model_name == req.name && matches!(r.state.as_str(), "running" | "paused")
            })
        {
            return Err(Status::failed_precondition(format!(
                "rollout {} of {}@{} is {}; abort it before starting another for {}",
                r.id, r.model_name, r.model_version, r.state, req.name
            )));
        }
        let mut agents: Vec<_> = ctl
            .store
            .agents()?
            .into_iter()
            .filter(|a| crate::planning::matches(a, &conditions))
            .collect();
        if agents.is_empty() {
            return Err(Status::failed_precondition(if req.select.is_empty() {
                "no agent has ever connected".to_string()
            } else {
                format!("no agent matches `{}`", req.select)
            }));
        }
        // Online agents first, so the first wave is made of devices that can answer now.
        agents.sort_by_key(|a| (!ctl.fleet.is_online(&a.id), a.name.clone(), a.id.clone()));
        let now = now_ms();
        let row = RolloutRow {
            id: format!("ro-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
            model_name: req.name.clone(),
            model_version: req.version.clone(),
            selector: req.select.clone(),
            waves: if req.waves.is_empty() {
                "100%".into()
            } else {
                req.waves.clone()
            },
            success,
            abort_after: req.abort_after.clone(),
            gate: req.gate.clone(),
            gate_workload,
            health_check: health_check.into(),
            state: "running".into(),
            reason: String::new(),
            current_wave: 0,
            created_ms: now,
            updated_ms: now,
        };
        let targets: Vec<TargetRow> = rollout::assign_waves(&waves, agents.len())
            .into_iter()
            .zip(&agents)
            .map(|(wave, agent)| TargetRow {
                rollout_id: row.id.clone(),
                agent_id: agent.id.clone(),
                wave,
                state: state::WAITING.into(),
                error: String::new(),
                previous_version: String::new(),
                health: String::new(),
                updated_ms: now,
                fetched_bytes: 0,
                fetch_started_ms: 0,
                fetch_finished_ms: 0,
            })
            .collect();
        ctl.store.insert_rollout(&row, &targets)?;
        ctl.store.log_event(
            Some(&row.id),
            None,
            &format!(
                "started: {}@{} to {} agent(s) in waves {}",
                row.model_name,
                row.model_version,
                targets.len(),
                row.waves
            ),
            now,
        )?;
        tracing::info!(rollout = %row.id, model = %format!("{}@{}", row.model_name, row.model_version), agents = targets.len(), "rollout started");
        Ok(Response::new(rollout_driver::status(ctl, &row)?))
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsReply>, Status> {
        let id = request.into_inner().rollout_id;
        let ctl = &self.controller;
        let rows = if id.is_empty() {
            ctl.store.rollouts()?
        } else {
            vec![ctl
                .store
                .rollout(&id)?
                .ok_or_else(|| Status::not_found(format!("no rollout {id}")))?]
        };
        let rollouts = rows
            .iter()
            .map(|r| rollout_driver::status(ctl, r))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(ListRolloutsReply { rollouts }))
    }

    async fn control_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        let req = request.into_inner();
        let ctl = &self.controller;
        rollout_driver::control(ctl, &req.rollout_id, &req.action)
            .await
            .map_err(Status::failed_precondition)?;
        let row = ctl
            .store
            .rollout(&req.rollout_id)?
            .ok_or_else(|| Status::not_found(format!("no rollout {}", req.rollout_id)))?;
        Ok(Response::new(rollout_driver::status(ctl, &row)?))
    }

    async fn get_results(
        &self,
        request: Request<GetResultsRequest>,
    ) -> Result<Response<GetResultsReply>, Status> {
        let run_id = request.into_inner().run_id;
        let run_id = (!run_id.is_empty()).then_some(run_id);
        let (records, failures) = records::collect(&self.controller.store, run_id.as_deref())?;
        Ok(Response::new(GetResultsReply {
            records_json: serde_json::to_string(&records).map_err(internal)?,
            failures_json: serde_json::to_string(&failures).map_err(internal)?,
        }))
    }
}

/// The group of a gate suite whose input and quality check the gate uses: the one that names a
/// version of the model, or the only one.
fn gate_group<'a>(suite: &'a Suite, model: &str) -> Option<&'a edgefleet_suites::ModelGroup> {
    suite
        .groups
        .iter()
        .find(|g| {
            g.models
                .iter()
                .any(|m| m.registered().is_some_and(|r| r.name == model))
        })
        .or(match suite.groups.as_slice() {
            [only] => Some(only),
            _ => None,
        })
}

/// Stores every input file the suite names from the bytes the CLI sent, content-addressed like
/// models (agents fetch them the same way), and returns each one's reference by its path.
fn store_inputs(
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
        let sha256 = ctl.artifacts.commit(upload).map_err(internal)?;
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

/// Reads the declared files' bytes, in order, into uploads.
async fn receive_files(
    ctl: &Controller,
    declared: &[edgefleet_proto::v1::NewFile],
    stream: &mut Streaming<AddModelRequest>,
    uploads: &mut Vec<Upload>,
) -> Result<(), Status> {
    for file in declared {
        uploads.push(ctl.artifacts.begin().map_err(internal)?);
        let upload = uploads.last_mut().expect("just pushed");
        while upload.size < file.size_bytes {
            let data = match stream.message().await? {
                Some(AddModelRequest {
                    part: Some(add_model_request::Part::Data(d)),
                }) => d,
                Some(_) => return Err(Status::invalid_argument("a second header in one upload")),
                None => {
                    return Err(Status::invalid_argument(format!(
                        "upload of {} ended after {} of {} bytes",
                        file.file_name, upload.size, file.size_bytes
                    )))
                }
            };
            if upload.size + data.len() as u64 > file.size_bytes {
                return Err(Status::invalid_argument(format!(
                    "{} is larger than declared",
                    file.file_name
                )));
            }
            upload.write(&data).map_err(|e| {
                Status::resource_exhausted(format!("cannot store {}: {e}", file.file_name))
            })?;
        }
    }
    if stream.message().await?.is_some() {
        return Err(Status::invalid_argument(
            "more bytes than the header declared",
        ));
    }
    Ok(())
}

/// Checks that the first file is an ONNX model.
async fn check_model(upload: &Upload, file_name: &str) -> Result<onnx_model::OnnxSummary, Status> {
    let path = upload.tmp_path().to_path_buf();
    let file_name = file_name.to_string();
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(internal)?;
        onnx_model::inspect(&bytes)
            .map_err(|e| Status::invalid_argument(format!("{file_name}: {e}")))
    })
    .await
    .map_err(internal)?
}

/// A registered version, or a not-found that says how to list them.
fn find_model(ctl: &Controller, name: &str, version: &str) -> Result<ModelRow, Status> {
    ctl.store.model(name, version)?.ok_or_else(|| {
        Status::not_found(format!(
            "unknown model {name}@{version}; `edgefleet models ls` lists the registered ones"
        ))
    })
}

fn sig_json(s: &TensorSignature) -> serde_json::Value {
    serde_json::json!({"name": s.name, "element_type": s.element_type, "shape": s.shape})
}

fn model_info(m: ModelRow) -> ModelInfo {
    let (inputs, outputs) = manifest::signatures(&m.signature_json);
    ModelInfo {
        inputs,
        outputs,
        name: m.name,
        version: m.version,
        quantization: m.quantization,
        files: m
            .files
            .into_iter()
            .map(|f| ArtifactRef {
                file_name: f.file_name,
                sha256: f.sha256,
                size_bytes: f.size_bytes,
            })
            .collect(),
        opset: m.opset,
        created_unix_ms: m.created_ms,
        manifest: m.manifest,
        signature: m.manifest_signature,
    }
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

    #[test]
    fn input_files_are_stored_content_addressed_and_must_match_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Controller::open(
            dir.path(),
            crate::Settings {
                enrollment_token: "t".into(),
                heartbeat_interval: std::time::Duration::from_secs(1),
            },
        )
        .unwrap();
        let suite = Suite::parse(SUITE, "s.toml").unwrap();

        let missing = store_inputs(&ctl, &suite, vec![], "s.toml").unwrap_err();
        assert!(
            missing
                .message()
                .contains("names the input file clip.wav but its bytes were not sent"),
            "{missing:?}"
        );
        let extra = vec![file("clip.wav", b"RIFF"), file("other.wav", b"x")];
        let extra = store_inputs(&ctl, &suite, extra, "s.toml").unwrap_err();
        assert!(
            extra.message().contains("other.wav was sent but"),
            "{extra:?}"
        );

        let stored = store_inputs(&ctl, &suite, vec![file("clip.wav", b"RIFF")], "s.toml").unwrap();
        let clip = &stored[std::path::Path::new("clip.wav")];
        assert_eq!((clip.file_name.as_str(), clip.size_bytes), ("clip.wav", 4));
        assert_eq!(
            std::fs::read(ctl.artifacts.path(&clip.sha256).unwrap()).unwrap(),
            b"RIFF"
        );
        // Agents may fetch it: the store knows it as an artifact.
        assert_eq!(ctl.store.artifact_size(&clip.sha256).unwrap(), Some(4));
    }
}
