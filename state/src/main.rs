//! `tether-state`: the shared daemon `main` around [`tether_state::run`].

use std::process::ExitCode;

use tether_daemon::cli::Daemon;
use tether_daemon::config::help::NoDefault;
use tether_daemon::config::ConfigErrors;
use tether_daemon::logging::LogFormat;
use tether_state::{Config, Opts};

struct State;

impl Daemon for State {
    type Opts = Opts;
    type Config = Config;
    const NO_DEFAULT: &'static [NoDefault] = tether_state::config::NO_DEFAULT;

    fn load(opts: &Opts) -> Result<Config, ConfigErrors> {
        opts.load()
    }

    fn log_format(config: &Config) -> LogFormat {
        config.log_format
    }

    fn run(opts: Opts, config: Config) -> anyhow::Result<()> {
        tether_state::run(opts, config)
    }
}

fn main() -> ExitCode {
    tether_daemon::cli::main::<State>(
        "tether-state",
        env!("CARGO_PKG_VERSION"),
        "Tether state daemon: sessions, heartbeats, resume and push for gateways on a Unix socket",
    )
}
