//! `edgefleet-agent`: parses the command line and hands the command to [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check(args) => cli::check(args),
        cli::Command::Bench {
            suite,
            json,
            onnxruntime_library,
            sensors_root,
        } => cli::bench(&suite, json, onnxruntime_library, sensors_root),
        cli::Command::Run(args) => cli::daemon(args),
    }
}
