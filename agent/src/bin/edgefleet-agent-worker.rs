//! `edgefleet-agent-worker`: one benchmark job (a JSON job on stdin, a JSON outcome on stdout),
//! or with `--probe` ONNX Runtime's version and execution providers. The daemon starts it; it is
//! a binary of its own so that ONNX Runtime, the tokenizer and the statistics code never load
//! into the long-running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut probe = false;
    let mut library: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--probe" => probe = true,
            "--onnxruntime-library" => library = args.next().map(PathBuf::from),
            other => {
                eprintln!("edgefleet-agent-worker: unknown argument `{other}` (this program is started by edgefleet-agent)");
                return ExitCode::from(64);
            }
        }
    }
    if !probe {
        return edgefleet_agent::worker::main_job();
    }
    match edgefleet_agent::runtime_library::locate(library.as_deref()) {
        Ok(path) => edgefleet_agent::worker::main_probe(&path),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
