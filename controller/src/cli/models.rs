//! `edgefleet models`: register a version (upload with a progress bar), list, show a version's
//! signed manifest and where it is installed, remove one.

use std::path::PathBuf;

use edgefleet_proto::v1::{ModelInfo, ModelPlacement};
use sha2::Digest;

use super::client::Client;
use super::output::{print_json, print_table};
use super::target::Target;
use super::ModelsCommand;

pub(super) async fn run(target: &Target, command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Add {
            file,
            name,
            version,
            quant,
            with,
        } => add(target, file, with, &name, &version, &quant).await,
        ModelsCommand::Ls { json } => list(target, json).await,
        ModelsCommand::Show { model, json } => show(target, &model, json).await,
        ModelsCommand::Rm { model, force } => remove(target, &model, force).await,
    }
}

async fn add(
    target: &Target,
    file: PathBuf,
    with: Vec<PathBuf>,
    name: &str,
    version: &str,
    quant: &str,
) -> anyhow::Result<()> {
    let mut client = Client::connect(target).await?;
    let info = client.add_model(&file, &with, name, version, quant).await?;
    println!(
        "registered {}@{} ({}, opset {})",
        info.name, info.version, info.quantization, info.opset
    );
    for f in &info.files {
        println!(
            "  {}  {:>10} bytes  sha256 {}",
            f.file_name, f.size_bytes, f.sha256
        );
    }
    Ok(())
}

/// The first input with its shape and how many more: a decoder with its cache has 63
/// (`models show` and `--json` list every one).
fn inputs_in_brief(m: &ModelInfo) -> String {
    let shown: Vec<String> = m
        .inputs
        .iter()
        .take(1)
        .map(|i| format!("{}[{}]", i.name, i.shape.join(",")))
        .collect();
    match m.inputs.len().saturating_sub(shown.len()) {
        0 => shown.join(" "),
        more => format!("{} +{more} more", shown.join(" ")),
    }
}

async fn list(target: &Target, json: bool) -> anyhow::Result<()> {
    let models = Client::connect(target).await?.models().await?;
    if json {
        return print_json(&models);
    }
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            let size: u64 = m.files.iter().map(|f| f.size_bytes).sum();
            vec![
                format!("{}@{}", m.name, m.version),
                m.quantization.clone(),
                format!("{:.1}", size as f64 / 1e6),
                m.opset.to_string(),
                inputs_in_brief(m),
                m.files
                    .first()
                    .map(|f| f.sha256[..12].to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["MODEL", "QUANT", "MB", "OPSET", "INPUTS", "SHA256"],
        &rows,
    );
    Ok(())
}

/// `models show --json`: the version with its manifest's digest, signer and signature.
#[derive(serde::Serialize)]
struct ShownModel<'a> {
    #[serde(flatten)]
    model: &'a ModelInfo,
    signed_by: &'a str,
    manifest_sha256: String,
    signature: String,
    placements: &'a [ModelPlacement],
}

async fn show(target: &Target, model: &str, json: bool) -> anyhow::Result<()> {
    let (name, version) = split_model(model)?;
    let detail = Client::connect(target)
        .await?
        .show_model(&name, &version)
        .await?;
    let m = detail.model.clone().unwrap_or_default();
    if json {
        return print_json(&ShownModel {
            model: &m,
            signed_by: &detail.signed_by,
            manifest_sha256: sha256_hex(&m.manifest),
            signature: hex::encode(&m.signature),
            placements: &detail.placements,
        });
    }
    println!(
        "{}@{}  {}  opset {}",
        m.name, m.version, m.quantization, m.opset
    );
    println!(
        "manifest sha256 {}  signed by controller key {}",
        sha256_hex(&m.manifest),
        detail.signed_by
    );
    for f in &m.files {
        println!(
            "  {:<24} {:>12} bytes  sha256 {}",
            f.file_name, f.size_bytes, f.sha256
        );
    }
    for (kind, list) in [("input ", &m.inputs), ("output", &m.outputs)] {
        for s in list.iter() {
            println!(
                "  {kind} {} {}[{}]",
                s.name,
                s.element_type,
                s.shape.join(",")
            );
        }
    }
    if detail.placements.is_empty() {
        println!("installed on no agent");
    }
    for p in &detail.placements {
        println!("  on {} ({})", p.agent_name, p.role);
    }
    Ok(())
}

async fn remove(target: &Target, model: &str, force: bool) -> anyhow::Result<()> {
    let (name, version) = split_model(model)?;
    let reply = Client::connect(target)
        .await?
        .remove_model(&name, &version, force)
        .await?;
    println!(
        "removed {model} ({} artifact file(s), {:.1} MB freed)",
        reply.artifacts_deleted,
        reply.bytes_freed as f64 / 1e6
    );
    Ok(())
}

/// `name@version` → (name, version), or a one-line reason.
pub(super) fn split_model(s: &str) -> anyhow::Result<(String, String)> {
    let r: edgefleet_suites::ModelRef = s.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    Ok((r.name, r.version))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}
