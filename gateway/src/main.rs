//! `tether-gateway`: parses flags, sets up logging, runs the gateway.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether_gateway::Opts;

#[derive(Parser)]
#[command(
    name = "tether-gateway",
    version,
    about = "Tether gateway: long-lived client connections forwarded to the echo-node cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration, print it and exit (1 when anything is wrong).
    Check(Opts),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(opts)) => match opts.load() {
            Ok(config) => {
                print!("{}", tether_daemon::config::render(&config, &[]));
                eprintln!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        },
        None => {
            let format = match cli.opts.load() {
                Ok(config) => config.log_format,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            tether_daemon::logging::init(format, "info");
            match tether_gateway::run(&cli.opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
