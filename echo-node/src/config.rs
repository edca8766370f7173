//! The echo node's configuration: TOML keys, their flags and `TETHER_NODE_*` env vars.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::validate::{self, Checks};
use tether_daemon::config::{ConfigError, Validate};
use tether_daemon::logging::LogFormat;
use tether_discovery::{EtcdAuth, EtcdAuthEnv, EtcdAuthFlags};
use tether_proto::DEFAULT_MAX_BODY;

/// Keys with no value by default, for `--help`.
pub const NO_DEFAULT: &[tether_daemon::config::help::NoDefault] = &[("etcd_password_file", "")];

/// The environment variables of the etcd credential flags.
#[derive(Debug, Clone, Copy)]
pub struct Env;

impl EtcdAuthEnv for Env {
    const ETCD_USER: &'static str = "TETHER_NODE_ETCD_USER";
    const ETCD_PASSWORD_FILE: &'static str = "TETHER_NODE_ETCD_PASSWORD_FILE";
}

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
    /// The etcd user to register as (`etcd_user`, `etcd_password_file`).
    #[serde(flatten)]
    pub etcd_auth: EtcdAuth,
    /// This node's id in etcd; empty = `<hostname>-<port>`.
    pub id: String,
    /// The `host:port` gateways dial, registered in etcd; empty = `listen` (127.0.0.1 when it
    /// listens on every address — set it on a real host).
    pub advertise: String,
    /// A room to publish every REQUEST's payload to (NODE_PUBLISH on the same link, beside
    /// the RESPONSE); empty = publish nothing.
    pub publish_room: String,
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
            etcd_auth: EtcdAuth::default(),
            id: String::new(),
            advertise: String::new(),
            publish_room: String::new(),
            log_format: LogFormat::Text,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut c = Checks::new();
        c.need(self.queue >= 1, "queue", "must be at least 1");
        c.need(
            self.max_queued_bytes >= 64 * 1024,
            "max_queued_bytes",
            "must be at least 65536",
        );
        c.need(self.reactors <= 1024, "reactors", "at most 1024");
        c.need(self.workers <= 4096, "workers", "at most 4096");
        c.need(
            self.work_us <= 10_000_000,
            "work_us",
            "at most 10000000 (10 s)",
        );
        c.etcd("etcd", &self.etcd);
        self.etcd_auth.check(&mut c, &self.etcd);
        // What discovery accepts in a record (empty: the node derives one).
        if !self.id.is_empty() {
            c.check("id", validate::member_id(&self.id));
        }
        if !self.advertise.is_empty() {
            c.check("advertise", validate::dial_addr(&self.advertise));
        }
        c.need(
            self.publish_room.is_empty() || tether_proto::room::valid_name(&self.publish_room),
            "publish_room",
            "a room name is 1 to 128 bytes of UTF-8 without control characters",
        );
        c.into_errors()
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
/// `TETHER_NODE_<KEY>` from the environment when not given. Their help says no default:
/// `--help` appends the one `Config::default()` has.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct Opts {
    /// TOML config file.
    #[arg(long, env = "TETHER_NODE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "TETHER_NODE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Event-loop threads, 0 = one per core.
    #[arg(long, env = "TETHER_NODE_REACTORS")]
    pub reactors: Option<usize>,
    /// Compute threads for --work-us, 0 = one per core.
    #[arg(long, env = "TETHER_NODE_WORKERS")]
    pub workers: Option<usize>,
    /// Simulated CPU per request in µs, 0 = answer inline.
    #[arg(long, env = "TETHER_NODE_WORK_US")]
    pub work_us: Option<u64>,
    /// Requests waiting for a worker before OVERLOADED.
    #[arg(long, env = "TETHER_NODE_QUEUE")]
    pub queue: Option<usize>,
    /// Largest frame body accepted.
    #[arg(long, env = "TETHER_NODE_MAX_BODY")]
    pub max_body: Option<u32>,
    /// Unread replies per peer before the node stops reading from it.
    #[arg(long, env = "TETHER_NODE_MAX_QUEUED_BYTES")]
    pub max_queued_bytes: Option<usize>,
    /// Listen backlog.
    #[arg(long, env = "TETHER_NODE_BACKLOG")]
    pub backlog: Option<u32>,
    /// etcd client URLs, comma-separated: register there; none = not registered.
    #[arg(long, env = "TETHER_NODE_ETCD", value_delimiter = ',')]
    pub etcd: Option<Vec<String>>,
    #[command(flatten)]
    #[serde(flatten)]
    pub etcd_auth: EtcdAuthFlags<Env>,
    /// Node id in etcd; empty = `<hostname>-<port>`.
    #[arg(
        long,
        env = "TETHER_NODE_ID",
        help = "Node id in etcd; empty = <hostname>-<port>"
    )]
    pub id: Option<String>,
    /// host:port gateways dial, registered in etcd; empty = the listen address.
    #[arg(long, env = "TETHER_NODE_ADVERTISE")]
    pub advertise: Option<String>,
    /// Room to publish every REQUEST's payload to; empty = none.
    #[arg(long, env = "TETHER_NODE_PUBLISH_ROOM")]
    pub publish_room: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "TETHER_NODE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl Opts {
    /// The config these flags, their env vars and the `--config` file describe.
    pub fn load(&self) -> Result<Config, tether_daemon::config::ConfigErrors> {
        tether_daemon::config::load(self.config.as_deref(), self)
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

    #[test]
    fn ids_and_addresses_are_judged_as_discovery_judges_them() {
        let opts = Opts {
            id: Some("node 1".into()),
            advertise: Some("0.0.0.0:8890".into()),
            ..Opts::default()
        };
        let got: Vec<String> = opts
            .load()
            .unwrap_err()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "id: only printable ASCII characters, no spaces",
                "advertise: 0.0.0.0 is not an address clients can dial",
            ]
        );
    }

    #[test]
    fn the_publish_room_must_be_a_room_name() {
        let room = |name: &str| Opts {
            publish_room: Some(name.into()),
            ..Opts::default()
        };
        assert_eq!(room("lobby").load().unwrap().publish_room, "lobby");
        assert_eq!(room("").load().unwrap().publish_room, "");
        for bad in ["line\nbreak".to_string(), "x".repeat(129)] {
            let err = room(&bad).load().unwrap_err();
            assert_eq!(err.errors.len(), 1, "{err}");
            assert!(err.to_string().contains("publish_room"), "{err}");
        }
    }

    #[test]
    fn every_flag_is_a_key_and_its_help_shows_its_default() {
        let problems = tether_daemon::config::help::disagreements::<Opts, Config>(NO_DEFAULT);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
