//! How reports and comparisons scale with the store: fills a real SQLite store (through the
//! store's own calls) with N results — 50 agents in 5 device classes, 10 model versions, runs of
//! 500 jobs — then times, in one run, a plain read of the same rows, the report in this process
//! (records, charts, HTML, PNG, CSV, Markdown, JSON), `compare` of two model versions, and the
//! report as a user gets it: `edgefleet serve` on the same store and `edgefleet report` over
//! gRPC and TLS (the results streamed as protobuf). Each is printed as a ratio to the plain read,
//! the figure that holds across machines.
//!
//! `cargo build --release --bins && cargo run --release -p edgefleet-controller --example
//! report_scale -- [--results 100000] [--dir DIR [--reuse]] [--cli PATH/edgefleet]
//! [--database postgres://...]` (goals on a 2-core machine: report ≤ 5 s in process and through
//! the CLI, compare ≤ 1 s). With `--database` (an empty PostgreSQL database) the same store is
//! then copied there (`edgefleet store migrate`'s copy) and measured again, in the same run,
//! each figure still a ratio to the SQLite plain read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use edgefleet_controller::compare::{self, Metric};
use edgefleet_controller::records;
use edgefleet_controller::store::{ModelFile, ModelRow, ResultFilter, RunRow, Store};
use edgefleet_proto::v1::{
    BenchJob, HardwareProfile, LatencySummary, Measurement, ModelSpec, Workload,
};
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

const CLASSES: [(&str, &str, u32, u64, f64); 5] = [
    ("x86_64", "Intel Xeon E-2236", 2, 24, 1.0),
    ("aarch64", "Cortex-A76", 4, 8, 2.5),
    ("aarch64", "Cortex-A72", 4, 4, 6.0),
    ("aarch64", "Cortex-A78AE", 6, 8, 1.8),
    ("x86_64", "Intel Atom x6425E", 4, 8, 3.5),
];
const AGENTS_PER_CLASS: usize = 10;
const MODELS: [(&str, f64); 5] = [
    ("minilm-l6", 5.0),
    ("ppocr-det", 40.0),
    ("ppocr-rec", 8.0),
    ("silero-vad", 0.4),
    ("smollm2-135m", 90.0),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut results = 100_000usize;
    let mut dir: Option<PathBuf> = None;
    // Keep a store this program filled before in --dir (to profile the report alone).
    let mut reuse = false;
    // An empty PostgreSQL database to measure the same store in, after SQLite.
    let mut database: Option<String> = None;
    // The edgefleet binary of the same build (target/release/edgefleet beside examples/).
    let mut cli: PathBuf = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("no build folder")?
        .join("edgefleet");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--results" => results = args.next().ok_or("--results N")?.parse()?,
            "--dir" => dir = Some(args.next().ok_or("--dir DIR")?.into()),
            "--reuse" => reuse = true,
            "--cli" => cli = args.next().ok_or("--cli PATH")?.into(),
            "--database" => database = Some(args.next().ok_or("--database URL")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("controller.db");
    let marker = dir.join(format!("filled-{results}"));
    let started = Instant::now();
    let store = if reuse && marker.exists() {
        Store::open(&db)?
    } else {
        let _ = std::fs::remove_file(&db);
        let store = Store::open(&db)?;
        fill(&store, results)?;
        std::fs::write(&marker, b"")?;
        store
    };
    println!(
        "store: {results} results in {:.1} s ({:.0} MB)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&db)?.len() as f64 / 1e6
    );

    // The same rows, read plainly: every result's job columns and measurement bytes.
    let read = {
        let conn = rusqlite::Connection::open(&db)?;
        let started = Instant::now();
        let mut stmt = conn.prepare(
            "SELECT j.run_id, j.job_id, j.agent_id, j.model_name, j.model_version, j.scenario,
                    j.threads, j.state, r.measurement, b.suite
             FROM results r JOIN bench_jobs j ON j.run_id = r.run_id AND j.job_id = r.job_id
             JOIN bench_runs b ON b.id = r.run_id",
        )?;
        let mut bytes = 0usize;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            bytes += row.get_ref(8)?.as_blob()?.len();
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "plain read      {took:>7.3} s  ({:.0} MB of measurements)",
            bytes as f64 / 1e6
        );
        took
    };

    measure(&store, "sqlite", &dir, &cli, None, results, read)?;
    if let Some(url) = database {
        let pg = Store::open_database(&url)?;
        let started = Instant::now();
        let copies = store.copy_into(&pg, |_| {})?;
        let rows: u64 = copies.iter().map(|c| c.copied).sum();
        println!(
            "postgres: {rows} rows copied in {:.1} s (store migrate's copy)",
            started.elapsed().as_secs_f64()
        );
        measure(&pg, "postgres", &dir, &cli, Some(&url), results, read)?;
    }
    Ok(())
}

/// Times the report in this process, `compare` and the report through the CLI on `store`
/// (`database`: its PostgreSQL URL, for `serve`), each also as a ratio to the plain read.
fn measure(
    store: &Store,
    label: &str,
    dir: &std::path::Path,
    cli: &std::path::Path,
    database: Option<&str>,
    results: usize,
    read: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let out = dir.join(format!("report-{label}"));
    let started = Instant::now();
    let (records, failures) = records::collect_where(store, &ResultFilter::default())?;
    let collected = started.elapsed().as_secs_f64();
    let input = edgefleet_reports::ReportInput {
        title: format!("{results} results"),
        generated_at: edgefleet_reports::rfc3339(edgefleet_controller::now_ms()),
        records,
        failures,
        ..edgefleet_reports::ReportInput::default()
    };
    let files = edgefleet_reports::write_report(&out, &input)?;
    let report = started.elapsed().as_secs_f64();
    println!(
        "{label:<8} report          {report:>7.3} s  ({collected:.3} s to read the records; {} charts; report.html {:.1} MB, results.json {:.0} MB)  {:.1}× the plain read  [goal ≤ 5 s]",
        files.charts.len(),
        std::fs::metadata(&files.html)?.len() as f64 / 1e6,
        std::fs::metadata(&files.json)?.len() as f64 / 1e6,
        report / read
    );

    let started = Instant::now();
    let query = compare::query::Query {
        a: "minilm-l6@fp32".into(),
        b: "minilm-l6@int8".into(),
        suite: None,
        select: Vec::new(),
        metric: Metric::P90,
        threshold: None,
    };
    let comparison = compare::query::run(store, &query)?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "{label:<8} compare         {took:>7.3} s  ({} device classes)  {:.1}× the plain read  [goal ≤ 1 s]",
        comparison.rows.len(),
        took / read
    );

    let through_cli = report_through_cli(cli, dir, database)?;
    println!(
        "{label:<8} report via CLI  {through_cli:>7.3} s  (edgefleet serve + edgefleet report over gRPC/TLS)  {:.1}× the plain read, {:.2}× in process  [goal ≤ 5 s]",
        through_cli / read,
        through_cli / report
    );
    Ok(())
}

/// Starts `edgefleet serve` on the store in `dir`, times `edgefleet report` against it as a
/// user runs it, and stops the server.
fn report_through_cli(
    cli: &std::path::Path,
    dir: &std::path::Path,
    database: Option<&str>,
) -> Result<f64, Box<dyn std::error::Error>> {
    use std::io::BufRead;
    if !cli.is_file() {
        return Err(format!(
            "{} is missing: cargo build --release --bins first",
            cli.display()
        )
        .into());
    }
    let mut serve = std::process::Command::new(cli)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(
            database
                .map(|url| ["--database", url])
                .into_iter()
                .flatten(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("edgefleet controller listening on ")
        .ok_or_else(|| format!("unexpected first line from serve: {line:?}"))?
        .to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(cli)
            .args(args)
            .env("EDGEFLEET_CONTROLLER", format!("https://{address}"))
            .env("EDGEFLEET_CREDENTIALS", dir.join("credentials.json"))
            .output()
    };
    // Serving once it answers.
    let ready = Instant::now();
    while !run(&["agents", "--json"])?.status.success() {
        if ready.elapsed().as_secs() > 60 {
            let _ = serve.kill();
            return Err("edgefleet serve did not answer within 60 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = dir.join(if database.is_some() {
        "report-cli-postgres"
    } else {
        "report-cli"
    });
    let started = Instant::now();
    let report = run(&["report", "--out", out.to_str().ok_or("a UTF-8 path")?])?;
    let took = started.elapsed().as_secs_f64();
    let _ = serve.kill();
    let _ = serve.wait();
    if !report.status.success() {
        return Err(format!(
            "edgefleet report failed: {}",
            String::from_utf8_lossy(&report.stderr)
        )
        .into());
    }
    Ok(took)
}

/// Fills the store through its own calls: agents, models, runs of 500 jobs and their results.
fn fill(store: &Store, results: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut agents = Vec::new();
    for (c, (arch, cpu, cores, gib, _)) in CLASSES.iter().enumerate() {
        for i in 0..AGENTS_PER_CLASS {
            let id = format!("agent-{c}-{i}");
            let hw = HardwareProfile {
                arch: arch.to_string(),
                cpu_model: cpu.to_string(),
                cpu_cores: *cores,
                memory_bytes: gib << 30,
                os: "Debian GNU/Linux 12".into(),
                kernel: "6.1.0".into(),
                onnxruntime_version: "1.31.1".into(),
                execution_providers: vec!["CPUExecutionProvider".into()],
                ..HardwareProfile::default()
            };
            let labels = BTreeMap::from([("class".to_string(), c.to_string())]);
            store.upsert_agent(&id, &id, &labels, "0.1.0", &hw, 1)?;
            agents.push((id, c));
        }
    }
    for (name, _) in MODELS {
        for (quant, size) in [("fp32", 4_000_000u64), ("int8", 1_000_000)] {
            store.insert_model(&ModelRow {
                name: name.into(),
                version: quant.into(),
                quantization: quant.into(),
                opset: 17,
                signature_json: "{}".into(),
                files: vec![ModelFile {
                    file_name: "model.onnx".into(),
                    sha256: format!("{:0>64}", format!("{name}{quant}").len()),
                    size_bytes: size,
                }],
                created_ms: 1,
                manifest: Vec::new(),
                manifest_signature: Vec::new(),
            })?;
        }
    }
    // One latency histogram per (device class, model version), reused by every run.
    let mut histograms = BTreeMap::new();
    for (c, class) in CLASSES.iter().enumerate() {
        for (m, (_, base)) in MODELS.iter().enumerate() {
            for (quant, speed) in [("fp32", 1.0), ("int8", 0.4)] {
                let center = base * class.4 * speed;
                histograms.insert((c, m, quant), (center, histogram(center, 2000)?));
            }
        }
    }
    let jobs_per_run = agents.len() * MODELS.len() * 2;
    let runs = results.div_ceil(jobs_per_run);
    let mut stored = 0;
    for run in 0..runs {
        let run_id = format!("run-{run:05}");
        let created_ms = 1_780_000_000_000 + run as i64 * 86_400_000;
        let mut jobs = Vec::new();
        for (agent, _) in &agents {
            for (name, _) in MODELS {
                for quant in ["fp32", "int8"] {
                    let job = BenchJob {
                        job_id: format!("{agent}-{name}-{quant}"),
                        model: Some(ModelSpec {
                            name: name.into(),
                            version: quant.into(),
                            ..ModelSpec::default()
                        }),
                        workload: Some(Workload {
                            scenario: "single-stream".into(),
                            threads: 1,
                            ..Workload::default()
                        }),
                        reference: None,
                    };
                    jobs.push((agent.clone(), job));
                }
            }
        }
        jobs.truncate(results - stored);
        let row = RunRow {
            id: run_id.clone(),
            suite: "nightly".into(),
            suite_sha256: "0".repeat(64),
            created_ms,
            schedule: None,
        };
        store.insert_run(&row, "", &jobs)?;
        for (agent, job) in &jobs {
            let class = agents.iter().find(|(a, _)| a == agent).map_or(0, |a| a.1);
            let model = job.model.as_ref().ok_or("job without model")?;
            let m = MODELS
                .iter()
                .position(|(n, _)| *n == model.name)
                .unwrap_or(0);
            let quant = if model.version == "fp32" {
                "fp32"
            } else {
                "int8"
            };
            let (center, hist) = &histograms[&(class, m, quant)];
            let measurement = measurement(*center, hist.clone(), created_ms, quant);
            store.record_measurement(agent, &run_id, &job.job_id, &measurement)?;
            stored += 1;
        }
        // Judged, as a live controller judges each run when it finishes: `serve` on this store
        // then starts idle instead of judging the whole history at once.
        store.record_judgement(&run_id, &[], created_ms)?;
    }
    Ok(())
}

fn histogram(center_ms: f64, n: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?;
    for i in 0..n {
        let ms = center_ms * (0.9 + 0.3 * ((i * 37) % 101) as f64 / 100.0);
        hist.record((ms * 1e6) as u64)?;
    }
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(&hist, &mut bytes)
        .map_err(|e| format!("{e:?}"))?;
    Ok(bytes)
}

fn measurement(center: f64, histogram: Vec<u8>, started_ms: i64, quant: &str) -> Measurement {
    let percentiles: Vec<f64> = (0..=100)
        .map(|p| center * (0.9 + 0.3 * f64::from(p) / 100.0))
        .collect();
    Measurement {
        samples: 2000,
        duration_s: 2000.0 * center / 1000.0,
        valid: true,
        load_ms: 50.0,
        first_inference_ms: center * 3.0,
        latency_ms: Some(LatencySummary {
            p50: percentiles[50],
            p90: percentiles[90],
            p95: percentiles[95],
            p99: percentiles[99],
            p999: percentiles[100],
            max: percentiles[100],
            mean: percentiles[50],
            stddev: center * 0.08,
            min: percentiles[0],
            percentiles,
            p50_ci_low: center,
            p50_ci_high: center * 1.1,
            p90_ci_low: center * 1.1,
            p90_ci_high: center * 1.2,
        }),
        throughput_per_s: 1000.0 / center,
        peak_rss_bytes: 50_000_000,
        engine: "onnxruntime".into(),
        engine_version: "1.31.1".into(),
        execution_provider: "CPUExecutionProvider".into(),
        threads: 1,
        started_at_unix_ms: started_ms,
        latency_histogram: histogram,
        batch: 1,
        repetition_medians_ms: vec![center; 3],
        repetition_cv: Some(0.01),
        quality: if quant == "int8" {
            [("cosine_mean".to_string(), 0.994)].into()
        } else {
            Default::default()
        },
        ..Measurement::default()
    }
}
