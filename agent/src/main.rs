//! `edgefleet-agent`: parses the command line and hands the command to [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Microsoft's ONNX Runtime builds otherwise keep a device id and queue usage telemetry under
    // ~/.cache/Microsoft. Set before any thread starts; the workers inherit it.
    std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Check(args) => cli::check(args),
        cli::Command::Bench {
            suite,
            json,
            models_dir,
            onnxruntime_library,
            sensors_root,
        } => cli::bench(&suite, json, models_dir, onnxruntime_library, sensors_root),
        cli::Command::Run(args) => cli::daemon(args),
        cli::Command::Enroll(args) => cli::enroll(args),
        cli::Command::Completions { shell } => cli::completions(shell),
        cli::Command::ManPages { out } => cli::man_pages(&out),
    }
}
