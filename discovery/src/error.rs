//! What can go wrong in discovery.

use tether_daemon::config::validate::{BadEndpoint, Invalid};
use thiserror::Error;

/// Why discovery or registration could not start, or a record could not be read.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// An `--etcd` value that is not `http://host:port` (or `host:port`).
    #[error(transparent)]
    Endpoint(#[from] BadEndpoint),
    /// The etcd password file could not be read.
    #[error("etcd_password_file {path}: {why}")]
    Password { path: String, why: String },
    /// No endpoint was given.
    #[error("no etcd endpoint given")]
    NoEndpoint,
    /// A record's value is not JSON with an `addr` string.
    #[error("the record of {id:?} is not JSON with an \"addr\": {why}")]
    Record { id: String, why: String },
    /// A record's id or `addr` that ipconfig would refuse in a report.
    #[error("the record of {id:?}: {field}: {why}")]
    Invalid {
        id: String,
        field: &'static str,
        why: Invalid,
    },
    /// A key under the prefix with no id after it.
    #[error("key {0:?} has no member id")]
    Key(String),
    /// The thread running the etcd client could not start.
    #[error("cannot start the etcd thread")]
    Thread(#[source] std::io::Error),
    /// etcd answered with an error or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A lease that etcd no longer knows (expired, or etcd lost its data).
    #[error("lease {0:x} is gone")]
    LeaseLost(i64),
}
