//! `edgefleet store`: the controller's database, offline. `migrate` copies an SQLite store into
//! PostgreSQL and checks both sides and the data folder's artifacts, and copies those into an
//! object store when asked, reading each back to check it.

use std::io::Read as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use edgefleet_controller::registry::artifacts::{Artifacts, ArtifactsConfig};
use edgefleet_controller::store::{Store, TableCopy};
use sha2::{Digest, Sha256};

use super::output::{print_json, print_table};
use super::target::ConfigError;

/// `edgefleet store migrate --from DATA_DIR --to URL [--artifacts S3_URL]`.
pub(super) fn migrate(
    data_dir: &Path,
    url: &str,
    object_store: Option<&ArtifactsConfig>,
) -> anyhow::Result<()> {
    let source = open_embedded(
        data_dir,
        "--from takes the data folder of `edgefleet serve`",
    )?;
    let target = Store::open_database(url)?;
    let started = Instant::now();
    let copies = source.copy_into(&target, |copy| {
        eprintln!(
            "{}: {} rows, {} copied",
            copy.table, copy.source_rows, copy.copied
        )
    })?;
    let copy_s = started.elapsed().as_secs_f64();
    let rows: Vec<Vec<String>> = copies
        .iter()
        .map(|c| {
            vec![
                c.table.to_string(),
                c.source_rows.to_string(),
                c.target_rows.to_string(),
                c.copied.to_string(),
                if c.matches() { "same" } else { "DIFFERENT" }.to_string(),
            ]
        })
        .collect();
    print_table(
        &["table", "SQLite", "PostgreSQL", "copied now", "content"],
        &rows,
    );
    let total: u64 = copies.iter().map(|c| c.copied).sum();
    println!("{total} rows copied in {copy_s:.1} s");
    let artifacts = check_artifacts(&source, &data_dir.join("artifacts"))?;
    println!(
        "{} artifacts ({:.1} MB) in {} match their sha256",
        artifacts.files,
        artifacts.bytes as f64 / 1e6,
        data_dir.join("artifacts").display()
    );
    if let Some(config) = object_store {
        let staging = tempfile_dir(data_dir)?;
        let started = Instant::now();
        let copied = copy_artifacts(&source, data_dir, &staging, config);
        let _ = std::fs::remove_dir_all(&staging);
        let uploaded = copied?;
        println!(
            "{} artifacts in {} match their sha256 ({uploaded} uploaded now, in {:.1} s)",
            artifacts.files,
            config.url,
            started.elapsed().as_secs_f64()
        );
    }
    let different: Vec<&TableCopy> = copies.iter().filter(|c| !c.matches()).collect();
    if let Some(first) = different.first() {
        anyhow::bail!(
            "{} table(s) differ after the copy, first {}: {} rows in SQLite, {} in PostgreSQL, \
             not the same rows (the target holds rows the source does not: was it used by \
             another controller?)",
            different.len(),
            first.table,
            first.source_rows,
            first.target_rows
        );
    }
    Ok(())
}

/// `edgefleet store stats`.
pub(super) fn stats(data_dir: &Path, database: Option<&str>, json: bool) -> anyhow::Result<()> {
    let store = match database {
        Some(url) => Store::open_database(url)?,
        None => open_embedded(data_dir, "give the controller's --data-dir or --database")?,
    };
    let stats = store.table_stats()?;
    let summarized = store.summarized_results()?;
    if json {
        let families: Vec<serde_json::Value> = stats
            .iter()
            .map(|f| {
                serde_json::json!({
                    "family": f.family,
                    "tables": f.tables,
                    "rows": f.rows,
                    "bytes": f.bytes,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "families": families,
            "results_summarized": summarized,
        }));
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|f| {
            vec![
                f.family.to_string(),
                f.rows.to_string(),
                format!("{:.1}", f.bytes as f64 / 1e6),
                f.tables.join(", "),
            ]
        })
        .collect();
    print_table(&["family", "rows", "MB", "tables"], &rows);
    let bytes: u64 = stats.iter().map(|f| f.bytes).sum();
    println!(
        "{:.1} MB in all; {summarized} results reduced to their summary by retention",
        bytes as f64 / 1e6
    );
    Ok(())
}

/// Uploads the data folder's artifacts into an object store (those not there yet) and reads
/// each one back to check its sha256; returns how many were uploaded.
fn copy_artifacts(
    source: &Store,
    data_dir: &Path,
    staging: &Path,
    config: &ArtifactsConfig,
) -> anyhow::Result<usize> {
    let bucket = Artifacts::in_object_store(staging, config)?;
    let runtime = tokio::runtime::Handle::current();
    let mut uploaded = 0;
    for (sha256, _) in source.artifacts()? {
        let file = data_dir.join("artifacts").join(&sha256);
        if runtime.block_on(bucket.put_file(&sha256, &file))? {
            uploaded += 1;
        }
        let found = runtime.block_on(bucket.hash(&sha256))?;
        if found != sha256 {
            anyhow::bail!(
                "artifact {sha256} reads back from {} with sha256 {found}",
                config.url
            );
        }
    }
    Ok(uploaded)
}

/// A folder of its own beside the data folder's artifacts, for uploads staged on the way to an
/// object store (none are: `migrate` uploads the artifacts' own files).
fn tempfile_dir(data_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = data_dir.join(format!("migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The SQLite store in a controller's data folder; a folder without one is a usage error that
/// ends with `hint`.
fn open_embedded(data_dir: &Path, hint: &str) -> anyhow::Result<Store> {
    let file = data_dir.join("controller.db");
    if !file.is_file() {
        return Err(ConfigError(format!(
            "{} holds no controller.db; {hint}",
            data_dir.display()
        ))
        .into());
    }
    Ok(Store::open(&file)?)
}

struct ArtifactCheck {
    files: usize,
    bytes: u64,
}

/// Every artifact the store names is in `dir` with its size and sha256.
fn check_artifacts(store: &Store, dir: &Path) -> anyhow::Result<ArtifactCheck> {
    let mut check = ArtifactCheck { files: 0, bytes: 0 };
    for (sha256, size) in store.artifacts()? {
        let path = dir.join(&sha256);
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("artifact {sha256} is missing from {}", dir.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            read += n as u64;
        }
        let found = hex::encode(hasher.finalize());
        if found != sha256 || read != size {
            anyhow::bail!(
                "artifact {} is damaged: {read} bytes with sha256 {found}, stored as {size} bytes",
                path.display()
            );
        }
        check.files += 1;
        check.bytes += read;
    }
    Ok(check)
}
