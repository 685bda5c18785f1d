//! Finished results on disk (`DATA/outbox/`), so that a restart — an upgrade of the package, a
//! crash, a power cut — loses none: a job's or an install's result is written (fsynced, renamed
//! into place) before it is queued for the controller, marked sent once it went out, and read
//! back at start: unsent ones are sent first, sent ones answer the controller if it asks again
//! (its store ignores a result it already has). The newest [`KEEP`] are kept.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use edgefleet_proto::v1::{agent_message, AgentMessage};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::ledger::Answer;

/// How many results stay on disk (the ledger keeps as many in memory).
pub const KEEP: usize = crate::ledger::KEEP_FINISHED;
/// Sent results are pruned every this many writes.
const PRUNE_EVERY: u32 = 64;

/// The outbox folder; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    dir: PathBuf,
    writes: Arc<AtomicU32>,
}

/// A result read back at start, and whether it had gone out before.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    pub body: agent_message::Body,
    pub sent: bool,
}

impl Outbox {
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
            writes: Arc::new(AtomicU32::new(0)),
        })
    }

    /// Writes a finished result before it is queued. A disk that will not take it (full,
    /// read-only) costs only this durability: the result still goes out from memory.
    pub fn keep(&self, body: &agent_message::Body) {
        let Some(name) = file_stem(body) else { return };
        let bytes = AgentMessage {
            body: Some(body.clone()),
        }
        .encode_to_vec();
        let path = self.dir.join(format!("{name}.unsent"));
        if let Err(e) = crate::private_file::write_replacing(&path, &bytes) {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep a result on disk; it is sent from memory only");
        }
        if self.writes.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune();
        }
    }

    /// The result went out on the link.
    pub fn mark_sent(&self, body: &agent_message::Body) {
        let Some(name) = file_stem(body) else { return };
        let _ = std::fs::rename(
            self.dir.join(format!("{name}.unsent")),
            self.dir.join(format!("{name}.sent")),
        );
    }

    /// Every result on disk, oldest first. A file that does not decode (writes are renamed into
    /// place only once complete, so it was damaged on disk) is removed with a warning.
    pub fn load(&self) -> Vec<Kept> {
        let mut found = self.files();
        found.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let mut kept = Vec::new();
        for (path, _) in found {
            let sent = path.extension().is_some_and(|e| e == "sent");
            let decoded = std::fs::read(&path)
                .ok()
                .and_then(|bytes| AgentMessage::decode(bytes.as_slice()).ok())
                .and_then(|m| m.body);
            match decoded {
                Some(body) => kept.push(Kept { body, sent }),
                None => {
                    tracing::warn!(path = %path.display(), "a kept result does not decode; removed");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        kept
    }

    /// Removes the oldest sent results beyond [`KEEP`]; unsent ones always stay.
    pub fn prune(&self) {
        let mut sent: Vec<_> = self
            .files()
            .into_iter()
            .filter(|(path, _)| path.extension().is_some_and(|e| e == "sent"))
            .collect();
        if sent.len() <= KEEP {
            return;
        }
        sent.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        for (path, _) in &sent[..sent.len() - KEEP] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Result files with their modification times; temporary files are left for `keep` to
    /// replace.
    fn files(&self) -> Vec<(PathBuf, std::time::SystemTime)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sent" || e == "unsent"))
            .filter_map(|p| {
                let modified = p.metadata().and_then(|m| m.modified()).ok()?;
                Some((p, modified))
            })
            .collect()
    }
}

/// A result's file name: the hash of what it answers (a job of a run, or an install).
fn file_stem(body: &agent_message::Body) -> Option<String> {
    let (kind, id) = match body {
        agent_message::Body::JobResult(r) => r.key(),
        agent_message::Body::InstallResult(r) => r.key(),
        _ => return None,
    };
    let digest = Sha256::digest(format!("{kind}\0{id}").as_bytes());
    Some(hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgefleet_proto::v1::{InstallResult, JobResult};

    fn job(run: &str, id: &str) -> agent_message::Body {
        agent_message::Body::JobResult(JobResult {
            run_id: run.into(),
            job_id: id.into(),
            outcome: Some(edgefleet_proto::v1::job_result::Outcome::Error(
                "a reason".into(),
            )),
        })
    }

    #[test]
    fn results_survive_a_restart_and_remember_whether_they_went_out() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox")).unwrap();
        outbox.keep(&job("r", "j1"));
        outbox.keep(&job("r", "j2"));
        let install = agent_message::Body::InstallResult(InstallResult {
            install_id: "i1".into(),
            ok: true,
            ..InstallResult::default()
        });
        outbox.keep(&install);
        outbox.mark_sent(&job("r", "j1"));

        let again = Outbox::open(&dir.path().join("outbox")).unwrap().load();
        assert_eq!(again.len(), 3);
        let sent =
            |body: &agent_message::Body| again.iter().find(|k| &k.body == body).unwrap().sent;
        assert!(sent(&job("r", "j1")));
        assert!(!sent(&job("r", "j2")));
        assert!(!sent(&install));
    }

    #[test]
    fn a_damaged_file_is_dropped_and_the_rest_load() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox.keep(&job("r", "j1"));
        std::fs::write(dir.path().join("0123.unsent"), b"\xff\xff not protobuf").unwrap();
        let loaded = outbox.load();
        assert_eq!(loaded.len(), 1);
        assert!(!dir.path().join("0123.unsent").exists());
    }

    #[test]
    fn only_sent_results_are_pruned_beyond_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        for i in 0..(KEEP + 5) {
            let body = job("r", &format!("j{i}"));
            outbox.keep(&body);
            outbox.mark_sent(&body);
        }
        outbox.keep(&job("r", "unsent"));
        outbox.prune();
        let loaded = outbox.load();
        assert_eq!(loaded.len(), KEEP + 1);
        assert!(loaded
            .iter()
            .any(|k| k.body == job("r", "unsent") && !k.sent));
    }
}
