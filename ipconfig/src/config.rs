//! The ip-config service's configuration: TOML keys, their flags and `TETHER_IPCONFIG_*` env
//! vars, with the ranges `check` enforces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::help::NoDefault;
use tether_daemon::config::validate::{self, Checks};
use tether_daemon::config::{ConfigError, ConfigErrors, Validate};
use tether_daemon::logging::LogFormat;
use tether_discovery::{EtcdAuth, EtcdAuthEnv, EtcdAuthFlags};

use crate::credentials::Credentials;

/// Largest `top_n`: a request deals at most this many entries.
pub(crate) const MAX_TOP_N: usize = 100;
/// Largest `window`.
pub(crate) const MAX_WINDOW: usize = 100;
/// Largest `max_gateways`.
pub(crate) const MAX_GATEWAYS: usize = 1_000_000;
/// Smallest and largest `max_report_bytes`.
pub(crate) const REPORT_BYTES_RANGE: (usize, usize) = (512, 1 << 20);

/// Keys with no value by default, for `--help`.
pub const NO_DEFAULT: &[NoDefault] = &[
    ("report_keys_file", "unsigned reports, loopback only"),
    ("etcd_password_file", ""),
];

/// Everything the service can be told. Every key has a flag of the same name and a
/// `TETHER_IPCONFIG_<KEY>` env var.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener for reports, `/ip_list`, `/healthz` and `/metrics`. Off loopback it
    /// needs `report_keys_file` (or anyone who reaches it could list their own gateways).
    pub listen: SocketAddr,
    /// Which keys may sign reports for which gateway ids (see [`crate::credentials`]); set,
    /// every `POST /v1/report` must be signed. None = unsigned reports are accepted, and
    /// `listen` must be a loopback address.
    pub report_keys_file: Option<PathBuf>,
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
    /// Browser origins (`https://app.example.com`, or `*` for any) whose pages may read
    /// `GET /ip_list` across origins (CORS); empty = no CORS headers. Never covers reports.
    pub cors_origins: Vec<String>,
    /// etcd client URLs: also take the gateways registered under `/tether/gateways/`
    /// (watched); empty = HTTP reports only.
    pub etcd: Vec<String>,
    /// The etcd user to watch as (`etcd_user`, `etcd_password_file`).
    #[serde(flatten)]
    pub etcd_auth: EtcdAuth,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 6789)),
            report_keys_file: None,
            window: 5,
            stale_after_ms: 3000,
            top_n: 5,
            rebuild_interval_ms: 100,
            max_gateways: 10_000,
            max_report_bytes: 16 * 1024,
            workers: 0,
            cors_origins: Vec::new(),
            etcd: Vec::new(),
            etcd_auth: EtcdAuth::default(),
            log_format: LogFormat::Text,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut c = Checks::new();
        c.need(
            self.listen.ip().is_loopback() || self.report_keys_file.is_some(),
            "listen",
            format!(
                "{} is not a loopback address: set report_keys_file, or anyone who reaches it \
                 can list their own gateways (see doc/operations.md, Security)",
                self.listen
            ),
        );
        if let Some(path) = &self.report_keys_file {
            if let Err(errors) = Credentials::load(path) {
                for e in errors {
                    c.need(
                        false,
                        "report_keys_file",
                        format!("{}: {e}", path.display()),
                    );
                }
            }
        }
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
        for origin in &self.cors_origins {
            c.check("cors_origins", validate::web_origin(origin));
        }
        c.etcd("etcd", &self.etcd);
        self.etcd_auth.check(&mut c, &self.etcd);
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

/// The environment variables of the etcd credential flags.
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl EtcdAuthEnv for Env {
    const ETCD_USER: &'static str = "TETHER_IPCONFIG_ETCD_USER";
    const ETCD_PASSWORD_FILE: &'static str = "TETHER_IPCONFIG_ETCD_PASSWORD_FILE";
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
    /// HTTP listener; off loopback it needs --report-keys-file.
    #[arg(long, env = "TETHER_IPCONFIG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// File of `ID KEY` lines: reports must be signed with their gateway's key.
    #[arg(long, env = "TETHER_IPCONFIG_REPORT_KEYS_FILE")]
    pub report_keys_file: Option<PathBuf>,
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
    /// Browser origins allowed to read /ip_list across origins (CORS), comma-separated.
    #[arg(long, env = "TETHER_IPCONFIG_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// etcd client URLs, comma-separated: watch the gateways registered there; none = HTTP only.
    #[arg(long, env = "TETHER_IPCONFIG_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd_auth: EtcdAuthFlags<Env>,
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
        assert_eq!(config.listen.to_string(), "127.0.0.1:6789");
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
            cors_origins: Some(vec!["https://ok.example".into(), "ok.example".into()]),
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
                "workers",
                "cors_origins"
            ],
            "{err}"
        );
    }

    #[test]
    fn off_loopback_reports_must_be_signed() {
        let public = Opts {
            listen: Some("0.0.0.0:6789".parse().unwrap()),
            ..Opts::default()
        };
        let err = public.load().unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert_eq!(err.errors[0].key, "listen");
        assert!(err.errors[0]
            .message
            .starts_with("0.0.0.0:6789 is not a loopback address: set report_keys_file"));
        for loopback in ["127.0.0.1:6789", "127.0.0.2:1", "[::1]:6789"] {
            let opts = Opts {
                listen: Some(loopback.parse().unwrap()),
                ..Opts::default()
            };
            assert!(opts.load().is_ok(), "{loopback}");
        }

        let dir = std::env::temp_dir().join(format!("ipconfig-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, format!("gw-1 {}\n", "k".repeat(64))).unwrap();
        let signed = Opts {
            listen: Some("0.0.0.0:6789".parse().unwrap()),
            report_keys_file: Some(good),
            ..Opts::default()
        };
        assert!(signed.load().is_ok());
        // A bad file: every bad line listed, no key shown.
        let bad = dir.join("bad");
        std::fs::write(&bad, "gw-1 tooshort-secret\nnokey\n").unwrap();
        let opts = Opts {
            report_keys_file: Some(bad),
            ..Opts::default()
        };
        let err = opts.load().unwrap_err();
        let text = err.to_string();
        assert_eq!(err.errors.len(), 2, "{text}");
        assert!(
            text.contains("line 1: the key is 15 characters")
                && text.contains("line 2: expected `ID KEY`"),
            "{text}"
        );
        assert!(!text.contains("tooshort-secret"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_flag_is_a_key_and_its_help_shows_its_default() {
        let problems = tether_daemon::config::help::disagreements::<Opts, Config>(NO_DEFAULT);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
