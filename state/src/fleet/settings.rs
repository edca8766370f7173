//! What the fleet is told by the daemon's configuration: whether it is on, the Redis Cluster
//! seeds, this host's id, the ACL user the daemon authenticates as, and the TTLs derived from
//! the session rules.

use std::path::Path;

use tether_daemon::secret::Secret;
use thiserror::Error;

use crate::config::Config;

/// How long a device's message id counter outlives its last push: past it, ids restart at
/// the clock floor (still above any id issued before).
const COUNTER_TTL_MS: u64 = 30 * 86_400_000;

/// The ACL user and password of `fleet_credentials_file`.
/// (`Debug` shows the password as `<redacted>`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Secret,
}

/// `fleet_credentials_file` could not be used.
#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: expected one line \"USER PASSWORD\" (an ACL user of the Redis cluster)")]
    Shape { path: String },
}

impl Credentials {
    /// One line: `USER PASSWORD`; blank lines and `#` comments ignored.
    pub fn read(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|e| CredentialsError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let shape = || CredentialsError::Shape {
            path: path.display().to_string(),
        };
        let line = lines.next().ok_or_else(shape)?;
        if lines.next().is_some() {
            return Err(shape());
        }
        let mut words = line.split_whitespace();
        let (Some(user), Some(password), None) = (words.next(), words.next(), words.next()) else {
            return Err(shape());
        };
        Ok(Credentials {
            user: user.to_string(),
            password: Secret::new(password.as_bytes().to_vec()),
        })
    }
}

/// The fleet's settings, as the engine thread and the loop use them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub seeds: Vec<String>,
    pub credentials: Credentials,
    /// A route's TTL: a heartbeat deadline plus the resume window plus one refresh period,
    /// so a dead host's sessions stay resumable elsewhere for their window.
    pub route_ttl_ms: u64,
    /// How long one round of refreshing every route's TTL takes (spread evenly over it):
    /// a third of a heartbeat deadline plus the resume window, 1 to 60 s.
    pub refresh_ms: u64,
    pub max_pending: usize,
    /// A device's durable queue outlives its newest push by the longest push TTL.
    pub pending_ttl_ms: u64,
    pub counter_ttl_ms: u64,
}

impl Settings {
    /// `None` when `fleet` is off.
    pub fn from_config(config: &Config) -> Result<Option<Settings>, CredentialsError> {
        if !config.fleet {
            return Ok(None);
        }
        let path =
            config
                .fleet_credentials_file
                .as_deref()
                .ok_or_else(|| CredentialsError::Shape {
                    path: "fleet_credentials_file (unset)".into(),
                })?;
        let credentials = Credentials::read(path)?;
        let refresh_ms =
            ((config.heartbeat_s * 3 + config.resume_window_s) * 1000 / 3).clamp(1000, 60_000);
        Ok(Some(Settings {
            host: config.fleet_host.clone(),
            seeds: config.fleet_redis.clone(),
            credentials,
            route_ttl_ms: config.heartbeat_s * 3000 + config.resume_window_s * 1000 + refresh_ms,
            refresh_ms,
            max_pending: config.max_pending,
            pending_ttl_ms: crate::config::MAX_TTL_S * 1000,
            counter_ttl_ms: COUNTER_TTL_MS,
        }))
    }
}
