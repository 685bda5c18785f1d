//! Live progress on a terminal, drawn by indicatif: the upload bar of `models add`, one bar per
//! agent while a run's jobs finish, and the in-place redraw of `rollout status --watch`. Off a
//! terminal the bars draw nothing, and runs and rollouts print plain lines instead.

use std::collections::{BTreeMap, HashSet};

use edgefleet_proto::v1::RunStatus;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The width of every bar, in characters.
const BAR: &str = "[{bar:24}]";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(&template.replace("{BAR}", BAR))
        .expect("the bar templates are valid")
        .progress_chars("#-")
}

/// `uploading [######------] 12.0 MB/23.1 MB` on stderr, while `models add` uploads.
pub(super) fn upload_bar(total_bytes: u64) -> ProgressBar {
    ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr()).with_style(
        style("uploading {BAR} {decimal_bytes}/{decimal_total_bytes}"),
    )
}

/// Whether stderr is a terminal (bars) or not (plain lines).
fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// A run's progress, per agent: a bar each on a terminal (with the job it is on), plain lines
/// for each job that starts and finishes otherwise.
pub(super) struct RunProgress {
    bars: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    reported: HashSet<String>,
    started: HashSet<String>,
}

/// `minilm-l6@int8 single-stream 2 threads`.
fn job_words(job: &edgefleet_proto::v1::JobStatus) -> String {
    let threads = match job.threads {
        0 => String::new(),
        1 => " 1 thread".to_string(),
        n => format!(" {n} threads"),
    };
    format!("{} {}{threads}", job.model, job.scenario)
}

impl RunProgress {
    pub(super) fn new() -> RunProgress {
        RunProgress {
            bars: stderr_is_terminal().then(|| (MultiProgress::new(), BTreeMap::new())),
            reported: HashSet::new(),
            started: HashSet::new(),
        }
    }

    pub(super) fn show(&mut self, status: &RunStatus) {
        let Some((multi, bars)) = &mut self.bars else {
            for job in &status.jobs {
                if job.started_unix_ms != 0 && self.started.insert(job.job_id.clone()) {
                    eprintln!("{}: {} started", job.agent_name, job_words(job));
                }
                if job.state != "pending" && self.reported.insert(job.job_id.clone()) {
                    match job.state.as_str() {
                        "failed" => eprintln!(
                            "{}: {} failed: {}",
                            job.agent_name,
                            job_words(job),
                            job.error
                        ),
                        _ => eprintln!("{}: {} done", job.agent_name, job_words(job)),
                    }
                }
            }
            return;
        };
        let mut agents: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for job in &status.jobs {
            let entry = agents.entry(job.agent_name.as_str()).or_default();
            entry.0 += 1;
            match job.state.as_str() {
                "done" => entry.1 += 1,
                "failed" => entry.2 += 1,
                _ => {}
            }
        }
        for (agent, (total, done, failed)) in agents {
            let bar = bars.entry(agent.to_string()).or_insert_with(|| {
                multi.add(
                    ProgressBar::new(total)
                        .with_style(style("{prefix:16} {BAR} {pos}/{len} jobs{msg}"))
                        .with_prefix(agent.to_string()),
                )
            });
            bar.set_length(total);
            bar.set_position(done + failed);
            let running = status
                .jobs
                .iter()
                .find(|j| j.agent_name == agent && j.state == "pending" && j.started_unix_ms != 0)
                .map(|j| format!(" · {}", job_words(j)))
                .unwrap_or_default();
            let failed = if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            };
            bar.set_message(format!("{failed}{running}"));
        }
    }

    /// Leaves the bars drawn as they ended.
    pub(super) fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            bars.values().for_each(ProgressBar::abandon);
        }
    }
}

/// The in-place redraw of a text that changes (`rollout status --watch`) on a terminal; plain
/// output of each new version of the text otherwise.
pub(super) struct Redraw {
    bar: Option<ProgressBar>,
    last: String,
}

impl Redraw {
    pub(super) fn new() -> Redraw {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        Redraw {
            bar: terminal.then(|| {
                ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout())
                    .with_style(ProgressStyle::with_template("{msg}").expect("a valid template"))
            }),
            last: String::new(),
        }
    }

    /// Shows the text (redrawn in place, or printed when it changed).
    pub(super) fn show(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(text.trim_end().to_string()),
            None if text != self.last => print!("{text}"),
            None => {}
        }
        self.last = text.to_string();
    }

    /// Leaves the last text on screen.
    pub(super) fn finish(self) {
        if let Some(bar) = self.bar {
            bar.abandon();
        }
    }
}
