//! The `tether-loadgen` binary: parse flags, run (here, or over `--procs` worker
//! processes), print the summary table, exit 0 (pass), 1 (fail: a connection missing or
//! dropped, a verify failure, or the run could not be carried out) or 2 (bad arguments).

use std::process::ExitCode;

use clap::Parser;
use tether_daemon::logging::{self, LogFormat};
use tether_loadgen::Args;

fn main() -> ExitCode {
    logging::init(LogFormat::Text, "info");
    // Each socket is a descriptor: take all the hard limit allows (a failure only means
    // fewer connections, and those failures are counted as fd_limit).
    let _ = tether_daemon::rlimit::raise_nofile();
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
    if config.shard.is_some() {
        return match tether_loadgen::run_worker(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tether-loadgen worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = if config.procs > 1 {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        tether_loadgen::run_parent(&config, &args)
    } else {
        tether_loadgen::run(config)
    };
    match result {
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
