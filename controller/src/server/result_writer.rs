//! Results on PostgreSQL are written in batches: a run's results arrive by the thousand, and
//! one transaction each would spend the database's time on commits (one flush of its log
//! each). Links hand their results to one writer per controller, which takes every result
//! waiting, up to [`MAX_BATCH`], writes them in one transaction on a blocking thread, and
//! answers each link with what its result did. A quiet fleet's result is written alone, at
//! once; a busy one's wait at most for the transaction before. SQLite's in-process writes need
//! none of this and do not use it.

use tokio::sync::{mpsc, oneshot};

use crate::store::{FinishedJob, Recorded, Store, StoreError};

/// Results one transaction holds at most.
const MAX_BATCH: usize = 512;

/// A result waiting to be written, and where to say what became of it.
struct Waiting {
    job: FinishedJob,
    answer: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// The writer's queue.
#[derive(Clone)]
pub(crate) struct ResultWriter {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl ResultWriter {
    /// Starts the writer on `store` (its task ends when every handle is dropped).
    pub(crate) fn start(store: Store) -> ResultWriter {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, waiting));
        ResultWriter { queue }
    }

    /// Writes `job`'s result with the others waiting; what it did.
    pub(crate) async fn record(&self, job: FinishedJob) -> Result<Recorded, StoreError> {
        let (answer, answered) = oneshot::channel();
        let writer_gone = || StoreError::Batch {
            why: "the controller is shutting down".into(),
            transient: true,
        };
        self.queue
            .send(Waiting { job, answer })
            .map_err(|_| writer_gone())?;
        answered.await.map_err(|_| writer_gone())?
    }
}

async fn write_batches(store: Store, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let mut arrived = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut arrived, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut arrived);
        let jobs: Vec<FinishedJob> = batch.iter().map(|w| w.job.clone()).collect();
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || store.record_results(&jobs)).await;
        match written {
            Ok(Ok(each)) => {
                for (w, recorded) in batch.into_iter().zip(each) {
                    let _ = w.answer.send(recorded);
                }
            }
            // Nothing of the batch was written: each link hears why (and closes, so that its
            // agent sends the result again).
            Ok(Err(e)) => {
                let (why, transient) = (e.to_string(), e.is_transient());
                for w in batch {
                    let _ = w.answer.send(Err(StoreError::Batch {
                        why: why.clone(),
                        transient,
                    }));
                }
            }
            Err(_) => {}
        }
    }
}
