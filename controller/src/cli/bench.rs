//! `edgefleet bench run`: the suite checked here first (errors name the user's file and line),
//! sent with its input files, then followed until every job has finished.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use edgefleet_proto::v1::{InputFile, RunStatus};

use super::client::Client;
use super::output::{print_json, print_results};
use super::progress::RunProgress;
use super::target::Target;

/// A suite's input files travel in one message, which the controller takes up to 16 MiB.
const MAX_INPUT_BYTES: u64 = 12 << 20;

/// `bench run SUITE [--select K=V]... [--wait [--json]]`.
pub(super) async fn run(
    target: &Target,
    suite: PathBuf,
    select: Vec<String>,
    wait: bool,
    json: bool,
    timeout: Duration,
) -> anyhow::Result<()> {
    let parsed = edgefleet_suites::Suite::load(&suite)?;
    let text = std::fs::read_to_string(&suite)?;
    let inputs = read_inputs(&parsed, &suite)?;
    let mut client = Client::connect(target).await?;
    let run = client
        .start_bench(&text, &suite.display().to_string(), &select, inputs)
        .await?;
    eprintln!(
        "started {} ({}: {} jobs on {} agents)",
        run.run_id, parsed.name, run.jobs, run.agents
    );
    if !wait {
        println!("{}", run.run_id);
        return Ok(());
    }
    let status = wait_for_run(&mut client, &run.run_id, timeout, json).await?;
    let (records, failures) = client.results(Some(&run.run_id)).await?;
    if json {
        print_json(&records)?;
    } else {
        print_results(&records, &failures);
    }
    // On stderr, so that --json output stays one document.
    report_regressions(&mut client, &run.run_id).await?;
    anyhow::ensure!(
        status.jobs_failed == 0,
        "{} of {} jobs failed",
        status.jobs_failed,
        status.jobs_total
    );
    Ok(())
}

/// Says which regressions the finished run set off (against the suite's baseline or its recent
/// history), once the controller has judged it; judging follows the last result within a
/// moment, and a run not judged after [`JUDGE_WAIT`] is said to be so.
async fn report_regressions(client: &mut Client, run_id: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + JUDGE_WAIT;
    while !client.run_status(run_id).await?.judged {
        if tokio::time::Instant::now() >= deadline {
            eprintln!("not judged for regressions yet; see `edgefleet regressions` later");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // All of them, filtered by run here: no clock of this host is compared with the
    // controller's.
    let found: Vec<_> = client
        .regressions(0)
        .await?
        .into_iter()
        .filter(|r| r.run_id == run_id)
        .collect();
    if found.is_empty() {
        eprintln!("no regression against the baseline or recent history");
    }
    for r in &found {
        eprintln!(
            "REGRESSION {} {} {} {:.2}x against {} {} (`edgefleet regressions --ack {}` once seen)",
            r.model, r.scenario, r.metric, r.ratio, r.kind, r.against, r.id
        );
    }
    Ok(())
}

/// How long `bench run --wait` waits for the finished run's regression check.
const JUDGE_WAIT: Duration = Duration::from_secs(60);

/// Polls until every job of the run is done or failed, showing progress unless `quiet`.
pub(super) async fn wait_for_run(
    client: &mut Client,
    run_id: &str,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<RunStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = RunProgress::new();
    loop {
        let status = client.run_status(run_id).await?;
        if !quiet {
            progress.show(&status);
        }
        let finished = status.jobs_done + status.jobs_failed;
        if finished >= status.jobs_total {
            progress.finish();
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            progress.finish();
            bail!("run {run_id} did not finish within {} s ({finished}/{} jobs finished); it goes on, see `edgefleet report`", timeout.as_secs(), status.jobs_total);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reads the input files a loaded suite names (relative to its folder) for
/// [`Client::start_bench`] (and the gate suite of `rollout start`).
pub(super) fn read_inputs(
    suite: &edgefleet_suites::Suite,
    suite_path: &Path,
) -> anyhow::Result<Vec<InputFile>> {
    let dir = suite_path.parent().unwrap_or(Path::new(""));
    let mut total = 0u64;
    let mut out = Vec::new();
    for path in suite.input_files() {
        let full = dir.join(path);
        let data = std::fs::read(&full).with_context(|| {
            format!(
                "cannot read input file {} of {}",
                full.display(),
                suite_path.display()
            )
        })?;
        total += data.len() as u64;
        if total > MAX_INPUT_BYTES {
            bail!(
                "the input files of {} add up to more than {} MiB; a suite's inputs travel in one request",
                suite_path.display(),
                MAX_INPUT_BYTES >> 20
            );
        }
        out.push(InputFile {
            path: path.display().to_string(),
            data,
        });
    }
    Ok(out)
}
