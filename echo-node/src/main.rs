//! `tether-echo-node`: the shared daemon `main` around [`tether_echo_node::run`].

use std::process::ExitCode;

use tether_daemon::cli::Daemon;
use tether_daemon::config::ConfigErrors;
use tether_daemon::logging::LogFormat;
use tether_echo_node::{Config, Opts};

struct EchoNode;

impl Daemon for EchoNode {
    type Opts = Opts;
    type Config = Config;
    const NO_DEFAULT: &'static [tether_daemon::config::help::NoDefault] =
        tether_echo_node::NO_DEFAULT;

    fn load(opts: &Opts) -> Result<Config, ConfigErrors> {
        opts.load()
    }

    fn log_format(config: &Config) -> LogFormat {
        config.log_format
    }

    fn run(_opts: Opts, config: Config) -> anyhow::Result<()> {
        tether_echo_node::run(config)
    }
}

fn main() -> ExitCode {
    tether_daemon::cli::main::<EchoNode>(
        "tether-echo-node",
        env!("CARGO_PKG_VERSION"),
        "Tether compute node: echoes frames",
    )
}
