//! The echo node's configuration: TOML keys, their flags and `TETHER_NODE_*` env vars.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::{ConfigError, Validate};
use tether_daemon::logging::LogFormat;
use tether_proto::DEFAULT_MAX_BODY;

/// Everything a node can be told. Every key has a flag of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Event-loop threads; 0 = one per core.
    pub reactors: usize,
    /// Compute threads used when `work_us` > 0; 0 = one per core.
    pub workers: usize,
    /// Simulated CPU per DATA or REQUEST, in microseconds; 0 answers inline on the reactor.
    pub work_us: u64,
    /// Requests waiting for a worker before the node answers OVERLOADED.
    pub queue: usize,
    /// Largest frame body accepted; a larger one is FRAME_TOO_LARGE.
    pub max_body: u32,
    /// Replies queued for a peer that does not read before the node stops reading from it.
    pub max_queued_bytes: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// etcd client URLs: register under `/tether/nodes/{id}` so gateways find this node;
    /// empty = not registered (gateways list it in `nodes`).
    pub etcd: Vec<String>,
    /// This node's id in etcd; empty = `<hostname>-<port>`.
    pub id: String,
    /// The `host:port` gateways dial, registered in etcd; empty = `listen` (127.0.0.1 when it
    /// listens on every address — set it on a real host).
    pub advertise: String,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8890)),
            reactors: 0,
            workers: 0,
            work_us: 0,
            queue: 1024,
            max_body: DEFAULT_MAX_BODY,
            max_queued_bytes: 4 << 20,
            backlog: 4096,
            etcd: Vec::new(),
            id: String::new(),
            advertise: String::new(),
            log_format: LogFormat::Text,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        if self.queue == 0 {
            errors.push(ConfigError::new("queue", "must be at least 1"));
        }
        if self.max_queued_bytes < 64 * 1024 {
            errors.push(ConfigError::new(
                "max_queued_bytes",
                "must be at least 65536",
            ));
        }
        if self.reactors > 1024 {
            errors.push(ConfigError::new("reactors", "at most 1024"));
        }
        if self.workers > 4096 {
            errors.push(ConfigError::new("workers", "at most 4096"));
        }
        if self.work_us > 10_000_000 {
            errors.push(ConfigError::new("work_us", "at most 10000000 (10 s)"));
        }
        if !self.etcd.is_empty() {
            if let Err(e) = tether_discovery::Endpoints::parse(&self.etcd) {
                errors.push(ConfigError::new("etcd", e.to_string()));
            }
        }
        if self.id.len() > 128 || self.id.contains('/') || self.id.contains(char::is_whitespace) {
            errors.push(ConfigError::new(
                "id",
                "at most 128 bytes, no '/' and no spaces",
            ));
        }
        if !self.advertise.is_empty()
            && !self
                .advertise
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        {
            errors.push(ConfigError::new("advertise", "host:port"));
        }
        errors
    }
}

impl Config {
    /// `reactors` with 0 resolved to the number of cores.
    pub fn reactor_count(&self) -> usize {
        resolve_threads(self.reactors)
    }

    /// `workers` with 0 resolved to the number of cores.
    pub fn worker_count(&self) -> usize {
        resolve_threads(self.workers)
    }
}

fn resolve_threads(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Command-line flags; each overrides the file's key of the same name and reads
/// `TETHER_NODE_<KEY>` from the environment when not given.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct Opts {
    /// TOML config file.
    #[arg(long, env = "TETHER_NODE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8890].
    #[arg(long, env = "TETHER_NODE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Event-loop threads, 0 = one per core [default: 0].
    #[arg(long, env = "TETHER_NODE_REACTORS")]
    pub reactors: Option<usize>,
    /// Compute threads for --work-us, 0 = one per core [default: 0].
    #[arg(long, env = "TETHER_NODE_WORKERS")]
    pub workers: Option<usize>,
    /// Simulated CPU per request in µs, 0 = answer inline [default: 0].
    #[arg(long, env = "TETHER_NODE_WORK_US")]
    pub work_us: Option<u64>,
    /// Requests waiting for a worker before OVERLOADED [default: 1024].
    #[arg(long, env = "TETHER_NODE_QUEUE")]
    pub queue: Option<usize>,
    /// Largest frame body accepted [default: 65536].
    #[arg(long, env = "TETHER_NODE_MAX_BODY")]
    pub max_body: Option<u32>,
    /// Unread replies per peer before the node stops reading from it [default: 4194304].
    #[arg(long, env = "TETHER_NODE_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Listen backlog [default: 4096].
    #[arg(long, env = "TETHER_NODE_BACKLOG")]
    pub backlog: Option<u32>,
    /// etcd client URLs, comma-separated: register there [default: none].
    #[arg(long, env = "TETHER_NODE_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    /// Node id in etcd [default: <hostname>-<port>].
    #[arg(long, env = "TETHER_NODE_ID")]
    pub id: Option<String>,
    /// host:port gateways dial, registered in etcd [default: the listen address].
    #[arg(long, env = "TETHER_NODE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "TETHER_NODE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Opts {
    /// The config these flags, their env vars and the `--config` file describe.
    pub fn load(&self) -> Result<Config, tether_daemon::config::ConfigErrors> {
        tether_daemon::config::load(self.config.as_deref(), self, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_and_no_flags_gives_the_loopback_defaults() {
        let config = Opts::default().load().unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:8890");
    }

    #[test]
    fn flags_override_and_errors_are_listed_together() {
        let opts = Opts {
            listen: Some("127.0.0.1:9999".parse().unwrap()),
            work_us: Some(50),
            ..Opts::default()
        };
        let config = opts.load().unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.work_us, 50);

        let bad = Opts {
            queue: Some(0),
            max_queued_bytes: Some(1),
            ..Opts::default()
        };
        let err = bad.load().unwrap_err();
        assert_eq!(err.errors.len(), 2, "{err}");
    }
}
