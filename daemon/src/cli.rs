//! The `main` every daemon shares: `NAME [flags]` loads the configuration, sets up logging,
//! has the allocator give memory back promptly ([`crate::heap`]) and runs; `NAME check [flags]` prints the effective configuration (secrets redacted), or
//! every error in it, and exits 1 on errors. `--help` shows each flag's default as `check`
//! prints it, taken from the config's `Default`.

use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use crate::config::help::NoDefault;
use crate::config::ConfigErrors;
use crate::logging::LogFormat;

/// What a daemon plugs into [`main`].
pub trait Daemon {
    /// Its flags (clap), each overriding the config file's key of the same name.
    type Opts: Args;
    /// Its configuration; its `Default` is what `--help` shows.
    type Config: Serialize + Default;
    /// Keys with no value by default, and what that means, for `--help`.
    const NO_DEFAULT: &'static [NoDefault] = &[];

    fn load(opts: &Self::Opts) -> Result<Self::Config, ConfigErrors>;
    fn log_format(config: &Self::Config) -> LogFormat;
    /// Runs until stopped; `opts` is kept for reloads.
    fn run(opts: Self::Opts, config: Self::Config) -> anyhow::Result<()>;
}

#[derive(Parser)]
struct Cli<O: Args> {
    #[command(subcommand)]
    command: Option<Command<O>>,
    #[command(flatten)]
    opts: O,
}

#[derive(Subcommand)]
enum Command<O: Args> {
    /// Check the configuration, print it and exit (1 when anything is wrong).
    Check(O),
}

/// Parses the command line and runs `D`: the whole `main` of a daemon binary.
pub fn main<D: Daemon>(name: &'static str, version: &'static str, about: &'static str) -> ExitCode {
    let command = Cli::<D::Opts>::command()
        .name(name)
        .bin_name(name)
        .version(version)
        .about(about);
    let command = crate::config::help::with_defaults::<D::Config>(command, D::NO_DEFAULT);
    let cli = match Cli::<D::Opts>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match cli.command {
        Some(Command::Check(opts)) => match D::load(&opts) {
            Ok(config) => {
                print!("{}", crate::config::render(&config));
                eprintln!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        },
        None => {
            let config = match D::load(&cli.opts) {
                Ok(config) => config,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            crate::logging::init(D::log_format(&config), "info");
            // Before the daemon's threads: long-lived processes give a burst's memory back.
            crate::heap::return_memory_promptly();
            match D::run(cli.opts, config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
