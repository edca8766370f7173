//! `tether-echo-node`: parses flags, sets up logging, runs the node.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tether_echo_node::Opts;

#[derive(Parser)]
#[command(
    name = "tether-echo-node",
    version,
    about = "Tether compute node: echoes frames"
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
            let config = match cli.opts.load() {
                Ok(config) => config,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            tether_daemon::logging::init(config.log_format, "info");
            match tether_echo_node::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
