//! The model registry: versions, their files in order, and the content-addressed artifacts they
//! (and suites' input files) point to.

use super::db::{params, OptionalExtension};
use edgefleet_proto::v1::ArtifactRef;

use super::{decode_json, Store, StoreError};

/// One file of a model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    pub file_name: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// A registered model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    pub name: String,
    pub version: String,
    pub quantization: String,
    pub opset: i64,
    /// JSON: `{"inputs": [...], "outputs": [...]}`, each `{name, element_type, shape}`
    /// ([`ModelSignature`]); checked to decode whenever a row is read.
    pub signature_json: String,
    pub files: Vec<ModelFile>,
    pub created_ms: i64,
    /// The encoded manifest and its signature (empty until signed).
    pub manifest: Vec<u8>,
    pub manifest_signature: Vec<u8>,
}

/// A model's declared inputs and outputs, as stored in `models.signature`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSignature {
    #[serde(default)]
    pub inputs: Vec<TensorShape>,
    #[serde(default)]
    pub outputs: Vec<TensorShape>,
}

/// One input or output: name, element type, dimensions (numbers or symbolic names).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorShape {
    pub name: String,
    pub element_type: String,
    pub shape: Vec<String>,
}

impl ModelRow {
    /// The version's files as the wire names them (manifests, jobs, listings).
    pub fn artifact_refs(&self) -> Vec<ArtifactRef> {
        self.files
            .iter()
            .map(|f| ArtifactRef {
                file_name: f.file_name.clone(),
                sha256: f.sha256.clone(),
                size_bytes: f.size_bytes,
            })
            .collect()
    }

    /// The declared inputs and outputs (the store has checked that they decode).
    pub fn signature(&self) -> ModelSignature {
        serde_json::from_str(&self.signature_json).unwrap_or_default()
    }
}

impl Store {
    /// Registers a model version whose files are already in the artifact folder.
    pub fn insert_model(&self, model: &ModelRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM models WHERE name = ?1 AND version = ?2",
                params![model.name, model.version],
                |_| Ok(true),
            )
            .optional()?
            .unwrap_or(false);
        if exists {
            return Err(StoreError::ModelExists(format!(
                "{}@{}",
                model.name, model.version
            )));
        }
        // Registered meanwhile by another call (a second controller, on PostgreSQL): the key
        // decides, and the answer is the same as when it was seen above.
        let inserted = tx.execute(
            "INSERT INTO models (name, version, quantization, opset, signature, created_ms,
                 manifest, manifest_signature)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT DO NOTHING",
            params![
                model.name,
                model.version,
                model.quantization,
                model.opset,
                model.signature_json,
                model.created_ms,
                model.manifest,
                model.manifest_signature
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::ModelExists(format!(
                "{}@{}",
                model.name, model.version
            )));
        }
        for (position, file) in model.files.iter().enumerate() {
            tx.execute(
                "INSERT INTO artifacts (sha256, size_bytes, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![file.sha256, file.size_bytes as i64, model.created_ms],
            )?;
            tx.execute(
                "INSERT INTO model_files (name, version, position, file_name, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    model.name,
                    model.version,
                    position as i64,
                    file.file_name,
                    file.sha256
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn models(&self) -> Result<Vec<ModelRow>, StoreError> {
        self.select_models(None)
    }

    /// One model version (read alone: the rollout driver asks several times a second).
    pub fn model(&self, name: &str, version: &str) -> Result<Option<ModelRow>, StoreError> {
        Ok(self.select_models(Some((name, version)))?.pop())
    }

    /// Every model version, or the one named, with its files in order.
    fn select_models(&self, only: Option<(&str, &str)>) -> Result<Vec<ModelRow>, StoreError> {
        let mut conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT name, version, quantization, opset, signature, created_ms, manifest,
                    manifest_signature
             FROM models WHERE ?1 IS NULL OR (name = ?1 AND version = ?2)
             ORDER BY name, created_ms",
        )?;
        let mut models = stmt
            .query_map(params![only.map(|o| o.0), only.map(|o| o.1)], |r| {
                Ok(ModelRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    quantization: r.get(2)?,
                    opset: r.get(3)?,
                    signature_json: r.get(4)?,
                    files: Vec::new(),
                    created_ms: r.get(5)?,
                    manifest: r.get::<Option<Vec<u8>>>(6)?.unwrap_or_default(),
                    manifest_signature: r.get::<Option<Vec<u8>>>(7)?.unwrap_or_default(),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut files = conn.prepare(
            "SELECT f.file_name, f.sha256, a.size_bytes FROM model_files f
             JOIN artifacts a ON a.sha256 = f.sha256
             WHERE f.name = ?1 AND f.version = ?2 ORDER BY f.position",
        )?;
        for model in &mut models {
            let key = format!("{}@{}", model.name, model.version);
            decode_json::<ModelSignature>(&model.signature_json, "models", &key)?;
            model.files = files
                .query_map(params![model.name, model.version], |r| {
                    Ok(ModelFile {
                        file_name: r.get(0)?,
                        sha256: r.get(1)?,
                        size_bytes: r.get::<i64>(2)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(models)
    }

    /// Records an artifact that is not a model file (a suite's input file), once.
    pub fn insert_artifact(
        &self,
        sha256: &str,
        size_bytes: u64,
        created_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "INSERT INTO artifacts (sha256, size_bytes, created_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            params![sha256, size_bytes as i64, created_ms],
        )?;
        Ok(())
    }

    /// Every stored artifact: its sha256 and size.
    pub fn artifacts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self.conn()?.query_map(
            "SELECT sha256, size_bytes FROM artifacts ORDER BY sha256",
            params![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Whether any model file has this digest (artifacts are served only if registered).
    pub fn artifact_size(&self, sha256: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT size_bytes FROM artifacts WHERE sha256 = ?1",
                params![sha256],
                |r| r.get::<i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }

    /// Stores a model's signed manifest.
    pub fn set_manifest(
        &self,
        name: &str,
        version: &str,
        manifest: &[u8],
        signature: &[u8],
    ) -> Result<(), StoreError> {
        self.conn()?.execute(
            "UPDATE models SET manifest = ?3, manifest_signature = ?4 WHERE name = ?1 AND version = ?2",
            params![name, version, manifest, signature],
        )?;
        Ok(())
    }

    /// Deletes a model version; returns the digests of artifacts no other version uses (their
    /// rows are gone too, so the caller deletes the bytes).
    pub fn delete_model(&self, name: &str, version: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        let shas: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT sha256 FROM model_files WHERE name = ?1 AND version = ?2")?;
            let rows = stmt.query_map(params![name, version], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute(
            "DELETE FROM model_files WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        tx.execute(
            "DELETE FROM models WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        let mut orphaned = Vec::new();
        for sha in shas {
            let used: bool = tx
                .query_row(
                    "SELECT 1 FROM model_files WHERE sha256 = ?1 LIMIT 1",
                    params![sha],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !used && !orphaned.contains(&sha) {
                tx.execute("DELETE FROM artifacts WHERE sha256 = ?1", params![sha])?;
                orphaned.push(sha);
            }
        }
        tx.commit()?;
        Ok(orphaned)
    }
}
