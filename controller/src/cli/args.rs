//! The command line's shape: every command, flag and help text (clap derive). Parsing only; each
//! command family is carried out by its own module.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use edgefleet_controller::selector;

/// edgefleet: roll out ONNX models to a fleet of edge devices, benchmark them there, and compare
/// them in reports.
#[derive(Parser)]
#[command(name = "edgefleet", version, about)]
pub(crate) struct Cli {
    /// The controller to talk to, https://HOST:PORT (default: the one in the credentials file).
    #[arg(long, global = true, env = "EDGEFLEET_CONTROLLER")]
    pub(crate) controller: Option<String>,
    /// Credentials file: the controller's address, its CA and an admin token (default:
    /// /var/lib/edgefleet/credentials.json, which `serve` writes, when it is readable).
    #[arg(
        long,
        global = true,
        env = "EDGEFLEET_CREDENTIALS",
        value_name = "FILE"
    )]
    pub(crate) credentials: Option<PathBuf>,
    /// Talk plaintext (http://) to a controller started with --insecure.
    #[arg(long, global = true)]
    pub(crate) insecure: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// An S3-compatible object store for the artifacts (`serve`, `store migrate`).
#[derive(clap::Args)]
pub(crate) struct ObjectStoreArgs {
    /// The object store for artifacts: s3://BUCKET/PREFIX. Credentials come from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), never from a flag
    /// (deploy/postgres.md).
    #[arg(long, env = "EDGEFLEET_ARTIFACTS", value_name = "S3_URL")]
    pub(crate) artifacts: Option<String>,
    /// The object store's endpoint, for one that is not AWS (http:// is allowed):
    /// else AWS_ENDPOINT_URL, else AWS.
    #[arg(
        long,
        env = "EDGEFLEET_S3_ENDPOINT",
        value_name = "URL",
        requires = "artifacts"
    )]
    pub(crate) s3_endpoint: Option<String>,
    /// The object store's region: else AWS_REGION, else us-east-1.
    #[arg(long, value_name = "REGION", requires = "artifacts")]
    pub(crate) s3_region: Option<String>,
}

impl ObjectStoreArgs {
    /// The store's settings (`None` without --artifacts), agents getting its bytes as `delivery`
    /// says, with presigned URLs that work for `url_lifetime`, and room for `cache_bytes` of
    /// copies of what agents fetch through the controller.
    pub(crate) fn config(
        self,
        delivery: edgefleet_controller::registry::artifacts::Delivery,
        url_lifetime: std::time::Duration,
        cache_bytes: u64,
    ) -> Option<edgefleet_controller::registry::artifacts::ArtifactsConfig> {
        Some(edgefleet_controller::registry::artifacts::ArtifactsConfig {
            url: self.artifacts?,
            endpoint: self.s3_endpoint,
            region: self.s3_region,
            delivery,
            url_lifetime,
            credentials: None,
            cache_bytes,
        })
    }
}

// `serve`'s flags make its variant large; the command is parsed once, at start.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the controller: the server agents dial and the CLI talks to.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "EDGEFLEET_LISTEN", default_value = "0.0.0.0:7070")]
        listen: String,
        /// Where the database (unless --database), keys and artifacts live.
        #[arg(long, env = "EDGEFLEET_DATA", default_value = "/var/lib/edgefleet")]
        data_dir: PathBuf,
        /// Keep the fleet's state in PostgreSQL instead of SQLite in the data directory:
        /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB. A URL with a password belongs in the
        /// environment file (0600), not on a command line others can read. Keys and artifacts
        /// stay in --data-dir (deploy/postgres.md).
        #[arg(
            long,
            env = "EDGEFLEET_DATABASE",
            hide_env_values = true,
            value_name = "URL"
        )]
        database: Option<String>,
        // Keep artifact bytes in an S3-compatible object store instead of the data directory.
        #[command(flatten)]
        object_store: ObjectStoreArgs,
        /// How agents get artifacts from the object store: `presigned` (straight from it, with
        /// short-lived URLs the controller hands out) or `proxy` (through the controller, for a
        /// store devices cannot reach).
        #[arg(long, value_enum, default_value = "presigned", requires = "artifacts")]
        artifact_delivery: edgefleet_controller::registry::artifacts::Delivery,
        /// How long a presigned URL works, in seconds (an agent asks again when one expires
        /// mid-transfer). Anyone holding the URL can fetch the artifact until then.
        #[arg(long, default_value_t = 300, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..=604_800))]
        presigned_url_lifetime_s: u64,
        /// Room, in MiB, for this controller's copies of the artifacts it sends agents itself
        /// (`--artifact-delivery proxy`), kept in DATA/artifact-cache: each is then read from
        /// the object store once, not once per agent. The least recently sent go first; 0
        /// keeps none.
        #[arg(
            long,
            default_value_t = 4096,
            value_name = "MIB",
            requires = "artifacts"
        )]
        artifact_cache_mib: u64,
        /// This controller's name among several serving one --database (each a replica any
        /// agent or CLI may reach; one of them leads). Default: HOST:PORT.
        #[arg(
            long,
            env = "EDGEFLEET_REPLICA_ID",
            value_name = "ID",
            requires = "database",
            value_parser = replica_id
        )]
        replica_id: Option<String>,
        /// How long the leader's lease lasts, in seconds, unless renewed (every fifth of it, at
        /// least every 2 s): a leader that dies or stalls is replaced about this long after.
        #[arg(long, default_value_t = 10, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(2..=300))]
        leader_lease_s: u64,
        /// End each agent's connection after this many seconds (its stream up to a fifth
        /// later); the agent reconnects at once on a new connection, through the load
        /// balancer, so that agents spread over a replica added later. Default: connections
        /// last as long as they hold.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(5..))]
        max_stream_age_s: Option<u64>,
        /// Reduce the results of runs older than this many days to their summary (percentiles,
        /// throughput, energy, quality kept; the latency histogram and percentile list, most
        /// of a result's size, dropped), once at start and then hourly, in small batches.
        /// Baseline runs stay whole, so `compare` against them works. Default: keep all.
        #[arg(long, env = "EDGEFLEET_RETENTION_DAYS", value_name = "DAYS",
              value_parser = clap::value_parser!(u64).range(1..))]
        retention_days: Option<u64>,
        /// More names (DNS or IP) the server certificate is valid for, repeatable: added to
        /// this host's name, localhost and 127.0.0.1, which it always covers.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Lifetime of the client certificates agents get, in seconds (renewed at about 70%).
        #[arg(long, default_value_t = 30 * 24 * 3600, value_name = "SECONDS")]
        agent_cert_lifetime_s: u64,
        /// How long after its certificate expired an agent that was away (switched off, out of
        /// reach) may still trade it for a new one by itself, proving it holds its key; past
        /// this it must be enrolled again. Seconds; default a year.
        #[arg(long, default_value_t = 365 * 24 * 3600, value_name = "SECONDS")]
        agent_recovery_window_s: u64,
        /// Seconds a new connection may wait for its peer during the TLS handshake (time the
        /// server needs, in a reconnect storm, does not count).
        #[arg(
            long,
            default_value_t = 5,
            value_name = "SECONDS",
            help_heading = "Connection limits"
        )]
        handshake_timeout_s: u64,
        /// Seconds a connection may then wait for its peer's first authenticated call (an agent
        /// certificate, an admin or enrollment token) before it is closed.
        #[arg(
            long,
            default_value_t = 20,
            value_name = "SECONDS",
            help_heading = "Connection limits"
        )]
        unauthenticated_idle_s: u64,
        /// Connections not yet authenticated (handshakes included) held at once; past it the
        /// oldest that has not spoken TLS, from the source holding the most, makes way for the
        /// newcomer.
        #[arg(
            long,
            default_value_t = 1024,
            value_name = "N",
            help_heading = "Connection limits"
        )]
        max_unauthenticated: usize,
        /// The same from one source address (an IPv6 /64); past it the source's own oldest makes
        /// way.
        #[arg(
            long,
            default_value_t = 64,
            value_name = "N",
            help_heading = "Connection limits"
        )]
        max_unauthenticated_per_source: usize,
        /// Open files kept free of connections (the store, artifacts and logs need them).
        #[arg(
            long,
            default_value_t = 512,
            value_name = "N",
            help_heading = "Connection limits"
        )]
        descriptor_reserve: u64,
        /// With --insecure only: the shared token every agent presents (no TLS, no enrollment).
        #[arg(
            long,
            env = "EDGEFLEET_TOKEN",
            hide_env_values = true,
            requires = "insecure"
        )]
        token: Option<String>,
        /// Seconds between agent heartbeats.
        #[arg(long, default_value_t = 5)]
        heartbeat_s: u64,
        /// Serve Prometheus metrics (GET /metrics) and a plain health check (GET /healthz) over
        /// unauthenticated HTTP on this address, e.g. 127.0.0.1:9464 (default: not served).
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
        /// Serve the web console on this address (`--console-listen` alone: 127.0.0.1:7480),
        /// over HTTPS with the controller's server certificate; sign in with an admin token
        /// (default: not served).
        #[arg(
            long,
            value_name = "ADDR",
            num_args = 0..=1,
            default_missing_value = "127.0.0.1:7480",
            help_heading = "Web console"
        )]
        console_listen: Option<String>,
        /// Serve the console over plain HTTP: behind a proxy that terminates TLS, or for an
        /// --insecure controller, which has no certificate.
        #[arg(long, requires = "console_listen", help_heading = "Web console")]
        console_plain_http: bool,
        /// The address browsers reach the console at when a proxy in front terminates TLS,
        /// e.g. https://console.example (its forms must be posted from there).
        #[arg(
            long,
            value_name = "URL",
            requires = "console_listen",
            help_heading = "Web console"
        )]
        console_origin: Option<String>,
    },
    /// List the controllers serving this fleet: each replica on the shared database, the agents
    /// it holds, which one leads, when each was last heard from.
    Controllers {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List agents, online or not (or enroll, revoke, remove one).
    Agents {
        #[command(subcommand)]
        command: Option<AgentsCommand>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Admin tokens for the CLI.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Register and list model versions.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Benchmark runs.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Roll a model version out to agents in waves, with health checks, performance gates and
    /// rollback.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Benchmark runs on a cron schedule, fired inside the controller.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Write a report into DIR: report.html (self-contained), charts/*.png, summary.md,
    /// results.csv and results.json.
    Report {
        /// The folder to write into (made if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only this run (default: every run).
        #[arg(long, conflicts_with_all = ["suite", "since"])]
        run: Option<String>,
        /// Only runs of this suite (by its name).
        #[arg(long)]
        suite: Option<String>,
        /// Only runs since: an RFC 3339 time, or a duration ago (7d, 12h).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        #[arg(long = "select", value_name = "EXPR", help = selector::HELP, value_parser = selector::check_arg)]
        select: Vec<String>,
    },
    /// Compare B against A on every device class that measured both: the ratio B/A with its
    /// 95% bootstrap interval and a verdict (faster, slower, or no difference beyond noise).
    Compare {
        /// A model version (name@version) or a run id.
        a: String,
        /// Another model version, or another run id (runs are compared model by model).
        b: String,
        /// Only runs of this suite (by its name).
        #[arg(long)]
        suite: Option<String>,
        #[arg(long = "select", value_name = "EXPR", help = selector::HELP, value_parser = selector::check_arg)]
        select: Vec<String>,
        /// What to compare.
        #[arg(long, default_value = "p50", value_parser = [
            "p50", "p90", "p99", "throughput", "energy", "memory", "ttft", "tpot"
        ])]
        metric: String,
        /// Changes smaller than this many percent are "no difference".
        #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
        threshold: f64,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Baselines: the run later runs of a suite are judged against, per device class.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Regressions found as runs finished: against the suite's baseline, or drift from the
    /// recent history of the same model on the same device class.
    Regressions {
        /// Only those found since: an RFC 3339 time, or a duration ago (7d, 12h).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Acknowledge regression ID (it stays listed, marked acknowledged).
        #[arg(long, value_name = "ID")]
        ack: Option<i64>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a controller and two agents here, benchmark MiniLM-L6 fp32 vs int8, write a report.
    Demo {
        #[arg(long)]
        out: PathBuf,
        /// The prepared models (default: the set-up cache .cache/edgefleet/models).
        #[arg(long, env = "EDGEFLEET_MODELS")]
        models_dir: Option<PathBuf>,
        /// libonnxruntime for the agents (default: they look in the set-up cache).
        #[arg(long)]
        onnxruntime_library: Option<PathBuf>,
    },
    /// The controller's own database, offline (stop `edgefleet serve` first).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (edgefleet.1 and one per command) into a folder.
    #[command(hide = true)]
    ManPages { out: PathBuf },
}

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Copy a controller's whole history from its SQLite store into PostgreSQL: agents and their
    /// identities, token hashes, models, runs, results, rollouts, schedules, baselines. Compares
    /// both sides row by row and checks every artifact's sha256 in the data folder, and prints
    /// the counts; a second run copies nothing. With --artifacts, the artifacts go into the object
    /// store too, each read back and checked. Then start `edgefleet serve --data-dir DATA_DIR
    /// --database URL [--artifacts S3_URL]`: the keys stay in the data folder.
    #[command(
        after_help = "Example: edgefleet store migrate --from /var/lib/edgefleet --to postgres://edgefleet@db/edgefleet"
    )]
    Migrate {
        /// The controller's data folder (with controller.db).
        #[arg(long, value_name = "DATA_DIR")]
        from: PathBuf,
        /// The PostgreSQL database: postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
        #[arg(
            long,
            value_name = "URL",
            env = "EDGEFLEET_DATABASE",
            hide_env_values = true
        )]
        to: String,
        // Also copy the artifacts into this object store (as given to `serve --artifacts`),
        // reading each one back to check its sha256.
        #[command(flatten)]
        object_store: ObjectStoreArgs,
    },
    /// Rows and their stored bytes per family of tables (agents, registry, runs, results,
    /// rollouts, trust, comparisons, schedules), and results reduced by retention.
    Stats {
        /// The controller's data folder (its controller.db), unless --database.
        #[arg(long, env = "EDGEFLEET_DATA", default_value = "/var/lib/edgefleet")]
        data_dir: PathBuf,
        /// The controller's PostgreSQL database, as given to `serve --database`.
        #[arg(
            long,
            env = "EDGEFLEET_DATABASE",
            hide_env_values = true,
            value_name = "URL"
        )]
        database: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum BaselineCommand {
    /// Make a run of SUITE the baseline on every device class it measured (default: the
    /// suite's newest run with results).
    Set {
        /// The suite's name (its `name = ...`, not a schedule's name or a file).
        suite: String,
        /// The run to make the baseline (an id `bench run` printed; default: the suite's newest
        /// run with results).
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
    },
    /// List baselines.
    Ls {
        /// Only this suite's.
        suite: Option<String>,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgentsCommand {
    /// Print a one-time token a new device enrolls with (edgefleet-agent run --enroll-token).
    Enroll {
        /// The name the agent gets (default: the device chooses).
        #[arg(long)]
        name: Option<String>,
        /// A label the agent gets, KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// How long the token can be used, e.g. 90s, 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Print the token with its expiry and CA fingerprint as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cut an agent off now: its stream is closed and every later call refused.
    Revoke {
        /// The agent's name or id.
        agent: String,
    },
    /// Forget an agent (revoked first); its results stay in the history.
    Rm {
        /// The agent's name or id.
        agent: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Admin tokens: viewer (read only) or operator (everything).
    #[command(subcommand)]
    Tokens(TokensCommand),
}

#[derive(Subcommand)]
pub(crate) enum TokensCommand {
    /// Make a token and print it (once: only its hash is kept), or write a credentials file to
    /// hand to its holder.
    #[command(
        after_help = "Example: edgefleet admin tokens create --name ci --role viewer --out ci.json --address https://controller.example:7070\nThe holder runs: edgefleet --credentials ci.json agents"
    )]
    Create {
        /// Who will hold it (a person, a CI job): unique, shown in `tokens ls`, used to revoke it.
        #[arg(long)]
        name: String,
        /// viewer (listings, results, reports) or operator (everything).
        #[arg(long)]
        role: String,
        /// Print the token and its details as JSON.
        #[arg(long, conflicts_with = "out")]
        json: bool,
        /// Write a credentials file instead of printing the token: the controller's address,
        /// its CA and the token, mode 0600, the format `--credentials` reads. Never overwrites.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// With --out: the address the holder dials, e.g. https://controller.example:7070
        /// (default: the one this command used).
        #[arg(long, value_name = "URL", requires = "out")]
        address: Option<String>,
    },
    /// List tokens (names and roles, never the secrets).
    Ls {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Subcommand)]
pub(crate) enum ModelsCommand {
    /// Upload an ONNX model (and companions such as tokenizer.json) as NAME@VERSION.
    #[command(
        after_help = "Example: edgefleet models add model.int8.onnx --name minilm-l6 --version int8 --quant int8 --with tokenizer.json"
    )]
    Add {
        /// The ONNX model file (checked as ONNX before anything is stored).
        #[arg(value_name = "MODEL.onnx")]
        file: PathBuf,
        /// The model's name, shared by its versions (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// This version's label, unique within the name (e.g. int8, 2024-06-01, v3).
        #[arg(long)]
        version: String,
        /// Quantization label, e.g. fp32, int8, q4.
        #[arg(long, default_value = "unknown")]
        quant: String,
        /// Companion files stored with the model (tokenizer.json, external data).
        #[arg(long = "with", value_name = "FILE")]
        with: Vec<PathBuf>,
    },
    /// List registered model versions.
    Ls {
        /// Print them as JSON (with every input and output).
        #[arg(long)]
        json: bool,
    },
    /// Show a version's signed manifest and the agents that hold it.
    Show {
        /// NAME@VERSION
        model: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a version and the artifact bytes no other version uses. Refused while the version
    /// is active on an agent, kept there for rollback, or being rolled out.
    Rm {
        /// NAME@VERSION
        model: String,
        /// Remove it even so.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum RolloutCommand {
    /// Start rolling NAME@VERSION out to the selected agents.
    Start {
        /// NAME@VERSION
        model: String,
        #[arg(long = "select", value_name = "EXPR", help = selector::HELP, value_parser = selector::check_arg)]
        select: Vec<String>,
        /// Cumulative wave sizes, percentages or counts, ending at 100%.
        #[arg(long, default_value = "100%")]
        waves: String,
        /// Share of a wave that must install and pass its health check before the next starts.
        #[arg(long, default_value = "100%")]
        success: String,
        /// Stop and roll back the wave after this many failed installs (N or N%).
        #[arg(long)]
        abort_after: Option<String>,
        /// Performance gate: candidate vs the active version on each wave's devices, e.g.
        /// "p90<=1.10x,energy<=1.10x,quality>=0.99" (metrics p50 p90 p99 energy memory quality).
        #[arg(long)]
        gate: Option<String>,
        /// The gate's workload from a suite instead of built-in sentences (needed for models
        /// without a tokenizer: audio or image input): the group naming this model (or the
        /// only one) gives the input and quality metric, its first scenario the run.
        #[arg(long, value_name = "SUITE.toml", requires = "gate")]
        gate_suite: Option<PathBuf>,
        /// Health check after install: smoke (load and run a few queries), bench (the quick
        /// suite's single-stream run: at least 200 queries and 3 s; a failure rolls back like a
        /// failed smoke test) or none.
        #[arg(long, default_value = "smoke")]
        health: String,
        /// Follow the rollout until it settles.
        #[arg(long)]
        watch: bool,
    },
    /// Show one rollout (or all of them, newest first).
    Status {
        id: Option<String>,
        /// Redraw until the rollout settles.
        #[arg(long)]
        watch: bool,
        #[arg(long)]
        json: bool,
    },
    /// Stop starting new installs (in-flight ones finish).
    Pause { id: String },
    /// Continue a paused rollout.
    Resume { id: String },
    /// Stop the rollout where it is; installed agents keep the new version.
    Abort { id: String },
    /// Switch every agent the rollout reached back to the version it had before.
    Rollback { id: String },
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Run a suite on the selected online agents.
    Run {
        /// The suite file (TOML: models, inputs, scenarios; see bench-suites/README.md).
        #[arg(value_name = "SUITE.toml")]
        suite: PathBuf,
        #[arg(long = "select", value_name = "EXPR", help = selector::HELP, value_parser = selector::check_arg)]
        select: Vec<String>,
        /// Wait for the results and print them.
        #[arg(long)]
        wait: bool,
        /// Print results as JSON (with --wait).
        #[arg(long)]
        json: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 1800)]
        timeout_s: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Run a suite on a cron schedule. The cron expression has six fields and the first is
    /// SECONDS: "0 0 3 * * *" is 03:00:00 every day (in --tz, UTC by default), "*/30 * * * * *"
    /// every 30 seconds.
    #[command(
        after_help = "Example: edgefleet schedule add nightly --cron \"0 0 3 * * *\" --tz Europe/Berlin --suite quick.toml --select hw=rpi5 --jitter 10m --when-idle"
    )]
    Add {
        /// The schedule's name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Six fields, seconds first: SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK, e.g.
        /// "0 0 3 * * *" (03:00:00 every day).
        #[arg(long)]
        cron: String,
        /// The time zone the cron is read in, an IANA name (Europe/Berlin, America/Denver):
        /// 03:00 stays 03:00 on the site's clock across daylight-saving changes, and a fire the
        /// change skips or repeats happens once. Default UTC.
        #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = check_time_zone)]
        tz: String,
        /// The suite to run (read now; later edits of the file do not change the schedule).
        #[arg(long, value_name = "SUITE.toml")]
        suite: PathBuf,
        #[arg(long = "select", value_name = "EXPR", help = selector::HELP, value_parser = selector::check_arg)]
        select: Vec<String>,
        /// Delay each fire by a uniformly random time below this, e.g. 30s, 10m, 1h.
        #[arg(long, value_name = "DURATION", value_parser = parse_jitter)]
        jitter: Option<std::time::Duration>,
        /// Start only on agents with no unfinished benchmark job and no rollout install in
        /// progress (busy ones are left out of that fire).
        #[arg(long)]
        when_idle: bool,
        /// Override the suite's [conditions] max_start_temp_c (°C): each run waits for the
        /// device to cool below it.
        #[arg(long, value_name = "CELSIUS")]
        max_start_temp: Option<f64>,
    },
    /// List schedules: cron, suite, selector, next fire, last fire and its outcome, missed fires.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (its runs and results stay).
    Rm { name: String },
    /// Fire a schedule now (a run still going is not started twice).
    Run { name: String },
}

/// `--jitter`, read by the controller library's parser.
fn parse_jitter(text: &str) -> Result<std::time::Duration, String> {
    edgefleet_controller::schedule::parse_jitter(text).map_err(|e| e.to_string())
}

/// Checks `--tz` on the command line (the controller checks again).
fn check_time_zone(name: &str) -> Result<String, String> {
    edgefleet_controller::schedule::parse_time_zone(name)
        .map(|zone| zone.name().to_string())
        .map_err(|e| e.to_string())
}

/// A replica's id: letters, digits and `.`, `_`, `:`, `-` (it names the replica in PostgreSQL
/// session settings and in `edgefleet controllers`).
fn replica_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(text.to_string())
    } else {
        Err("a replica id is 1 to 64 letters, digits, `.`, `_`, `:` or `-`".to_string())
    }
}
