//! The `tether-loadgen` binary: parse flags, run, print the summary table, exit 0 (pass),
//! 1 (fail: a connection missing or dropped, a verify failure, or the run could not be
//! carried out) or 2 (bad arguments).

use std::process::ExitCode;

use clap::Parser;
use tether_daemon::logging::{self, LogFormat};
use tether_loadgen::Args;

fn main() -> ExitCode {
    logging::init(LogFormat::Text, "info");
    // clap prints usage errors itself and exits with status 2.
    let args = Args::parse();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("tether-loadgen: invalid arguments:");
            for error in &errors.0 {
                eprintln!("  {error}");
            }
            return ExitCode::from(2);
        }
    };
    match tether_loadgen::run(config) {
        Ok(summary) => {
            println!("{summary}");
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tether-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
