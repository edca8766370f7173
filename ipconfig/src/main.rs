//! `tether-ipconfig`: the shared daemon `main` around [`tether_ipconfig::run`].

use std::process::ExitCode;

use tether_daemon::cli::Daemon;
use tether_daemon::config::ConfigErrors;
use tether_daemon::logging::LogFormat;
use tether_ipconfig::{Config, Opts};

struct IpConfig;

impl Daemon for IpConfig {
    type Opts = Opts;
    type Config = Config;
    const NO_DEFAULT: &'static [tether_daemon::config::help::NoDefault] =
        tether_ipconfig::NO_DEFAULT;

    fn load(opts: &Opts) -> Result<Config, ConfigErrors> {
        opts.load()
    }

    fn log_format(config: &Config) -> LogFormat {
        config.log_format
    }

    fn run(_opts: Opts, config: Config) -> anyhow::Result<()> {
        tether_ipconfig::run(config)
    }
}

fn main() -> ExitCode {
    tether_daemon::cli::main::<IpConfig>(
        "tether-ipconfig",
        env!("CARGO_PKG_VERSION"),
        "Tether ip-config service: gateways report their load, clients GET /ip_list",
    )
}
