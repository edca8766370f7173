//! The state daemon's configuration: TOML keys, their flags and `TETHER_STATE_*` env vars,
//! with the ranges `check` enforces.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use tether_daemon::config::help::NoDefault;
use tether_daemon::config::validate::{self, Checks};
use tether_daemon::config::{ConfigError, ConfigErrors, Validate};
use tether_daemon::logging::LogFormat;
use tether_daemon::secret::Secret;

use crate::journal::FsyncPolicy;
use crate::token::{KeySet, KeysError, Policy};

/// Keys with no value by default, for `--help`.
pub const NO_DEFAULT: &[NoDefault] = &[
    ("jwt_secret_file", ""),
    ("jwt_keys_file", ""),
    (
        "api_tokens_file",
        "the push API is open, allowed on loopback only",
    ),
    ("allow_uids", "the daemon's own uid"),
    ("allow_gids", "the socket file's group"),
    ("fleet_credentials_file", "required with fleet"),
];
/// Largest `jwt_cache_entries`.
const MAX_TOKEN_CACHE: usize = 1 << 24;
/// Longest `jwt_max_lifetime_s`: one year.
const MAX_TOKEN_LIFETIME_S: u64 = 365 * 86_400;
/// Largest message TTL a push may ask for: 30 days.
pub(crate) const MAX_TTL_S: u64 = 30 * 86_400;

/// What a second login of the same device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateLogin {
    /// The new login takes over: the old connection is KICKed, its pushes move over.
    Kick,
    /// The new login is refused with AUTH_FAILED while the old session lives.
    Refuse,
}

/// Everything the daemon can be told. Every key has a flag of the same name and a
/// `TETHER_STATE_<KEY>` env var.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Unix socket gateways connect to.
    pub socket: PathBuf,
    /// HTTP listener for the push API and `/healthz`.
    pub http: SocketAddr,
    /// Bearer tokens of the push API (`NAME SHA256 SCOPES` lines; see `api_tokens.rs`).
    /// Re-read on SIGHUP. Without it the API is open, which `check` allows on loopback only.
    pub api_tokens_file: Option<PathBuf>,
    /// HTTP listener for `/metrics` and `/healthz`, unauthenticated.
    pub metrics: SocketAddr,
    /// Uids allowed on the state socket; unset: the daemon's own.
    pub allow_uids: Option<Vec<u32>>,
    /// Gids (primary or supplementary) allowed on the state socket; unset: the socket's group.
    pub allow_gids: Option<Vec<u32>>,
    /// Journal directory (sessions and unacknowledged pushes).
    pub journal: PathBuf,
    /// When the journal fsyncs: always, everysec or no.
    pub journal_fsync: FsyncPolicy,
    /// Compact (snapshot) the journal once it grows past this many bytes.
    pub compact_bytes: u64,
    /// HS256 key login tokens are signed with (tokens without `kid`). Never printed.
    pub jwt_secret: Secret,
    /// A file holding the key (trailing newline ignored), instead of `jwt_secret`.
    pub jwt_secret_file: Option<PathBuf>,
    /// A JWK set file (RFC 7517): ES256, RS256 public keys and HS256 keys, chosen by `kid`.
    pub jwt_keys_file: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf`, `iat` and the lifetime, seconds.
    pub jwt_leeway_s: u64,
    /// Longest token lifetime accepted: `exp − iat`, or `exp − now` without `iat`.
    pub jwt_max_lifetime_s: u64,
    /// Accepted `aud` values; empty: tokens naming an audience are refused.
    pub jwt_audiences: Vec<String>,
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub jwt_issuers: Vec<String>,
    /// ES256/RS256 tokens kept as verified, so one presented again skips the signature check.
    pub jwt_cache_entries: usize,
    /// Heartbeat interval told to clients; no heartbeat for 3 × this is a KICK.
    pub heartbeat_s: u64,
    /// How long a closed or timed-out session can be resumed, seconds.
    pub resume_window_s: u64,
    pub duplicate_login: DuplicateLogin,
    /// Sessions held at once; a login past this is refused with OVERLOADED.
    pub max_sessions: usize,
    /// Unacknowledged pushes per session; a push past this is answered 429.
    pub max_pending: usize,
    /// Payload bytes of unacknowledged pushes, all sessions; a push past this is answered
    /// 503 with status "full".
    pub max_pending_bytes: u64,
    /// Largest push payload, bytes.
    pub max_payload: usize,
    /// TTL of a push that names none, seconds.
    pub push_ttl_s: u64,
    /// First retransmit delay of an unacknowledged push; it doubles with each send.
    pub push_retry_base_ms: u64,
    /// Longest retransmit delay.
    pub push_retry_cap_ms: u64,
    /// Sends of one push (the first included) before it waits for a RESUME or its TTL.
    pub push_retry_max: u32,
    /// A room's window of messages closes this long after it opened, and leaves as one
    /// ROOM frame per member; 0 sends every message alone.
    pub room_merge_ms: u64,
    /// A window closes at this many messages, however young.
    pub room_merge_max: usize,
    /// Messages each room keeps for members that ask again (JOIN `after`); 0: none.
    pub room_history: usize,
    /// Nothing older than this stays in a room's history, seconds.
    pub room_history_s: u64,
    /// Rooms whose name starts with one of these keep only the latest message of a window.
    pub room_conflate: Vec<String>,
    /// Rooms one session may be in.
    pub max_rooms_per_session: usize,
    /// Rooms the daemon holds (with a member, an open window or history); past this a new
    /// room is refused.
    pub max_rooms: usize,
    /// Join a fleet: the router table, durable pushes and the bus in a Redis 7 Cluster
    /// (`doc/fleet.md`). Off: this host works alone, with no Redis.
    pub fleet: bool,
    /// Redis Cluster seed nodes, `HOST:PORT`; the rest of the cluster is found from them.
    pub fleet_redis: Vec<String>,
    /// This host's id in the fleet, unique among its hosts (the router table names it).
    pub fleet_host: String,
    /// The Redis ACL user and password the daemon authenticates as: one line `USER PASSWORD`.
    pub fleet_credentials_file: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: runtime_dir().join("state.sock"),
            http: SocketAddr::from(([127, 0, 0, 1], 8902)),
            api_tokens_file: None,
            metrics: SocketAddr::from(([127, 0, 0, 1], 8903)),
            allow_uids: None,
            allow_gids: None,
            journal: std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/tether-state")),
            journal_fsync: FsyncPolicy::EverySec,
            compact_bytes: 64 << 20,
            jwt_secret: Secret::default(),
            jwt_secret_file: None,
            jwt_keys_file: None,
            jwt_leeway_s: 30,
            jwt_max_lifetime_s: 86_400,
            jwt_audiences: Vec::new(),
            jwt_issuers: Vec::new(),
            jwt_cache_entries: 65_536,
            heartbeat_s: 30,
            resume_window_s: 30,
            duplicate_login: DuplicateLogin::Kick,
            max_sessions: 2_000_000,
            max_pending: 1024,
            max_pending_bytes: 256 << 20,
            max_payload: 65_536,
            push_ttl_s: 3600,
            push_retry_base_ms: 1000,
            push_retry_cap_ms: 30_000,
            push_retry_max: 8,
            room_merge_ms: 50,
            room_merge_max: 64,
            room_history: 1024,
            room_history_s: 300,
            room_conflate: Vec::new(),
            max_rooms_per_session: 64,
            max_rooms: 100_000,
            fleet: false,
            fleet_redis: Vec::new(),
            fleet_host: String::new(),
            fleet_credentials_file: None,
            log_format: LogFormat::Text,
        }
    }
}

/// `$RUNTIME_DIRECTORY` (set by systemd's `RuntimeDirectory=`), else /run/tether.
fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/tether"))
}

impl Validate for Config {
    fn validate(&self) -> Vec<ConfigError> {
        let mut c = Checks::new();
        c.need(
            !self.jwt_secret.is_empty()
                || self.jwt_secret_file.is_some()
                || self.jwt_keys_file.is_some(),
            "jwt_secret",
            "required (or jwt_secret_file, or jwt_keys_file): logins cannot be checked without it",
        );
        c.need(
            self.jwt_secret.is_empty() || self.jwt_secret_file.is_none(),
            "jwt_secret_file",
            "give jwt_secret or jwt_secret_file, not both",
        );
        if let Some(path) = &self.jwt_secret_file {
            c.need(
                std::fs::metadata(path).is_ok_and(|m| m.is_file()),
                "jwt_secret_file",
                "not a readable file",
            );
        }
        if self.jwt_keys_file.is_some() {
            c.check("jwt_keys_file", self.keys());
        }
        c.need(
            (60..=MAX_TOKEN_LIFETIME_S).contains(&self.jwt_max_lifetime_s),
            "jwt_max_lifetime_s",
            "between 60 and 31536000 (one year)",
        );
        c.need(
            self.jwt_cache_entries <= MAX_TOKEN_CACHE,
            "jwt_cache_entries",
            "at most 16777216",
        );
        for (key, list) in [
            ("jwt_audiences", &self.jwt_audiences),
            ("jwt_issuers", &self.jwt_issuers),
        ] {
            c.need(!list.iter().any(String::is_empty), key, "no empty value");
        }
        c.check("socket", validate::socket_path(&self.socket));
        self.validate_access(&mut c);
        self.validate_fleet(&mut c);
        c.need(
            self.compact_bytes >= 1 << 20,
            "compact_bytes",
            "at least 1048576 (1 MiB)",
        );
        c.need(self.jwt_leeway_s <= 3600, "jwt_leeway_s", "at most 3600");
        c.need(
            (1..=3600).contains(&self.heartbeat_s),
            "heartbeat_s",
            "between 1 and 3600",
        );
        c.need(
            self.resume_window_s <= 86_400,
            "resume_window_s",
            "at most 86400 (one day)",
        );
        c.need(
            (1..=100_000_000).contains(&self.max_sessions),
            "max_sessions",
            "between 1 and 100000000",
        );
        c.need(
            (1..=1_000_000).contains(&self.max_pending),
            "max_pending",
            "between 1 and 1000000",
        );
        c.need(
            self.max_pending_bytes >= self.max_payload as u64,
            "max_pending_bytes",
            "at least max_payload",
        );
        c.need(
            (1..=crate::link::MAX_PAYLOAD).contains(&self.max_payload),
            "max_payload",
            "between 1 and 1048000",
        );
        c.need(
            (1..=MAX_TTL_S).contains(&self.push_ttl_s),
            "push_ttl_s",
            "between 1 and 2592000 (30 days)",
        );
        c.need(
            (1..=3_600_000).contains(&self.push_retry_base_ms),
            "push_retry_base_ms",
            "between 1 and 3600000",
        );
        c.need(
            self.push_retry_cap_ms >= self.push_retry_base_ms
                && self.push_retry_cap_ms <= 86_400_000,
            "push_retry_cap_ms",
            "at least push_retry_base_ms and at most 86400000",
        );
        c.need(
            (1..=64).contains(&self.push_retry_max),
            "push_retry_max",
            "between 1 and 64",
        );
        c.need(
            self.room_merge_ms <= 10_000,
            "room_merge_ms",
            "at most 10000",
        );
        c.need(
            (1..=100_000).contains(&self.room_merge_max),
            "room_merge_max",
            "between 1 and 100000",
        );
        c.need(
            self.room_history <= 1_000_000,
            "room_history",
            "at most 1000000",
        );
        c.need(
            (1..=86_400).contains(&self.room_history_s),
            "room_history_s",
            "between 1 and 86400",
        );
        c.need(
            self.room_conflate
                .iter()
                .all(|p| tether_proto::room::valid_name(p)),
            "room_conflate",
            "room name prefixes: 1-128 bytes without control characters",
        );
        c.need(
            (1..=4096).contains(&self.max_rooms_per_session),
            "max_rooms_per_session",
            "between 1 and 4096",
        );
        c.need(
            (1..=10_000_000).contains(&self.max_rooms),
            "max_rooms",
            "between 1 and 10000000",
        );
        c.into_errors()
    }
}

impl Config {
    /// The push API's tokens, and the listeners: an open push API only on loopback.
    /// With `fleet`: seeds, a host id, and credentials (every control plane authenticates).
    fn validate_fleet(&self, c: &mut Checks) {
        if !self.fleet {
            return;
        }
        c.need(
            !self.fleet_redis.is_empty(),
            "fleet_redis",
            "required with fleet: the Redis Cluster seed nodes, HOST:PORT",
        );
        for seed in &self.fleet_redis {
            let port = seed.rsplit_once(':').and_then(|(h, p)| {
                (!h.is_empty()).then_some(())?;
                p.parse::<u16>().ok()
            });
            c.need(
                port.is_some_and(|p| p != 0),
                "fleet_redis",
                format!("{seed:?} is not HOST:PORT"),
            );
        }
        c.need(
            !self.fleet_host.is_empty()
                && self.fleet_host.len() <= 128
                && !self
                    .fleet_host
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control()),
            "fleet_host",
            "required with fleet: 1 to 128 characters, no spaces, unique in the fleet",
        );
        match &self.fleet_credentials_file {
            Some(path) => c.check(
                "fleet_credentials_file",
                crate::fleet::Credentials::read(path).map(drop),
            ),
            None => c.need(
                false,
                "fleet_credentials_file",
                "required with fleet: the Redis ACL user the daemon authenticates as",
            ),
        }
    }

    fn validate_access(&self, c: &mut Checks) {
        match &self.api_tokens_file {
            Some(path) => match crate::api_tokens::Access::load(Some(path)) {
                Ok(_) => {}
                Err(crate::api_tokens::TokensFileError::Lines { errors, .. }) => {
                    for e in errors {
                        c.need(false, "api_tokens_file", e.to_string());
                    }
                }
                Err(e) => c.need(false, "api_tokens_file", e.to_string()),
            },
            None => c.need(
                self.http.ip().is_loopback(),
                "api_tokens_file",
                format!(
                    "required when http ({}) is not a loopback address: without tokens, \
                     anyone who reaches it can push to any device and read its session",
                    self.http
                ),
            ),
        }
        c.need(
            self.metrics != self.http,
            "metrics",
            "must differ from http: metrics are served unauthenticated on their own listener",
        );
    }

    /// The keys login tokens are checked with: `jwt_secret` (or `jwt_secret_file`'s contents
    /// without a trailing newline) as an HS256 key without `kid`, plus `jwt_keys_file`'s set.
    pub fn keys(&self) -> Result<KeySet, KeysError> {
        let mut keys = match &self.jwt_secret_file {
            Some(path) => {
                let read = |reason: String| KeysError::Read {
                    path: path.display().to_string(),
                    reason,
                };
                let mut bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    return Err(read("the JWT secret file is empty".into()));
                }
                KeySet::hs256(&bytes)
            }
            None if !self.jwt_secret.is_empty() => KeySet::hs256(self.jwt_secret.expose()),
            None => KeySet::default(),
        };
        if let Some(path) = &self.jwt_keys_file {
            keys = keys.merge(KeySet::read_jwks(path)?)?;
        }
        Ok(keys)
    }

    /// What token claims must satisfy.
    pub fn token_policy(&self) -> Policy {
        Policy {
            leeway_s: self.jwt_leeway_s,
            max_lifetime_s: self.jwt_max_lifetime_s,
            audiences: self.jwt_audiences.clone(),
            issuers: self.jwt_issuers.clone(),
        }
    }
}

/// Command-line flags; each overrides the file's key of the same name and reads
/// `TETHER_STATE_<KEY>` from the environment when not given. Their help says no default:
/// `--help` appends the one `Config::default()` has.
#[derive(Debug, Default, Clone, Args, Serialize)]
pub struct Opts {
    /// TOML config file.
    #[arg(long, env = "TETHER_STATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Unix socket gateways connect to, by default in $RUNTIME_DIRECTORY (else /run/tether).
    #[arg(long, env = "TETHER_STATE_SOCKET")]
    pub socket: Option<PathBuf>,
    /// HTTP listener for the push API.
    #[arg(long, env = "TETHER_STATE_HTTP")]
    pub http: Option<SocketAddr>,
    /// Push API bearer tokens: lines of NAME SHA256 SCOPES; re-read on SIGHUP.
    #[arg(long, env = "TETHER_STATE_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// HTTP listener for /metrics and /healthz (unauthenticated).
    #[arg(long, env = "TETHER_STATE_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Uids allowed to connect to the state socket, comma-separated.
    #[arg(long, env = "TETHER_STATE_ALLOW_UIDS", value_delimiter = ',')]
    pub allow_uids: Option<Vec<u32>>,
    /// Gids allowed to connect to the state socket (primary or supplementary), comma-separated.
    #[arg(long, env = "TETHER_STATE_ALLOW_GIDS", value_delimiter = ',')]
    pub allow_gids: Option<Vec<u32>>,
    /// Journal directory, by default $STATE_DIRECTORY (else /var/lib/tether-state).
    #[arg(long, env = "TETHER_STATE_JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Journal fsync policy: always, everysec or no.
    #[arg(long, env = "TETHER_STATE_JOURNAL_FSYNC")]
    pub journal_fsync: Option<FsyncPolicy>,
    /// Compact the journal past this many bytes.
    #[arg(long, env = "TETHER_STATE_COMPACT_BYTES")]
    pub compact_bytes: Option<u64>,
    /// HS256 key for login tokens (prefer the env var or a file: flags show in `ps`).
    #[arg(long, env = "TETHER_STATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// File holding the HS256 key.
    #[arg(long, env = "TETHER_STATE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// JWK set file: ES256/RS256 public keys and HS256 keys, chosen by a token's kid.
    #[arg(long, env = "TETHER_STATE_JWT_KEYS_FILE")]
    pub jwt_keys_file: Option<PathBuf>,
    /// Clock skew allowed on exp, nbf, iat and the lifetime, seconds.
    #[arg(long, env = "TETHER_STATE_JWT_LEEWAY_S")]
    pub jwt_leeway_s: Option<u64>,
    /// Longest token lifetime accepted (exp - iat, or exp - now without iat), seconds.
    #[arg(long, env = "TETHER_STATE_JWT_MAX_LIFETIME_S")]
    pub jwt_max_lifetime_s: Option<u64>,
    /// Accepted aud values, comma-separated; none: tokens naming an audience are refused.
    #[arg(long, env = "TETHER_STATE_JWT_AUDIENCES", value_delimiter = ',')]
    pub jwt_audiences: Option<Vec<String>>,
    /// Accepted iss values, comma-separated; none: iss is not checked.
    #[arg(long, env = "TETHER_STATE_JWT_ISSUERS", value_delimiter = ',')]
    pub jwt_issuers: Option<Vec<String>>,
    /// ES256/RS256 tokens remembered as verified (0 = none); cleared by every reload.
    #[arg(long, env = "TETHER_STATE_JWT_CACHE_ENTRIES")]
    pub jwt_cache_entries: Option<usize>,
    /// Heartbeat interval, seconds; 3 × this without one is a KICK.
    #[arg(long, env = "TETHER_STATE_HEARTBEAT_S")]
    pub heartbeat_s: Option<u64>,
    /// How long a closed session can be resumed, seconds.
    #[arg(long, env = "TETHER_STATE_RESUME_WINDOW_S")]
    pub resume_window_s: Option<u64>,
    /// A device logging in again: kick the old connection or refuse the new.
    #[arg(long, env = "TETHER_STATE_DUPLICATE_LOGIN")]
    pub duplicate_login: Option<DuplicateLogin>,
    /// Sessions held at once.
    #[arg(long, env = "TETHER_STATE_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Unacknowledged pushes per session.
    #[arg(long, env = "TETHER_STATE_MAX_PENDING")]
    pub max_pending: Option<usize>,
    /// Payload bytes of unacknowledged pushes, all sessions.
    #[arg(long, env = "TETHER_STATE_MAX_PENDING_BYTES")]
    pub max_pending_bytes: Option<u64>,
    /// Largest push payload in bytes.
    #[arg(long, env = "TETHER_STATE_MAX_PAYLOAD")]
    pub max_payload: Option<usize>,
    /// TTL of a push that names none, seconds.
    #[arg(long, env = "TETHER_STATE_PUSH_TTL_S")]
    pub push_ttl_s: Option<u64>,
    /// First retransmit delay, ms; doubles per send.
    #[arg(long, env = "TETHER_STATE_PUSH_RETRY_BASE_MS")]
    pub push_retry_base_ms: Option<u64>,
    /// Longest retransmit delay, ms.
    #[arg(long, env = "TETHER_STATE_PUSH_RETRY_CAP_MS")]
    pub push_retry_cap_ms: Option<u64>,
    /// Sends of one push before it waits for a resume or its TTL.
    #[arg(long, env = "TETHER_STATE_PUSH_RETRY_MAX")]
    pub push_retry_max: Option<u32>,
    /// A room's window closes this long after it opened, ms; 0 sends every message alone.
    #[arg(long, env = "TETHER_STATE_ROOM_MERGE_MS")]
    pub room_merge_ms: Option<u64>,
    /// A room's window closes at this many messages.
    #[arg(long, env = "TETHER_STATE_ROOM_MERGE_MAX")]
    pub room_merge_max: Option<usize>,
    /// Messages each room keeps for members that ask again; 0: none.
    #[arg(long, env = "TETHER_STATE_ROOM_HISTORY")]
    pub room_history: Option<usize>,
    /// Age past which a room's history forgets a message, seconds.
    #[arg(long, env = "TETHER_STATE_ROOM_HISTORY_S")]
    pub room_history_s: Option<u64>,
    /// Room name prefixes whose rooms keep only the latest message of a window, comma-separated.
    #[arg(long, env = "TETHER_STATE_ROOM_CONFLATE", value_delimiter = ',')]
    pub room_conflate: Option<Vec<String>>,
    /// Rooms one session may be in.
    #[arg(long, env = "TETHER_STATE_MAX_ROOMS_PER_SESSION")]
    pub max_rooms_per_session: Option<usize>,
    /// Rooms the daemon holds.
    #[arg(long, env = "TETHER_STATE_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Join a fleet (router table, durable pushes and bus in Redis Cluster); `--fleet` alone
    /// means true.
    #[arg(long, env = "TETHER_STATE_FLEET", num_args = 0..=1, default_missing_value = "true")]
    pub fleet: Option<bool>,
    /// Redis Cluster seed nodes, HOST:PORT, comma-separated.
    #[arg(long, env = "TETHER_STATE_FLEET_REDIS", value_delimiter = ',')]
    pub fleet_redis: Option<Vec<String>>,
    /// This host's id in the fleet.
    #[arg(long, env = "TETHER_STATE_FLEET_HOST")]
    pub fleet_host: Option<String>,
    /// File with the Redis ACL user and password: one line USER PASSWORD.
    #[arg(long, env = "TETHER_STATE_FLEET_CREDENTIALS_FILE")]
    pub fleet_credentials_file: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "TETHER_STATE_LOG_FORMAT")]
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
    fn defaults_need_only_a_secret() {
        let errors = Opts::default().load().unwrap_err().to_string();
        assert!(errors.contains("jwt_secret"), "{errors}");
        let opts = Opts {
            jwt_secret: Some(Secret::from("s3cret".to_string())),
            ..Opts::default()
        };
        let config = opts.load().unwrap();
        assert_eq!(config.http.to_string(), "127.0.0.1:8902");
        assert_eq!(config.journal_fsync, FsyncPolicy::EverySec);
        assert_eq!((config.heartbeat_s, config.resume_window_s), (30, 30));
        assert_eq!(format!("{:?}", config.keys().unwrap()), "[(no kid) HS256]");
        assert_eq!(config.jwt_max_lifetime_s, 86_400);
    }

    #[test]
    fn every_error_is_listed_at_once_and_the_secret_never_shows() {
        let opts = Opts {
            jwt_secret: Some(Secret::from("do-not-print-me".to_string())),
            heartbeat_s: Some(0),
            push_retry_base_ms: Some(5000),
            push_retry_cap_ms: Some(10),
            max_pending: Some(0),
            ..Opts::default()
        };
        let errors = opts.load().unwrap_err().to_string();
        for key in ["heartbeat_s", "push_retry_cap_ms", "max_pending"] {
            assert!(errors.contains(key), "{key} missing from {errors}");
        }
        assert!(!errors.contains("do-not-print-me"));
        let config = Opts {
            jwt_secret: Some(Secret::from("do-not-print-me".to_string())),
            ..Opts::default()
        }
        .load()
        .unwrap();
        let rendered = tether_daemon::config::render(&config);
        assert!(!rendered.contains("do-not-print-me"), "{rendered}");
        assert!(
            rendered.contains("jwt_secret = \"<redacted>\""),
            "{rendered}"
        );
        assert!(!format!("{config:?}").contains("do-not-print-me"));
    }

    #[test]
    fn an_open_push_api_is_refused_off_loopback_and_token_files_are_checked_line_by_line() {
        let base = Opts {
            jwt_secret: Some(Secret::from("s".to_string())),
            ..Opts::default()
        };
        let config = base.load().unwrap();
        assert_eq!(config.metrics.to_string(), "127.0.0.1:8903");
        assert_eq!((config.allow_uids.clone(), config.allow_gids), (None, None));
        for ok in ["127.0.0.2:8902", "[::1]:8902"] {
            let opts = Opts {
                http: Some(ok.parse().unwrap()),
                ..base.clone()
            };
            assert!(opts.load().is_ok(), "{ok}");
        }
        let public = Opts {
            http: Some("0.0.0.0:8902".parse().unwrap()),
            metrics: Some("127.0.0.1:8902".parse().unwrap()),
            ..base.clone()
        };
        let errors = public.load().unwrap_err().to_string();
        assert!(
            errors.contains(
                "api_tokens_file: required when http (0.0.0.0:8902) is not a loopback address"
            ),
            "{errors}"
        );
        assert!(!errors.contains("metrics:"), "{errors}");

        let dir = std::env::temp_dir().join(format!("tether-state-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api-tokens");
        let good = crate::api_tokens::hash_hex(b"tok");
        std::fs::write(
            &file,
            format!("a {good} push\nb {good} push\nc nothex kick\n"),
        )
        .unwrap();
        let with_file = Opts {
            api_tokens_file: Some(file.clone()),
            ..public.clone()
        };
        let errors = with_file.load().unwrap_err().to_string();
        assert!(
            errors.contains("api_tokens_file: line 2: the same token hash"),
            "{errors}"
        );
        assert!(
            errors.contains("api_tokens_file: line 3: the second field"),
            "{errors}"
        );
        assert!(!errors.contains("required when http"), "{errors}");
        std::fs::write(&file, format!("a {good} push\n")).unwrap();
        assert!(with_file.load().is_ok());
        let missing = Opts {
            api_tokens_file: Some(dir.join("nope")),
            ..base.clone()
        };
        let errors = missing.load().unwrap_err().to_string();
        assert!(errors.contains("api_tokens_file: cannot read"), "{errors}");
        let same = Opts {
            metrics: Some("127.0.0.1:8902".parse().unwrap()),
            ..base
        };
        let errors = same.load().unwrap_err().to_string();
        assert!(
            errors.contains("metrics: must differ from http"),
            "{errors}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_flag_is_a_key_and_its_help_shows_its_default() {
        let problems = tether_daemon::config::help::disagreements::<Opts, Config>(NO_DEFAULT);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
