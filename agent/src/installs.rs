//! Carrying out install and rollback commands: verify the manifest's signature against the
//! enrolled controller key, refuse names that would not stay inside the model's folder, check
//! free disk space, fetch what is missing (resumable), verify
//! every file's sha256, stage and activate the version atomically, run the health check in a
//! worker, and switch back to the previous version if it fails. Every outcome is an
//! [`InstallResult`] with its reason; nothing here can take the daemon down.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_proto::v1::{InstallModel, InstallResult, Manifest, RollbackModel};
use prost::Message;

use crate::artifacts::sha256_of_file;
use crate::enrollment::EnrollmentError;
use crate::installer::{InstallError, ModelInstaller};
use crate::jobs::{fetch_artifact, run_worker, JobContext, JobError};
use crate::runtime_library;
use crate::worker::protocol::{WorkerJob, WorkerOutcome};

/// Why an install failed; its `Display` is the install result's `error`.
#[derive(Debug, thiserror::Error)]
pub enum InstallsError {
    #[error(transparent)]
    Enrollment(#[from] EnrollmentError),
    #[error(transparent)]
    Installer(#[from] InstallError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Library(#[from] runtime_library::LibraryNotFound),
    #[error("the manifest lists no files")]
    NoFiles,
    #[error("cannot read free space of {}: {source}", dir.display())]
    FreeSpace {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not enough disk space in {}: the install needs {needed} and {reserve} must stay free, but only {free} are free", dir.display())]
    NoSpace {
        dir: PathBuf,
        needed: Megabytes,
        reserve: Megabytes,
        free: Megabytes,
    },
    #[error("{file} is {size} bytes, the manifest says {expected}; refused")]
    Size {
        file: String,
        size: u64,
        expected: u64,
    },
    #[error(transparent)]
    Hashing(#[from] tokio::task::JoinError),
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file} failed verification: sha256 {actual}, the manifest says {expected}; refused")]
    Verification {
        file: String,
        actual: String,
        expected: String,
    },
    /// The health check failed and the previous version (or none) is active again, as `now` says.
    #[error("health check failed: {reason}; {now}")]
    HealthCheck {
        reason: Box<InstallsError>,
        now: String,
    },
    #[error("health check failed: {reason}; and switching back failed: {source}")]
    SwitchBack {
        reason: Box<InstallsError>,
        #[source]
        source: InstallError,
    },
}

/// A size in MB, one decimal (`12.3 MB`).
#[derive(Debug, Clone, Copy)]
pub struct Megabytes(pub u64);

impl std::fmt::Display for Megabytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MB", self.0 as f64 / 1e6)
    }
}

/// How long a health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// Installs a signed model version and makes it active, or explains why not (leaving the
/// previous version active).
pub async fn install(ctx: &mut JobContext, command: InstallModel) -> InstallResult {
    let mut result = InstallResult {
        install_id: command.install_id.clone(),
        ..InstallResult::default()
    };
    let manifest = match Manifest::decode(command.manifest.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            result.error = format!("the manifest is unreadable: {e}");
            return result;
        }
    };
    result.model_name = manifest.name.clone();
    if let Err(e) = install_steps(ctx, &command, &manifest, &mut result).await {
        tracing::warn!(model = %manifest.name, version = %manifest.version, error = %e, "install failed");
        result.ok = false;
        result.error = e.to_string();
    } else {
        result.ok = true;
        tracing::info!(model = %manifest.name, version = %manifest.version, previous = %result.previous_version, health = %result.health, "model installed and active");
    }
    with_state(ctx, &manifest.name, result)
}

async fn install_steps(
    ctx: &mut JobContext,
    command: &InstallModel,
    manifest: &Manifest,
    result: &mut InstallResult,
) -> Result<(), InstallsError> {
    ctx.enrollment
        .verify(&command.manifest, &command.signature)?;
    // Before anything is fetched or written: a signed manifest may still come from an older or
    // compromised controller.
    ModelInstaller::check_manifest(manifest)?;
    let name = &manifest.name;
    let version = &manifest.version;
    let active = ctx.installer.active(name)?;
    result.previous_version = active.clone().unwrap_or_default();
    if active.as_deref() == Some(version.as_str())
        && ctx.installer.holds(manifest, &command.manifest)
    {
        // The same install again (a resend after a reconnect): nothing to do. What was active
        // before it is next in the history.
        result.previous_version = ctx
            .installer
            .history(name)
            .get(1)
            .cloned()
            .unwrap_or_default();
        result.health = "already active".into();
        return Ok(());
    }
    if manifest.files.is_empty() {
        return Err(InstallsError::NoFiles);
    }

    check_disk_space(ctx, manifest)?;
    let fetch_started = Instant::now();
    result.fetch_started_unix_ms = unix_ms();
    let mut sources = Vec::new();
    let mut held_before = Vec::new();
    for file in &manifest.files {
        let was_held = ctx.store.contains(&file.sha256);
        let fetched =
            fetch_artifact(&ctx.store, &mut ctx.client(), &ctx.agent_id, &file.sha256).await?;
        result.fetched_bytes += fetched.bytes;
        held_before.push(was_held);
        sources.push(fetched.path);
    }
    result.fetch_finished_unix_ms = unix_ms();
    result.fetch_ms = fetch_started.elapsed().as_secs_f64() * 1000.0;
    // Fetched files were hashed as they arrived; those held from before are hashed again, so
    // bit rot in the store is caught too.
    verify_files(manifest, &sources, &held_before).await?;

    let installer = ctx.installer.clone();
    installer.stage(manifest, &command.manifest, &command.signature, &sources)?;
    installer.activate(name, Some(version))?;

    let version_dir = installer.version_dir(name, version)?;
    let health = if command.health_check == "none" {
        Ok("not asked for".to_string())
    } else {
        health_check(ctx, manifest, &version_dir, command.health_check == "bench").await
    };
    match health {
        Ok(verdict) => result.health = verdict,
        Err(reason) => {
            let reason = Box::new(reason);
            if let Err(source) = installer.activate(name, active.as_deref()) {
                return Err(InstallsError::SwitchBack { reason, source });
            }
            let _ = installer.remove(name, version);
            return Err(InstallsError::HealthCheck {
                reason,
                now: match &active {
                    Some(v) => format!("version {v} is active again"),
                    None => "no version is active".into(),
                },
            });
        }
    }
    prune(ctx, name);
    Ok(())
}

/// Switches a model away from a version: to a named earlier one (still on disk), or to the one
/// active before it, or to none. A model not running `from_version` is left alone.
pub fn rollback(ctx: &JobContext, command: &RollbackModel) -> InstallResult {
    let name = &command.model_name;
    let mut result = InstallResult {
        install_id: command.install_id.clone(),
        model_name: name.clone(),
        ..InstallResult::default()
    };
    let outcome = ctx.installer.active(name).and_then(|active| {
        result.previous_version = active.clone().unwrap_or_default();
        if active.as_deref() != Some(command.from_version.as_str()) {
            return Ok(());
        }
        let to = if command.to_previous {
            let history = ctx.installer.history(name);
            history
                .iter()
                .position(|v| *v == command.from_version)
                .and_then(|i| history.get(i + 1).cloned())
        } else {
            (!command.to_version.is_empty()).then(|| command.to_version.clone())
        };
        ctx.installer.activate(name, to.as_deref()).map(|_| ())
    });
    match outcome {
        Ok(()) => {
            result.ok = true;
            tracing::info!(model = %name, from = %command.from_version, to = %command.to_version, "rolled back");
        }
        Err(e) => {
            result.error = format!("rollback failed: {e}");
            tracing::error!(model = %name, error = %result.error, "rollback failed");
        }
    }
    with_state(ctx, name, result)
}

/// Adds what is installed of the model now to a command's answer.
fn with_state(ctx: &JobContext, name: &str, mut result: InstallResult) -> InstallResult {
    let state = ctx.installer.state(name);
    result.active_version = state.active_version.clone();
    result.state = Some(state);
    result
}

/// Refuses an install that would leave less than the configured reserve free.
fn check_disk_space(ctx: &JobContext, manifest: &Manifest) -> Result<(), InstallsError> {
    let needed: u64 = manifest
        .files
        .iter()
        .map(|f| ctx.store.missing_bytes(&f.sha256, f.size_bytes))
        .sum();
    let dir = ctx.store.dir();
    let free = free_bytes(dir).map_err(|source| InstallsError::FreeSpace {
        dir: dir.to_path_buf(),
        source,
    })?;
    let reserve = ctx.config.min_free_disk_bytes;
    if free < needed.saturating_add(reserve) {
        return Err(InstallsError::NoSpace {
            dir: dir.to_path_buf(),
            needed: Megabytes(needed),
            reserve: Megabytes(reserve),
            free: Megabytes(free),
        });
    }
    Ok(())
}

/// Bytes available to this (unprivileged) process on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Checks each file's size, and hashes again those held before this install.
async fn verify_files(
    manifest: &Manifest,
    sources: &[PathBuf],
    held_before: &[bool],
) -> Result<(), InstallsError> {
    for ((file, path), held) in manifest.files.iter().zip(sources).zip(held_before) {
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        if size != file.size_bytes {
            return Err(InstallsError::Size {
                file: file.file_name.clone(),
                size,
                expected: file.size_bytes,
            });
        }
        if !held {
            continue;
        }
        let path = path.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_of_file(&path))
            .await?
            .map_err(|source| InstallsError::Read {
                file: file.file_name.clone(),
                source,
            })?;
        if actual != file.sha256 {
            return Err(InstallsError::Verification {
                file: file.file_name.clone(),
                actual,
                expected: file.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// Loads the installed version in a worker and runs a few real queries: text through its
/// tokenizer when it has one (a short generation for decoders), else zero-filled inputs of the
/// model's declared shapes. With
/// `benchmark`, the queries are the quick suite's single-stream run instead (10 warm-up, then at
/// least 200 queries and 3 s; generations of 16 tokens after a 32-token prompt for decoders).
async fn health_check(
    ctx: &JobContext,
    manifest: &Manifest,
    version_dir: &Path,
    benchmark: bool,
) -> Result<String, InstallsError> {
    let library = runtime_library::locate(ctx.config.onnxruntime_library.as_deref())?;
    let model_path = version_dir.join(&manifest.files[0].file_name);
    let tokenizer_path = manifest
        .files
        .iter()
        .find(|f| f.file_name == "tokenizer.json")
        .map(|f| version_dir.join(&f.file_name));
    let decoder = manifest
        .inputs
        .iter()
        .any(|i| i.name.starts_with("past_key_values"));
    let scenario = match (&tokenizer_path, decoder) {
        (None, _) => "load",
        (Some(_), true) => "generate",
        (Some(_), false) => "single-stream",
    };
    let job = WorkerJob {
        onnxruntime_library: library,
        model_path,
        tokenizer_path,
        sentences: vec!["edgefleet checks that this model answers after install.".into()],
        sequence_length: None,
        threads: 1,
        warmup_queries: if benchmark { 10 } else { 1 },
        min_queries: match (benchmark, decoder) {
            (false, _) => 3,
            (true, true) => 5,
            (true, false) => 200,
        },
        min_duration_ms: if benchmark { 3_000 } else { 0 },
        max_duration_ms: if benchmark { 60_000 } else { 10_000 },
        repetitions: 1,
        scenario: scenario.into(),
        batch: 1,
        target_qps: 0.0,
        p99_bound_ms: 0.0,
        seed: 0,
        peak_search: false,
        sensors_root: ctx.config.sensors_root.clone(),
        idle_power_s: 0.0,
        max_start_temp_c: None,
        max_wait_s: 0.0,
        quality: None,
        prompt_tokens: if benchmark { 32 } else { 8 },
        generate_tokens: if benchmark { 16 } else { 2 },
        engine: String::new(),
        execution_provider: String::new(),
        graph_optimization: String::new(),
        inter_op_threads: 0,
        media: None,
    };
    match run_worker(&job, HEALTH_TIMEOUT, ctx.config.worker_memory_limit_bytes).await? {
        (WorkerOutcome::Measured(report), _) if benchmark => Ok(format!(
            "benchmark ok: {} queries in {:.1} s, p50 {:.2} ms, p90 {:.2} ms, peak RSS {:.0} MB (load {:.0} ms)",
            report.samples,
            report.duration_s,
            report.latency_ms.p50,
            report.latency_ms.p90,
            report.peak_rss_bytes as f64 / 1e6,
            report.load_ms
        )),
        (WorkerOutcome::Measured(report), _) => Ok(format!(
            "{} smoke queries ok, p50 {:.2} ms (load {:.0} ms)",
            report.samples, report.latency_ms.p50, report.load_ms
        )),
        (WorkerOutcome::Loaded { load_ms, smoke }, _) => {
            Ok(format!("loaded in {load_ms:.0} ms; {smoke}"))
        }
        _ => Err(JobError::UnexpectedAnswer("the health check").into()),
    }
}

/// Deletes versions beyond the kept ones, and their artifacts that no kept version uses.
fn prune(ctx: &JobContext, name: &str) {
    let removed = match ctx.installer.prune(name) {
        Ok(removed) => removed,
        Err(e) => {
            tracing::warn!(model = %name, error = %e, "cannot clean up old versions");
            return;
        }
    };
    if removed.is_empty() {
        return;
    }
    let in_use: std::collections::HashSet<String> = ctx
        .installer
        .list()
        .iter()
        .flat_map(|m| {
            m.versions
                .iter()
                .filter_map(|v| ctx.installer.manifest(&m.name, v))
                .collect::<Vec<_>>()
        })
        .flat_map(|m| m.files.into_iter().map(|f| f.sha256))
        .collect();
    for manifest in removed {
        tracing::info!(model = %name, version = %manifest.version, "removed an old version");
        for file in manifest.files {
            if !in_use.contains(&file.sha256) {
                ctx.store.remove(&file.sha256);
            }
        }
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests;
