//! Installs and rollbacks end to end on a real data folder, with a signing key pinned and the
//! artifacts already held (no controller needed).

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use edgefleet_proto::v1::ArtifactRef;
use sha2::{Digest, Sha256};

use super::*;
use crate::artifacts::ArtifactStore;
use crate::config::{AgentConfig, ConfigFile, Overrides};
use crate::enrollment::Enrollment;

const KEY: [u8; 32] = [5; 32];

/// An agent's install context over `data`, offline: every artifact it needs is in the store
/// already, and the controller's key is pinned.
fn context(data: &Path) -> JobContext {
    let mut config = AgentConfig::resolve(
        ConfigFile::default(),
        Overrides {
            controller: vec!["http://127.0.0.1:9".into()],
            insecure: true,
            enrollment_token: Some("t".into()),
            name: Some("edge".into()),
            data_dir: Some(data.to_path_buf()),
            ..Overrides::default()
        },
    )
    .unwrap();
    config.min_free_disk_bytes = 0;
    let channel = tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy();
    JobContext {
        config,
        agent_id: "a".into(),
        store: ArtifactStore::open(&data.join("artifacts")).unwrap(),
        channel: crate::channel::LinkChannel::new(vec![channel]),
        installer: ModelInstaller::open(&data.join("models"), 2).unwrap(),
        enrollment: Enrollment::new(
            data,
            Some(SigningKey::from_bytes(&KEY).verifying_key().to_bytes()),
        ),
    }
}

/// Puts bytes in the store; returns their reference under `file_name`.
fn artifact(data: &Path, file_name: &str, bytes: &[u8]) -> ArtifactRef {
    let sha256 = hex::encode(Sha256::digest(bytes));
    std::fs::write(data.join("artifacts").join(&sha256), bytes).unwrap();
    ArtifactRef {
        file_name: file_name.into(),
        sha256,
        size_bytes: bytes.len() as u64,
    }
}

/// A correctly signed install of `name@version` with these files, without a health check.
fn command(name: &str, version: &str, files: Vec<ArtifactRef>) -> InstallModel {
    let manifest = Manifest {
        name: name.into(),
        version: version.into(),
        files,
        ..Manifest::default()
    }
    .encode_to_vec();
    InstallModel {
        install_id: format!("{name}@{version}"),
        signature: SigningKey::from_bytes(&KEY)
            .sign(&manifest)
            .to_bytes()
            .to_vec(),
        manifest,
        health_check: "none".into(),
    }
}

/// Every file, folder and link under `dir`, with its bytes or target.
fn tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let what = if meta.is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            "dir".into()
        } else {
            String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()
        };
        out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), what);
    }
    out
}

#[tokio::test]
async fn a_signed_manifest_with_an_escaping_name_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut ctx = context(dir.path());
    let model = artifact(dir.path(), "model.onnx", b"the model's bytes");
    let first = install(&mut ctx, command("m", "1", vec![model.clone()])).await;
    assert!(first.ok, "{}", first.error);
    let other = artifact(dir.path(), "other", b"another artifact");
    let before = tree(dir.path());

    let as_manifest = ArtifactRef {
        file_name: "manifest.pb".into(),
        ..other.clone()
    };
    let cases = [
        (
            command("m", "active", vec![model.clone()]),
            "refused: version `active` is reserved by the agent's model layout",
        ),
        (
            command("m", "2", vec![model.clone(), as_manifest]),
            "refused: file name `manifest.pb` is reserved by the agent's model layout",
        ),
        (
            command("m", "2", vec![model.clone(), model.clone()]),
            "refused: file name `model.onnx` is listed twice",
        ),
        (
            command("m", "..", vec![model.clone()]),
            "refused: version `..` must not be `.` or `..`",
        ),
        (
            command("../m", "1", vec![model.clone()]),
            "refused: model name `../m` must not contain a path separator",
        ),
        (
            command("m", ".staging-1", vec![model.clone()]),
            "refused: version `.staging-1` is reserved",
        ),
    ];
    for (cmd, message) in cases {
        let id = cmd.install_id.clone();
        let result = install(&mut ctx, cmd).await;
        assert!(!result.ok, "{id} must be refused");
        assert!(result.error.starts_with(message), "{id}: {}", result.error);
        assert_eq!(result.error.lines().count(), 1, "{}", result.error);
        assert_eq!(tree(dir.path()), before, "{id} changed the disk");
        assert_eq!(ctx.installer.active("m").unwrap().as_deref(), Some("1"));
    }
    // The artifact the first version links to kept its bytes.
    let held = dir.path().join("artifacts").join(&model.sha256);
    assert_eq!(std::fs::read(held).unwrap(), b"the model's bytes");
    let active = dir.path().join("models/m/active/model.onnx");
    assert_eq!(std::fs::read(active).unwrap(), b"the model's bytes");
}
