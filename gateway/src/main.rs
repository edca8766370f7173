//! `tether-gateway`: the shared daemon `main` around [`tether_gateway::run`].

use std::process::ExitCode;

use tether_daemon::cli::Daemon;
use tether_daemon::config::help::NoDefault;
use tether_daemon::config::ConfigErrors;
use tether_daemon::logging::LogFormat;
use tether_gateway::{Config, Opts};

struct Gateway;

impl Daemon for Gateway {
    type Opts = Opts;
    type Config = Config;
    const NO_DEFAULT: &'static [NoDefault] = tether_gateway::NO_DEFAULT;

    fn load(opts: &Opts) -> Result<Config, ConfigErrors> {
        opts.load()
    }

    fn log_format(config: &Config) -> LogFormat {
        config.log_format
    }

    fn run(opts: Opts, config: Config) -> anyhow::Result<()> {
        tether_gateway::run(&opts, config)
    }
}

fn main() -> ExitCode {
    tether_daemon::cli::main::<Gateway>(
        "tether-gateway",
        env!("CARGO_PKG_VERSION"),
        "Tether gateway: long-lived client connections forwarded to the echo-node cluster",
    )
}
