//! The client side of the `edgefleet` CLI: each command talks to a controller's admin service and
//! prints tables for people or JSON for scripts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use edgefleet_proto::v1::admin_client::AdminClient;
use edgefleet_proto::v1::{
    add_model_request, AddModelHeader, AddModelRequest, ControlRolloutRequest, GetResultsRequest,
    GetRunRequest, InputFile, ListAgentsRequest, ListModelsRequest, ListRolloutsRequest,
    ModelDetail, ModelInfo, ModelRequest, NewFile, RemoveModelReply, RemoveModelRequest,
    RolloutStatus, RunStatus, StartBenchRequest, StartRolloutRequest,
};
use edgefleet_reports::{FailedRun, ReportFiles, ReportInput, ResultRecord};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use crate::records::rfc3339;

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 1 << 20;
/// A suite's input files travel in one message, which the controller takes up to 16 MiB.
const MAX_INPUT_BYTES: u64 = 12 << 20;

/// A connection to a controller's admin service.
pub struct Client {
    pub address: String,
    inner: AdminClient<Channel>,
}

impl Client {
    /// Connects, or fails with the address that was tried.
    pub async fn connect(address: &str) -> anyhow::Result<Client> {
        let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
            .with_context(|| {
                format!("`{address}` is not a controller address (expected http://HOST:PORT)")
            })?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            anyhow::anyhow!("cannot reach the controller at {address}: {cause} (is `edgefleet serve` running there? set --controller or EDGEFLEET_CONTROLLER)")
        })?;
        Ok(Client {
            address: address.to_string(),
            inner: AdminClient::new(channel)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(16 << 20),
        })
    }

    fn fail(&self, status: tonic::Status) -> anyhow::Error {
        anyhow::anyhow!("{}", status.message())
    }

    pub async fn agents(&mut self) -> anyhow::Result<Vec<edgefleet_proto::v1::AgentInfo>> {
        let reply = self
            .inner
            .list_agents(ListAgentsRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().agents)
    }

    pub async fn models(&mut self) -> anyhow::Result<Vec<ModelInfo>> {
        let reply = self
            .inner
            .list_models(ListModelsRequest {})
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().models)
    }

    /// Uploads a model file and its companions and registers them as `name@version`.
    pub async fn add_model(
        &mut self,
        model: &Path,
        companions: &[PathBuf],
        name: &str,
        version: &str,
        quantization: &str,
    ) -> anyhow::Result<ModelInfo> {
        let mut files = Vec::new();
        let mut declared = Vec::new();
        for path in std::iter::once(model).chain(companions.iter().map(PathBuf::as_path)) {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if !meta.is_file() {
                bail!("{} is not a file", path.display());
            }
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no usable file name", path.display()))?
                .to_string();
            declared.push(NewFile {
                file_name,
                size_bytes: meta.len(),
            });
            files.push(path.to_path_buf());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let header = AddModelRequest {
            part: Some(add_model_request::Part::Header(AddModelHeader {
                name: name.to_string(),
                version: version.to_string(),
                quantization: quantization.to_string(),
                files: declared,
            })),
        };
        tx.send(header).await.expect("receiver alive");
        let total: u64 = std::fs::metadata(model).map_or(0, |m| m.len())
            + companions
                .iter()
                .map(|c| std::fs::metadata(c).map_or(0, |m| m.len()))
                .sum::<u64>();
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let reader = tokio::spawn(async move {
            let mut sent = 0u64;
            for path in files {
                let mut file = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                loop {
                    let mut buf = vec![0u8; UPLOAD_CHUNK];
                    let n = file
                        .read(&mut buf)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    sent += n as u64;
                    if terminal {
                        eprint!("\r\x1b[2K{}", transfer_bar("uploading", sent, total));
                    }
                    let part = AddModelRequest {
                        part: Some(add_model_request::Part::Data(buf)),
                    };
                    if tx.send(part).await.is_err() {
                        return Ok(()); // the controller refused the upload; its reply says why
                    }
                }
            }
            anyhow::Ok(())
        });
        let reply = self
            .inner
            .add_model(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        reader.await.expect("reader task panicked")?;
        if terminal {
            eprint!("\r\x1b[2K");
        }
        Ok(reply.map_err(|s| self.fail(s))?.into_inner())
    }

    pub async fn show_model(&mut self, name: &str, version: &str) -> anyhow::Result<ModelDetail> {
        let reply = self
            .inner
            .show_model(ModelRequest {
                name: name.into(),
                version: version.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub async fn remove_model(
        &mut self,
        name: &str,
        version: &str,
        force: bool,
    ) -> anyhow::Result<RemoveModelReply> {
        let reply = self
            .inner
            .remove_model(RemoveModelRequest {
                name: name.into(),
                version: version.into(),
                force,
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub async fn start_rollout(
        &mut self,
        request: StartRolloutRequest,
    ) -> anyhow::Result<RolloutStatus> {
        let reply = self
            .inner
            .start_rollout(request)
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    /// One rollout, or every rollout (newest first) when `id` is empty.
    pub async fn rollouts(&mut self, id: &str) -> anyhow::Result<Vec<RolloutStatus>> {
        let reply = self
            .inner
            .list_rollouts(ListRolloutsRequest {
                rollout_id: id.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner().rollouts)
    }

    pub async fn control_rollout(
        &mut self,
        id: &str,
        action: &str,
    ) -> anyhow::Result<RolloutStatus> {
        let reply = self
            .inner
            .control_rollout(ControlRolloutRequest {
                rollout_id: id.into(),
                action: action.into(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    pub async fn start_bench(
        &mut self,
        suite_toml: &str,
        origin: &str,
        select: &[String],
        inputs: Vec<InputFile>,
    ) -> anyhow::Result<edgefleet_proto::v1::StartBenchReply> {
        let reply = self
            .inner
            .start_bench(StartBenchRequest {
                suite_toml: suite_toml.to_string(),
                suite_origin: origin.to_string(),
                select: select.to_vec(),
                inputs,
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }
}

/// Reads the input files a loaded suite names (relative to its folder) for
/// [`Client::start_bench`].
pub fn read_inputs(
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

impl Client {
    pub async fn run_status(&mut self, run_id: &str) -> anyhow::Result<RunStatus> {
        let reply = self
            .inner
            .get_run(GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map_err(|s| self.fail(s))?;
        Ok(reply.into_inner())
    }

    /// Polls until every job of the run is done or failed, printing progress when it changes.
    pub async fn wait_for_run(
        &mut self,
        run_id: &str,
        timeout: Duration,
        quiet: bool,
    ) -> anyhow::Result<RunStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = Progress::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        loop {
            let status = self.run_status(run_id).await?;
            if !quiet {
                progress.show(&status);
            }
            let finished = status.jobs_done + status.jobs_failed;
            if finished >= status.jobs_total {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("run {run_id} did not finish within {} s ({finished}/{} jobs finished); it goes on, see `edgefleet report`", timeout.as_secs(), status.jobs_total);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Result records and failures of one run, or of all runs.
    pub async fn results(
        &mut self,
        run_id: Option<&str>,
    ) -> anyhow::Result<(Vec<ResultRecord>, Vec<FailedRun>)> {
        let reply = self
            .inner
            .get_results(GetResultsRequest {
                run_id: run_id.unwrap_or_default().to_string(),
            })
            .await
            .map_err(|s| self.fail(s))?
            .into_inner();
        Ok((
            serde_json::from_str(&reply.records_json)
                .context("unreadable result records from the controller")?,
            serde_json::from_str(&reply.failures_json)
                .context("unreadable failures from the controller")?,
        ))
    }

    /// Writes `DIR/report.html` and `DIR/results.json` for one run or all runs.
    pub async fn write_report(
        &mut self,
        out: &Path,
        run_id: Option<&str>,
    ) -> anyhow::Result<(ReportFiles, Vec<ResultRecord>, Vec<FailedRun>)> {
        let (records, failures) = self.results(run_id).await?;
        let agents = self.agents().await?;
        let rows: Vec<crate::store::AgentRow> = agents
            .into_iter()
            .filter(|a| {
                records.iter().any(|r| r.agent_id == a.agent_id)
                    || failures.iter().any(|f| f.agent == a.name)
            })
            .map(|a| crate::store::AgentRow {
                id: a.agent_id,
                name: a.name,
                labels: a.labels.into_iter().collect(),
                agent_version: a.agent_version,
                hardware: a.hardware.unwrap_or_default(),
                first_seen_ms: a.first_seen_unix_ms,
                last_seen_ms: a.last_seen_unix_ms,
            })
            .collect();
        let input = ReportInput {
            title: match run_id {
                Some(id) => format!("edgefleet benchmark report: {id}"),
                None => "edgefleet benchmark report".to_string(),
            },
            generated_at: rfc3339(crate::now_ms()),
            agents: crate::records::agent_summaries(&rows),
            records: records.clone(),
            failures: failures.clone(),
            // A report of everything also tells the story of every rollout.
            rollouts: match run_id {
                Some(_) => Vec::new(),
                None => self
                    .rollouts("")
                    .await?
                    .iter()
                    .map(crate::rollout_view::summary)
                    .collect(),
            },
        };
        let files = edgefleet_reports::write_report(out, &input)?;
        Ok((files, records, failures))
    }
}

/// Live progress of a run, per agent: a bar for each on a terminal (redrawn in place), plain
/// lines for each job that finishes otherwise.
struct Progress {
    terminal: bool,
    drawn_lines: usize,
    reported: std::collections::HashSet<String>,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            drawn_lines: 0,
            reported: Default::default(),
        }
    }

    fn show(&mut self, status: &RunStatus) {
        if self.terminal {
            let mut agents: std::collections::BTreeMap<&str, (usize, usize, usize)> =
                Default::default();
            for job in &status.jobs {
                let entry = agents.entry(job.agent_name.as_str()).or_default();
                entry.0 += 1;
                match job.state.as_str() {
                    "done" => entry.1 += 1,
                    "failed" => entry.2 += 1,
                    _ => {}
                }
            }
            if self.drawn_lines > 0 {
                eprint!("\x1b[{}A", self.drawn_lines);
            }
            for (agent, (total, done, failed)) in &agents {
                eprintln!("\x1b[2K{}", bar_line(agent, *total, *done, *failed));
            }
            self.drawn_lines = agents.len();
        } else {
            for job in &status.jobs {
                if job.state != "pending" && self.reported.insert(job.job_id.clone()) {
                    match job.state.as_str() {
                        "failed" => {
                            eprintln!("{}: {} failed: {}", job.agent_name, job.model, job.error)
                        }
                        _ => eprintln!("{}: {} done", job.agent_name, job.model),
                    }
                }
            }
        }
    }
}

/// `edge-a  [########--------]  2/4 jobs (1 failed)`
fn bar_line(agent: &str, total: usize, done: usize, failed: usize) -> String {
    const WIDTH: usize = 24;
    let finished = done + failed;
    let filled = (finished * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let failures = if failed > 0 {
        format!(" ({failed} failed)")
    } else {
        String::new()
    };
    format!(
        "{agent:<16} [{}{}] {finished}/{total} jobs{failures}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

/// `uploading [######------] 12.0/23.1 MB`
pub fn transfer_bar(label: &str, done: u64, total: u64) -> String {
    const WIDTH: usize = 24;
    let filled = ((done.min(total) as u128 * WIDTH as u128)
        .checked_div(total as u128)
        .unwrap_or(WIDTH as u128)) as usize;
    format!(
        "{label} [{}{}] {:.1}/{:.1} MB",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        done as f64 / 1e6,
        total as f64 / 1e6
    )
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", edgefleet_reports::text::table(header, rows));
}

/// The results summary shown after a run and by the demo.
pub fn print_results(records: &[ResultRecord], failures: &[FailedRun]) {
    print!("{}", edgefleet_reports::text::summary(records, failures));
}

/// "12 s ago", "3 min ago", …
pub fn ago(then_ms: i64, now_ms: i64) -> String {
    let secs = ((now_ms - then_ms).max(0) / 1000) as u64;
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn progress_bars_fill_with_finished_jobs() {
        assert_eq!(
            super::bar_line("edge-a", 4, 1, 1),
            "edge-a           [############------------] 2/4 jobs (1 failed)"
        );
        assert!(super::bar_line("b", 0, 0, 0).contains("0/0 jobs"));
    }

    #[test]
    fn transfer_bars_fill_with_bytes() {
        assert_eq!(
            super::transfer_bar("up", 5_000_000, 10_000_000),
            "up [############------------] 5.0/10.0 MB"
        );
        assert!(super::transfer_bar("up", 0, 0).contains("[########################]"));
    }

    #[test]
    fn ago_reads_naturally() {
        assert_eq!(super::ago(0, 5_000), "5 s ago");
        assert_eq!(super::ago(0, 125_000), "2 min ago");
        assert_eq!(super::ago(0, 7_200_000), "2 h ago");
        assert_eq!(super::ago(10, 0), "0 s ago");
    }
}
