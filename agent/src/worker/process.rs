//! The worker as a process: how the daemon starts it (next to its own binary), the entry points
//! of `edgefleet-agent-worker` (a job, or `--probe`), reading the job from stdin, and dying with
//! the daemon that started it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::engine::Runtime;

use super::error::WorkerError;
use super::protocol::{ProtocolError, RuntimeProbe, WorkerJob, WorkerOutcome};
use super::{quality_run, run, smoke};

/// The worker's program name, installed next to `edgefleet-agent`.
pub const WORKER_BINARY: &str = "edgefleet-agent-worker";

/// A command that starts the worker binary that sits next to this program. (After a package
/// upgrade replaced the files, `current_exe` reads "… (deleted)"; its folder still holds the new
/// worker.)
pub fn worker_command() -> tokio::process::Command {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cmd = tokio::process::Command::new(dir.join(WORKER_BINARY));
    cmd.kill_on_drop(true);
    cmd
}

/// The worker binary would not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the benchmark worker {}: {source} (it is installed next to edgefleet-agent)", program.display())]
pub struct StartError {
    /// Where the worker was expected.
    pub program: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Why the worker binary would not start, naming where it was expected.
pub fn start_error(e: std::io::Error) -> StartError {
    let program = worker_command().as_std().get_program().to_owned();
    StartError {
        program: PathBuf::from(program),
        source: e,
    }
}

/// A worker must not outlive the daemon that watches it (a SIGKILLed daemon cannot clean up).
fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    // The parent may have died before the line above ran.
    if nix::unistd::getppid().as_raw() == 1 {
        std::process::exit(1);
    }
}

/// Entry point of `edgefleet-agent-worker`: reads a [`WorkerJob`] from stdin and prints a
/// [`WorkerOutcome`]. Exits 0 when it measured, 1 when the job failed.
pub fn main_job() -> ExitCode {
    die_with_parent();
    let outcome = read_job()
        .map_err(WorkerError::from)
        .and_then(|job| match &job.quality {
            Some(q) => quality_run::run_quality(&job, q).map(WorkerOutcome::Compared),
            None if job.scenario == "load" => smoke::load_check(&job),
            None => run::run_job(&job).map(|r| WorkerOutcome::Measured(Box::new(r))),
        });
    let (outcome, code) = match outcome {
        Ok(outcome) => (outcome, ExitCode::SUCCESS),
        Err(e) => (WorkerOutcome::Failed(e.to_string()), ExitCode::FAILURE),
    };
    println!(
        "{}",
        serde_json::to_string(&outcome).expect("outcome serializes")
    );
    code
}

/// Entry point of `edgefleet-agent-worker --probe`.
pub fn main_probe(library: &Path) -> ExitCode {
    die_with_parent();
    match Runtime::load(library) {
        Ok(runtime) => {
            let probe = RuntimeProbe {
                version: runtime.version.clone(),
                execution_providers: runtime.execution_providers.clone(),
            };
            println!(
                "{}",
                serde_json::to_string(&probe).expect("probe serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn read_job() -> Result<WorkerJob, ProtocolError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(ProtocolError::Read)?;
    serde_json::from_str(&text).map_err(ProtocolError::Unreadable)
}
