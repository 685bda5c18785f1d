//! What the agent remembers about the jobs it was given in this life of the process, so that a
//! reconnect, which brings again every job the controller has no result for, neither runs a job
//! twice nor loses a result that was in flight when the link broke.

use std::collections::{HashMap, HashSet, VecDeque};

use edgefleet_proto::v1::{InstallResult, JobResult};

type Key = (String, String);

/// A result the ledger can file: it names the command it answers.
pub trait Answer: Clone {
    fn key(&self) -> Key;
}

impl Answer for JobResult {
    fn key(&self) -> Key {
        (self.run_id.clone(), self.job_id.clone())
    }
}

/// Install and rollback commands are filed under ("install", install id).
impl Answer for InstallResult {
    fn key(&self) -> Key {
        ("install".into(), self.install_id.clone())
    }
}

/// How many finished results are kept for re-sending.
pub const KEEP_FINISHED: usize = 1000;

/// Jobs accepted (queued or running) and results kept after they were sent.
#[derive(Debug)]
pub struct JobLedger<R = JobResult> {
    accepted: HashSet<Key>,
    finished: HashMap<Key, R>,
    order: VecDeque<Key>,
}

impl<R> Default for JobLedger<R> {
    fn default() -> Self {
        JobLedger {
            accepted: HashSet::new(),
            finished: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

/// What to do with a job the controller sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission<R = JobResult> {
    /// Not seen before: run it.
    Run,
    /// Queued or running already: nothing to do.
    AlreadyAccepted,
    /// Finished already, but the controller has no result: send this one again.
    Resend(Box<R>),
}

impl<R: Answer> JobLedger<R> {
    pub fn admit(&mut self, run_id: &str, job_id: &str) -> Admission<R> {
        let key = (run_id.to_string(), job_id.to_string());
        if let Some(result) = self.finished.get(&key) {
            return Admission::Resend(Box::new(result.clone()));
        }
        if self.accepted.insert(key) {
            Admission::Run
        } else {
            Admission::AlreadyAccepted
        }
    }

    /// Records a finished job's result, forgetting the oldest beyond [`KEEP_FINISHED`] (their
    /// results reached the controller long ago, or the agent would have heard of them again).
    pub fn finish(&mut self, result: &R) {
        let key = result.key();
        self.accepted.remove(&key);
        if self.finished.insert(key.clone(), result.clone()).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > KEEP_FINISHED {
            if let Some(old) = self.order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(run: &str, job: &str) -> JobResult {
        JobResult {
            run_id: run.into(),
            job_id: job.into(),
            outcome: None,
        }
    }

    #[test]
    fn a_job_runs_once_and_its_result_is_resent_on_request() {
        let mut ledger = JobLedger::<JobResult>::default();
        assert_eq!(ledger.admit("r", "j1"), Admission::Run);
        assert_eq!(ledger.admit("r", "j1"), Admission::AlreadyAccepted);
        assert_eq!(
            ledger.admit("r2", "j1"),
            Admission::Run,
            "job ids are per run"
        );
        ledger.finish(&result("r", "j1"));
        assert_eq!(
            ledger.admit("r", "j1"),
            Admission::Resend(Box::new(result("r", "j1")))
        );
    }

    #[test]
    fn installs_are_filed_by_their_id() {
        let mut ledger = JobLedger::<InstallResult>::default();
        assert_eq!(ledger.admit("install", "i1"), Admission::Run);
        assert_eq!(ledger.admit("install", "i1"), Admission::AlreadyAccepted);
        let done = InstallResult {
            install_id: "i1".into(),
            ok: true,
            ..InstallResult::default()
        };
        ledger.finish(&done);
        assert_eq!(
            ledger.admit("install", "i1"),
            Admission::Resend(Box::new(done))
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut ledger = JobLedger::<JobResult>::default();
        for i in 0..(KEEP_FINISHED + 10) {
            let job = format!("j{i}");
            assert_eq!(ledger.admit("r", &job), Admission::Run);
            ledger.finish(&result("r", &job));
        }
        assert_eq!(ledger.finished.len(), KEEP_FINISHED);
        assert!(ledger.accepted.is_empty());
        assert_eq!(
            ledger.admit("r", "j0"),
            Admission::Run,
            "the oldest was forgotten"
        );
    }
}
