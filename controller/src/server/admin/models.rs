//! Model registry calls: `models add` (the upload, checked as ONNX, stored content-addressed and
//! signed; a failed add stores nothing), `models ls`, `models show` and `models rm`.

use edgefleet_proto::v1::{
    add_model_request, AddModelRequest, ListModelsReply, ModelDetail, ModelInfo, ModelPlacement,
    ModelRequest, RemoveModelReply, RemoveModelRequest,
};
use edgefleet_suites::names;
use tonic::{Status, Streaming};

use super::internal;
use crate::clock::now_ms;
use crate::registry::artifact_dir::Upload;
use crate::registry::artifacts::ArtifactStoreError;
use crate::registry::{manifest, onnx_model};
use crate::server::Controller;
use crate::store::{ModelFile, ModelRow, StoreError};

/// `models add`: receives the header and every file, checks the first is an ONNX model, then
/// stores and signs the version.
pub(super) async fn add(
    ctl: &Controller,
    mut stream: Streaming<AddModelRequest>,
) -> Result<ModelInfo, Status> {
    let header = match stream.message().await?.and_then(|m| m.part) {
        Some(add_model_request::Part::Header(h)) => h,
        _ => {
            return Err(Status::invalid_argument(
                "an upload must start with its header",
            ))
        }
    };
    // Every name becomes one path component on the agents (`models/NAME/VERSION/FILE`): refused
    // here, before a byte is received, when it could not stay one (the agents refuse it too).
    let names_ok = names::model_name(&header.name)
        .and_then(|()| names::version(&header.version))
        .and_then(|()| names::file_names(header.files.iter().map(|f| f.file_name.as_str())));
    names_ok.map_err(|e| Status::invalid_argument(e.to_string()))?;
    let model_ref = format!("{}@{}", header.name, header.version);
    model_ref
        .parse::<edgefleet_suites::ModelRef>()
        .map_err(Status::invalid_argument)?;
    if header.files.is_empty() {
        return Err(Status::invalid_argument(
            "an upload needs at least the .onnx file",
        ));
    }
    if ctl.store.model(&header.name, &header.version)?.is_some() {
        return Err(StoreError::ModelExists(model_ref).into());
    }

    // Receive every file into a temporary upload; on any error all of them are discarded,
    // so a failed add stores nothing.
    let mut uploads: Vec<Upload> = Vec::new();
    let received = receive_files(ctl, &header.files, &mut stream, &mut uploads).await;
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
        let sha256 = ctl.artifacts.commit(upload).await.map_err(stored)?;
        files.push(ModelFile {
            file_name: declared.file_name.clone(),
            sha256,
            size_bytes: size,
        });
    }
    let mut row = ModelRow {
        name: header.name,
        version: header.version,
        quantization: if header.quantization.is_empty() {
            "unknown".into()
        } else {
            header.quantization
        },
        opset: summary.opset,
        signature_json: manifest::signature_json(&summary.inputs, &summary.outputs),
        files,
        created_ms: now_ms(),
        manifest: Vec::new(),
        manifest_signature: Vec::new(),
    };
    manifest::sign(&mut row, &ctl.signer);
    ctl.store.insert_model(&row)?;
    tracing::info!(model = %model_ref, files = row.files.len(), "model registered");
    Ok(model_info(row))
}

pub(super) fn list(ctl: &Controller) -> Result<ListModelsReply, Status> {
    let models = ctl.store.models()?.into_iter().map(model_info).collect();
    Ok(ListModelsReply { models })
}

/// `models show`: the version, its signer and the agents that hold it.
pub(super) fn show(ctl: &Controller, req: ModelRequest) -> Result<ModelDetail, Status> {
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
    Ok(ModelDetail {
        model: Some(model_info(model)),
        signed_by: ctl.signer.fingerprint(),
        placements,
    })
}

/// `models rm`: refused while the version is installed or being rolled out, unless forced;
/// deletes only artifact bytes no other version uses.
pub(super) async fn remove(
    ctl: &Controller,
    req: RemoveModelRequest,
) -> Result<RemoveModelReply, Status> {
    let _guard = ctl.rollout_lock.lock().await?;
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
            r.model_name == req.name && r.model_version == req.version && r.state.is_open()
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
        freed += ctl.artifacts.remove(sha).await;
    }
    tracing::info!(model = %model_ref, artifacts = orphaned.len(), forced = req.force, files = model.files.len(), "model removed");
    Ok(RemoveModelReply {
        artifacts_deleted: orphaned.len() as u32,
        bytes_freed: freed,
    })
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
    tokio::task::spawn_blocking(move || match onnx_model::inspect_file(&path) {
        Ok(summary) => Ok(summary),
        Err(onnx_model::OnnxError::Read(e)) => Err(internal(e)),
        Err(e) => Err(Status::invalid_argument(format!("{file_name}: {e}"))),
    })
    .await
    .map_err(internal)?
}

/// Bytes that could not be stored: the reason, with the store it names (a full disk, an object
/// store that refused or is out of reach).
pub(super) fn stored(e: ArtifactStoreError) -> Status {
    match e {
        ArtifactStoreError::Io(e) => {
            Status::resource_exhausted(format!("cannot store the upload: {e}"))
        }
        other => Status::unavailable(format!("cannot store the upload: {other}")),
    }
}

/// A registered version, or a not-found that says how to list them.
pub(super) fn find_model(ctl: &Controller, name: &str, version: &str) -> Result<ModelRow, Status> {
    ctl.store.model(name, version)?.ok_or_else(|| {
        Status::not_found(format!(
            "unknown model {name}@{version}; `edgefleet models ls` lists the registered ones"
        ))
    })
}

fn model_info(m: ModelRow) -> ModelInfo {
    let (inputs, outputs) = manifest::signatures(&m);
    let files = m.artifact_refs();
    ModelInfo {
        inputs,
        outputs,
        name: m.name,
        version: m.version,
        quantization: m.quantization,
        files,
        opset: m.opset,
        created_unix_ms: m.created_ms,
        manifest: m.manifest,
        signature: m.manifest_signature,
    }
}
