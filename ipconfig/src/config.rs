//! The ip-config service's configuration: TOML keys, their flags and `TETHER_IPCONFIG_*` env
//! vars, with the ranges `check` enforces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::validate::Checks;
use tether_daemon::config::{ConfigError, ConfigErrors, Validate};
use tether_daemon::logging::LogFormat;

/// Largest `top_n`: a request deals at most this many entries.
pub(crate) const MAX_TOP_N: usize = 100;
/// Largest `window`.
pub(crate) const MAX_WINDOW: usize = 100;
/// Largest `max_gateways`.
pub(crate) const MAX_GATEWAYS: usize = 1_000_000;
/// Smallest and largest `max_report_bytes`.
pub(crate) const REPORT_BYTES_RANGE: (usize, usize) = (512, 1 << 20);

/// Everything the service can be told. Every key has a flag of the same name and a
/// `TETHER_IPCONFIG_<KEY>` env var.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener for reports, `/ip_list`, `/healthz` and `/metrics`.
    pub listen: SocketAddr,
    /// Reports per gateway the scores average over.
    pub window: usize,
    /// A gateway with no report for this long is dropped.
    pub stale_after_ms: u64,
    /// Entries in an `/ip_list` answer.
    pub top_n: usize,
    /// Shortest time between two rebuilds of the list.
    pub rebuild_interval_ms: u64,
    /// Gateways tracked at once; a report from one more is answered 503.
    pub max_gateways: usize,
    /// Largest report body; a larger one is answered 413.
    pub max_report_bytes: usize,
    /// Tokio worker threads; 0 = one per core.
    pub workers: usize,
    /// etcd client URLs: also take the gateways registered under `/tether/gateways/`
    /// (watched); empty = HTTP reports only.
    pub etcd: Vec<String>,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 6789)),
            window: 5,
            stale_after_ms: 3000,
            top_n: 5,
            rebuild_interval_ms: 100,
            max_gateways: 10_000,
            max_report_bytes: 16 * 1024,
            workers: 0,
            etcd: Vec::new(),
            log_format: LogFormat::Text,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut c = Checks::new();
        c.need(
            (1..=MAX_WINDOW).contains(&self.window),
            "window",
            format!("between 1 and {MAX_WINDOW}"),
        );
        c.need(
            (10..=86_400_000).contains(&self.stale_after_ms),
            "stale_after_ms",
            "between 10 and 86400000 (one day)",
        );
        c.need(
            (1..=MAX_TOP_N).contains(&self.top_n),
            "top_n",
            format!("between 1 and {MAX_TOP_N}"),
        );
        c.need(
            (1..=60_000).contains(&self.rebuild_interval_ms),
            "rebuild_interval_ms",
            "between 1 and 60000",
        );
        c.need(
            self.rebuild_interval_ms <= self.stale_after_ms,
            "rebuild_interval_ms",
            "at most stale_after_ms (or stale gateways stay listed for longer)",
        );
        c.need(
            (1..=MAX_GATEWAYS).contains(&self.max_gateways),
            "max_gateways",
            format!("between 1 and {MAX_GATEWAYS}"),
        );
        let (lo, hi) = REPORT_BYTES_RANGE;
        c.need(
            (lo..=hi).contains(&self.max_report_bytes),
            "max_report_bytes",
            format!("between {lo} and {hi}"),
        );
        c.need(self.workers <= 1024, "workers", "at most 1024");
        c.etcd("etcd", &self.etcd);
        c.into_errors()
    }
}

impl Config {
    /// `workers` with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn stale_after(&self) -> Duration {
        Duration::from_millis(self.stale_after_ms)
    }

    pub fn rebuild_interval(&self) -> Duration {
        Duration::from_millis(self.rebuild_interval_ms)
    }
}

/// Command-line flags; each overrides the file's key of the same name and reads
/// `TETHER_IPCONFIG_<KEY>` from the environment when not given. Their help says no default:
/// `--help` appends the one `Config::default()` has.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct Opts {
    /// TOML config file.
    #[arg(long, env = "TETHER_IPCONFIG_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// HTTP listener.
    #[arg(long, env = "TETHER_IPCONFIG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Reports per gateway the scores average over.
    #[arg(long, env = "TETHER_IPCONFIG_WINDOW")]
    pub window: Option<usize>,
    /// Drop a gateway after this long without a report, ms.
    #[arg(long, env = "TETHER_IPCONFIG_STALE_AFTER_MS")]
    pub stale_after_ms: Option<u64>,
    /// Gateways in an /ip_list answer.
    #[arg(long, env = "TETHER_IPCONFIG_TOP_N")]
    pub top_n: Option<usize>,
    /// Shortest time between two rebuilds of the list, ms.
    #[arg(long, env = "TETHER_IPCONFIG_REBUILD_INTERVAL_MS")]
    pub rebuild_interval_ms: Option<u64>,
    /// Gateways tracked at once.
    #[arg(long, env = "TETHER_IPCONFIG_MAX_GATEWAYS")]
    pub max_gateways: Option<usize>,
    /// Largest report body in bytes.
    #[arg(long, env = "TETHER_IPCONFIG_MAX_REPORT_BYTES")]
    pub max_report_bytes: Option<usize>,
    /// Tokio worker threads, 0 = one per core.
    #[arg(long, env = "TETHER_IPCONFIG_WORKERS")]
    pub workers: Option<usize>,
    /// etcd client URLs, comma-separated: watch the gateways registered there; none = HTTP only.
    #[arg(long, env = "TETHER_IPCONFIG_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    /// Log format: text or json.
    #[arg(long, env = "TETHER_IPCONFIG_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Opts {
    /// The config these flags, their env vars and the `--config` file describe.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        tether_daemon::config::load(self.config.as_deref(), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_and_no_flags_gives_the_defaults() {
        let config = Opts::default().load().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "0.0.0.0:6789");
        assert_eq!(
            (config.window, config.stale_after_ms, config.top_n),
            (5, 3000, 5)
        );
        assert_eq!(config.max_gateways, 10_000);
        assert!(config.worker_count() >= 1);
    }

    #[test]
    fn flags_override_and_every_error_is_listed_at_once() {
        let opts = Opts {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            top_n: Some(3),
            workers: Some(2),
            ..Opts::default()
        };
        let config = opts.load().unwrap();
        assert_eq!(config.listen.port(), 0);
        assert_eq!((config.top_n, config.worker_count()), (3, 2));

        let bad = Opts {
            window: Some(0),
            top_n: Some(0),
            stale_after_ms: Some(50),
            rebuild_interval_ms: Some(100),
            max_gateways: Some(0),
            max_report_bytes: Some(1),
            workers: Some(5000),
            ..Opts::default()
        };
        let err = bad.load().unwrap_err();
        let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "window",
                "top_n",
                "rebuild_interval_ms",
                "max_gateways",
                "max_report_bytes",
                "workers"
            ],
            "{err}"
        );
    }

    #[test]
    fn every_flag_is_a_key_and_its_help_shows_its_default() {
        let problems = tether_daemon::config::help::disagreements::<Opts, Config>(&[]);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
