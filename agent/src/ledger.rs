//! What the agent remembers about the jobs it was given in this life of the process, so that a
//! reconnect, which brings again every job the controller has no result for, neither runs a job
//! twice nor loses a result that was in flight when the link broke.

use std::collections::{HashMap, HashSet, VecDeque};

use edgefleet_proto::v1::JobResult;

type Key = (String, String);

/// How many finished results are kept for re-sending.
pub const KEEP_FINISHED: usize = 1000;

/// Jobs accepted (queued or running) and results kept after they were sent.
#[derive(Debug, Default)]
pub struct JobLedger {
    accepted: HashSet<Key>,
    finished: HashMap<Key, JobResult>,
    order: VecDeque<Key>,
}

/// What to do with a job the controller sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Not seen before: run it.
    Run,
    /// Queued or running already: nothing to do.
    AlreadyAccepted,
    /// Finished already, but the controller has no result: send this one again.
    Resend(Box<JobResult>),
}

impl JobLedger {
    pub fn admit(&mut self, run_id: &str, job_id: &str) -> Admission {
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
    pub fn finish(&mut self, result: &JobResult) {
        let key = (result.run_id.clone(), result.job_id.clone());
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
        let mut ledger = JobLedger::default();
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
    fn memory_is_bounded() {
        let mut ledger = JobLedger::default();
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
