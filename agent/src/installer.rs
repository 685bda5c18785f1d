//! Installed models on the device: `DATA/models/<name>/<version>/` holds a version's files with
//! its signed manifest, `DATA/models/<name>/active` is a symlink to the active version, and
//! `DATA/models/<name>/history` lists versions newest first. A version is written to a staging
//! folder, fsynced and renamed into place; the active pointer is switched with an atomic rename,
//! so a power cut leaves either the old or the new version active, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use edgefleet_proto::v1::{InstalledModel, Manifest};
use edgefleet_suites::names::{self, NameError};

use edgefleet_suites::names::{ACTIVE, ACTIVE_TMP, HISTORY, HISTORY_TMP, STAGING_PREFIX};
/// The file a version's encoded manifest is kept in, beside its signature.
pub use edgefleet_suites::names::{MANIFEST_FILE, SIGNATURE_FILE};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A model name, version or file name that is not one plain path component of its own
    /// (see [`edgefleet_suites::names`]); nothing was written.
    #[error("refused: {0}")]
    BadName(#[from] NameError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("version {version} of {name} is not on this device (it may have been cleaned up)")]
    Missing { name: String, version: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The device's installed models.
#[derive(Debug, Clone)]
pub struct ModelInstaller {
    root: PathBuf,
    /// Versions kept per model, the active one included (at least 2, so one rollback is always
    /// possible).
    keep: usize,
}

impl ModelInstaller {
    pub fn open(root: &Path, keep: usize) -> Result<ModelInstaller, InstallError> {
        std::fs::create_dir_all(root).map_err(io(root))?;
        Ok(ModelInstaller {
            root: root.to_path_buf(),
            keep: keep.max(2),
        })
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, InstallError> {
        names::model_name(name)?;
        Ok(self.root.join(name))
    }

    /// The folder of an installed version (which may not exist).
    pub fn version_dir(&self, name: &str, version: &str) -> Result<PathBuf, InstallError> {
        names::version(version)?;
        Ok(self.model_dir(name)?.join(version))
    }

    /// The active version of a model, if any.
    pub fn active(&self, name: &str) -> Result<Option<String>, InstallError> {
        let link = self.model_dir(name)?.join(ACTIVE);
        match std::fs::read_link(&link) {
            Ok(target) => Ok(target.to_str().map(str::to_string)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&link)(e)),
        }
    }

    /// Whether this exact manifest is installed as `version` already.
    pub fn holds(&self, manifest: &Manifest, manifest_bytes: &[u8]) -> bool {
        self.version_dir(&manifest.name, &manifest.version)
            .ok()
            .and_then(|dir| std::fs::read(dir.join(MANIFEST_FILE)).ok())
            .is_some_and(|held| held == manifest_bytes)
    }

    /// Refuses a manifest whose model name, version or file names are not plain names of their
    /// own (see [`edgefleet_suites::names`]): a signed manifest is checked too, since its signer
    /// may be an older or compromised controller.
    pub fn check_manifest(manifest: &Manifest) -> Result<(), InstallError> {
        names::model_name(&manifest.name)?;
        names::version(&manifest.version)?;
        names::file_names(manifest.files.iter().map(|f| f.file_name.as_str()))?;
        Ok(())
    }

    /// Writes a version's files (taken from `sources`, in the manifest's order) into place:
    /// staging folder, fsync, atomic rename. Files are hard-linked from the artifact store
    /// where possible (no extra space), copied otherwise. A manifest with a bad name is refused
    /// before anything is written.
    pub fn stage(
        &self,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        signature: &[u8],
        sources: &[PathBuf],
    ) -> Result<PathBuf, InstallError> {
        Self::check_manifest(manifest)?;
        let model_dir = self.model_dir(&manifest.name)?;
        let final_dir = self.version_dir(&manifest.name, &manifest.version)?;
        if self.holds(manifest, manifest_bytes) {
            return Ok(final_dir);
        }
        std::fs::create_dir_all(&model_dir).map_err(io(&model_dir))?;
        let staging = model_dir.join(format!("{STAGING_PREFIX}{}", manifest.version));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        std::fs::create_dir(&staging).map_err(io(&staging))?;
        for (file, source) in manifest.files.iter().zip(sources) {
            let dest = staging.join(&file.file_name);
            match std::fs::hard_link(source, &dest) {
                Ok(()) => {}
                // Never copy over a file already there: it may be a hard link into the store.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(io(&dest)(e));
                }
                Err(_) => {
                    std::fs::copy(source, &dest).map_err(io(&dest))?;
                }
            }
            sync_file(&dest)?;
        }
        // New files only, for the same reason.
        write_new_synced(&staging.join(MANIFEST_FILE), manifest_bytes)?;
        write_new_synced(&staging.join(SIGNATURE_FILE), signature)?;
        sync_dir(&staging)?;
        if final_dir.exists() {
            // A different build under the same version (the controller was reset): replace it.
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        std::fs::rename(&staging, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&model_dir)?;
        Ok(final_dir)
    }

    /// Makes `version` active (or, with `None`, leaves no version active) by an atomic switch of
    /// the pointer. Returns the version that was active before.
    pub fn activate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, InstallError> {
        let model_dir = self.model_dir(name)?;
        let previous = self.active(name)?;
        let link = model_dir.join(ACTIVE);
        match version {
            Some(version) => {
                let dir = self.version_dir(name, version)?;
                if !dir.join(MANIFEST_FILE).is_file() {
                    return Err(InstallError::Missing {
                        name: name.into(),
                        version: version.into(),
                    });
                }
                let tmp = model_dir.join(ACTIVE_TMP);
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(version, &tmp).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &link).map_err(io(&link))?;
                let mut history = self.history(name);
                history.retain(|v| v != version);
                history.insert(0, version.to_string());
                self.write_history(name, &history)?;
            }
            None => match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&link)(e)),
            },
        }
        sync_dir(&model_dir)?;
        Ok(previous)
    }

    /// Deletes a version (one that failed its health check); it must not be active.
    pub fn remove(&self, name: &str, version: &str) -> Result<(), InstallError> {
        let dir = self.version_dir(name, version)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let mut history = self.history(name);
        history.retain(|v| v != version);
        self.write_history(name, &history)
    }

    /// Keeps the active version and the newest others up to `keep` in all; returns the
    /// manifests of the versions deleted.
    pub fn prune(&self, name: &str) -> Result<Vec<Manifest>, InstallError> {
        let active = self.active(name)?;
        let mut kept = 0;
        let mut removed = Vec::new();
        for version in self.history(name) {
            let is_active = active.as_deref() == Some(version.as_str());
            if is_active || kept < self.keep - 1 {
                if !is_active {
                    kept += 1;
                }
                continue;
            }
            if let Some(m) = self.manifest(name, &version) {
                removed.push(m);
            }
            self.remove(name, &version)?;
        }
        Ok(removed)
    }

    /// The manifest an installed version was installed with.
    pub fn manifest(&self, name: &str, version: &str) -> Option<Manifest> {
        let dir = self.version_dir(name, version).ok()?;
        let bytes = std::fs::read(dir.join(MANIFEST_FILE)).ok()?;
        prost::Message::decode(bytes.as_slice()).ok()
    }

    /// The versions kept on disk, newest first.
    pub fn history(&self, name: &str) -> Vec<String> {
        let Ok(dir) = self.model_dir(name) else {
            return Vec::new();
        };
        std::fs::read_to_string(dir.join(HISTORY))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|v| names::version(v).is_ok() && dir.join(v).join(MANIFEST_FILE).is_file())
            .map(str::to_string)
            .collect()
    }

    fn write_history(&self, name: &str, versions: &[String]) -> Result<(), InstallError> {
        let dir = self.model_dir(name)?;
        let path = dir.join(HISTORY);
        let tmp = dir.join(HISTORY_TMP);
        let mut text = versions.join("\n");
        text.push('\n');
        write_synced(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// What is installed, for the hello and for install results.
    pub fn state(&self, name: &str) -> InstalledModel {
        InstalledModel {
            name: name.to_string(),
            active_version: self.active(name).ok().flatten().unwrap_or_default(),
            versions: self.history(name),
        }
    }

    /// Every installed model.
    pub fn list(&self) -> Vec<InstalledModel> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| names::model_name(n).is_ok())
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| self.state(n))
            .filter(|s| !s.versions.is_empty() || !s.active_version.is_empty())
            .collect()
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// Like [`write_synced`], but refuses to open a file that exists (and so to truncate it).
fn write_new_synced(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn sync_file(path: &Path) -> Result<(), InstallError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<(), InstallError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_proto::v1::ArtifactRef;

    fn manifest(version: &str) -> (Manifest, Vec<u8>) {
        let m = Manifest {
            name: "m".into(),
            version: version.into(),
            files: vec![ArtifactRef {
                file_name: "model.onnx".into(),
                sha256: "a".repeat(64),
                size_bytes: 3,
            }],
            ..Manifest::default()
        };
        let bytes = prost::Message::encode_to_vec(&m);
        (m, bytes)
    }

    fn install(inst: &ModelInstaller, src: &Path, version: &str) -> Option<String> {
        let (m, bytes) = manifest(version);
        inst.stage(&m, &bytes, b"sig", &[src.to_path_buf()])
            .unwrap();
        inst.activate("m", Some(version)).unwrap()
    }

    #[test]
    fn install_switches_the_pointer_and_keeps_one_version_for_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("blob");
        std::fs::write(&src, b"abc").unwrap();
        let inst = ModelInstaller::open(&dir.path().join("models"), 2).unwrap();
        assert_eq!(install(&inst, &src, "1"), None);
        assert_eq!(install(&inst, &src, "2"), Some("1".into()));
        assert_eq!(inst.active("m").unwrap().as_deref(), Some("2"));
        let files = dir.path().join("models/m/active/model.onnx");
        assert_eq!(std::fs::read(files).unwrap(), b"abc");
        assert_eq!(install(&inst, &src, "3"), Some("2".into()));
        let removed = inst.prune("m").unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].version, "1");
        assert_eq!(inst.history("m"), ["3", "2"]);
        // Rolling back to the kept version works; to the pruned one does not.
        assert_eq!(inst.activate("m", Some("2")).unwrap(), Some("3".into()));
        assert!(matches!(
            inst.activate("m", Some("1")),
            Err(InstallError::Missing { .. })
        ));
        assert_eq!(
            inst.list(),
            [InstalledModel {
                name: "m".into(),
                active_version: "2".into(),
                versions: vec!["2".into(), "3".into()],
            }]
        );
        inst.activate("m", None).unwrap();
        assert_eq!(inst.active("m").unwrap(), None);
    }

    #[test]
    fn a_version_staged_twice_is_kept_and_leftover_staging_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("blob");
        std::fs::write(&src, b"abc").unwrap();
        let inst = ModelInstaller::open(&dir.path().join("models"), 2).unwrap();
        std::fs::create_dir_all(dir.path().join("models/m/.staging-1")).unwrap();
        std::fs::write(dir.path().join("models/m/.staging-1/junk"), b"x").unwrap();
        let (m, bytes) = manifest("1");
        inst.stage(&m, &bytes, b"sig", std::slice::from_ref(&src))
            .unwrap();
        assert!(inst.holds(&m, &bytes));
        assert!(!dir.path().join("models/m/1/junk").exists());
        assert!(!dir.path().join("models/m/.staging-1").exists());
    }

    /// Every file, folder and link under `dir`, with its bytes or target.
    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(path) = todo.pop() {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                std::fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                b"dir".to_vec()
            } else {
                std::fs::read(&path).unwrap()
            };
            out.push((path, what));
        }
        out.sort();
        out
    }

    #[test]
    fn a_version_named_active_or_a_file_named_manifest_pb_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("blob");
        std::fs::write(&src, b"abc").unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"other bytes").unwrap();
        let inst = ModelInstaller::open(&dir.path().join("models"), 2).unwrap();
        install(&inst, &src, "1");
        let before = tree(dir.path());

        // A version named like the active link: refused before the link is touched.
        let (m, bytes) = manifest("active");
        let err = inst
            .stage(&m, &bytes, b"sig", std::slice::from_ref(&src))
            .unwrap_err();
        assert!(matches!(err, InstallError::BadName(_)), "{err}");
        assert!(
            err.to_string().contains("version `active` is reserved"),
            "{err}"
        );
        assert!(inst.activate("m", Some("active")).is_err());
        assert!(inst.remove("m", "active").is_err());
        assert_eq!(tree(dir.path()), before);

        // A companion file named like the manifest: refused before anything is linked, so the
        // manifest is never written through a hard link into the store.
        let (mut m, _) = manifest("2");
        m.files.push(edgefleet_proto::v1::ArtifactRef {
            file_name: MANIFEST_FILE.into(),
            sha256: "b".repeat(64),
            size_bytes: 11,
        });
        let bytes = prost::Message::encode_to_vec(&m);
        let err = inst
            .stage(&m, &bytes, b"sig", &[src.clone(), other.clone()])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("file name `manifest.pb` is reserved"),
            "{err}"
        );
        // The same file twice would copy one artifact over the other's hard link.
        m.files[1].file_name = "model.onnx".into();
        let bytes = prost::Message::encode_to_vec(&m);
        let err = inst
            .stage(&m, &bytes, b"sig", &[src.clone(), other.clone()])
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        assert_eq!(tree(dir.path()), before);
        assert_eq!(std::fs::read(&src).unwrap(), b"abc");
        assert_eq!(std::fs::read(&other).unwrap(), b"other bytes");
        assert_eq!(inst.active("m").unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn names_cannot_escape_the_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        let inst = ModelInstaller::open(dir.path(), 2).unwrap();
        for bad in [
            "..",
            "a/b",
            "",
            ".hidden",
            "active",
            "history",
            ".staging-1",
        ] {
            assert!(inst.version_dir("m", bad).is_err(), "{bad}");
            assert!(inst.active(bad).is_err(), "{bad}");
        }
    }
}
