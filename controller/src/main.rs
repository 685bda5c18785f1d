//! `edgefleet`: parses the command line, sets up logging and the runtime, and hands the command to
//! [`cli::run`].

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

/// Exit status of every usage error: a flag clap refuses, a value the CLI or the controller
/// refuses (`--cron`, `--since`, `--select`), a configuration that cannot work (EX_USAGE).
const USAGE: u8 = 64;
/// Exit status when a service the controller needs (its PostgreSQL database) does not answer
/// (EX_UNAVAILABLE).
const UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print(); // `edgefleet` or `edgefleet schedule` alone: the whole help
            return ExitCode::from(USAGE);
        }
        Err(e) => {
            eprintln!("edgefleet: {}", usage_error_in_one_line(&e.to_string()));
            return ExitCode::from(USAGE);
        }
    };
    let default_level = match cli.command {
        cli::Command::Serve { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEFLEET_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgefleet: {}", one_line(&e));
            // Usage errors apart, so scripts can tell them from failures; a database that does
            // not answer is EX_UNAVAILABLE, so a supervisor can tell it from a bad setting.
            use edgefleet_controller::store::StoreError;
            let store_error = match e.downcast_ref::<edgefleet_controller::OpenError>() {
                Some(edgefleet_controller::OpenError::Store(store)) => Some(store),
                _ => e.downcast_ref::<StoreError>(),
            };
            if let Some(StoreError::Unreachable { .. }) = store_error {
                ExitCode::from(UNAVAILABLE)
            } else if let Some(StoreError::NewerSchema { .. } | StoreError::Url(_)) = store_error {
                ExitCode::from(USAGE)
            } else if e.downcast_ref::<cli::ConfigError>().is_some()
                || e.downcast_ref::<edgefleet_controller::OpenError>()
                    .is_some()
            {
                ExitCode::from(USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// clap's usage error in one line, like every other error: its message and details, without the
/// usage block and the pointer to --help that follow the first blank line.
fn usage_error_in_one_line(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = message.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (see --help)")
}

/// An error and its causes in one line, each cause once: many errors already name their cause in
/// their own message, and printing the chain as well would say it twice.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line += ": ";
        }
        line += &text;
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn usage_error(args: &[&str]) -> String {
        let e = cli::Cli::try_parse_from(args).err().expect("a usage error");
        assert!(e.use_stderr());
        usage_error_in_one_line(&e.to_string())
    }

    #[test]
    fn usage_errors_are_one_line_naming_what_is_wrong() {
        let bad_select = usage_error(&["edgefleet", "bench", "run", "s.toml", "--select", "hw"]);
        assert_eq!(
            bad_select,
            "invalid value 'hw' for '--select <EXPR>': selector `hw` is not key=value or key!=value (see --help)"
        );
        let missing = usage_error(&["edgefleet", "admin", "tokens", "create", "--role", "viewer"]);
        assert!(missing.contains("--name <NAME>"), "{missing}");
        assert!(!missing.contains('\n'), "{missing}");
    }
}
