//! Fleet discovery: who is in the fleet, and how a daemon puts itself in it.
//!
//! Two kinds of member are discovered: **gateways** (ipconfig lists them to clients) and
//! **echo nodes** (gateways forward to them). A [`Discovery`] delivers the members under one
//! prefix as [`Event`]s: the whole set first ([`Event::Reset`]), then each change.
//!
//! - [`member`]: the registration record ([`Member`]) and the key layout in etcd.
//! - [`static`](StaticDiscovery): a fixed, in-memory set — today's default (`--node` lists;
//!   gateways reporting to ipconfig over HTTP).
//! - [`etcd`]: [`EtcdDiscovery`], an initial get then a watch from revision + 1, with the
//!   previous value on DELETE, re-synced from scratch after any failure.
//! - [`supervisor`]: [`Registration`], a key kept under a lease (TTL 10 s, keepalive every
//!   TTL/3), granted and put again after an etcd restart or a lost lease, revoked on stop.
//! - [`endpoints`]: parsing `--etcd URL[,URL…]`; the user to connect as.
//! - [`auth`]: the etcd credential keys every daemon with `--etcd` takes (`etcd_user`,
//!   `etcd_password_file`), declared once ([`EtcdAuth`], [`EtcdAuthFlags`]), and their checks.
//! - [`error`]: the typed errors ([`DiscoveryError`]).
//!
//! etcd work runs on a thread of its own (a current-thread tokio runtime), so the daemons
//! whose data path is mio (gateway, echo node) take no tokio runtime of their own.

mod auth;
mod endpoints;
mod error;
mod etcd;
mod member;
#[path = "static.rs"]
mod static_set;
mod supervisor;

use std::time::Duration;

pub use auth::{EtcdAuth, EtcdAuthEnv, EtcdAuthFlags};
pub use endpoints::Endpoints;
pub use error::DiscoveryError;
pub use etcd::EtcdDiscovery;
pub use member::{Member, Role};
pub use static_set::StaticDiscovery;
pub use supervisor::Registration;

/// A change in the set of members under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The complete set, replacing whatever was known: first, and again after a re-sync
    /// (etcd restarted, the watch was cancelled or compacted away).
    Reset(Vec<Member>),
    /// A member registered or refreshed its record.
    Put(Member),
    /// A member left (its lease was revoked or expired, or its key was deleted). `previous`
    /// is its last record, when etcd still had it (the watch asks for it: prev-kv).
    Delete {
        id: String,
        previous: Option<Member>,
    },
}

/// Where events go: called on the discovery's own thread, one event at a time, in order.
pub type Sink = Box<dyn FnMut(Event) + Send + 'static>;

/// A source of fleet membership.
pub trait Discovery: Send {
    /// Starts delivering events to `sink` — a [`Event::Reset`] first — until the returned
    /// [`Watch`] is stopped or dropped.
    fn watch(&self, sink: Sink) -> Result<Watch, DiscoveryError>;
}

/// A running watch; dropping it stops it (and waits for its thread).
pub struct Watch {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Watch {
    pub(crate) fn new(stop: impl FnOnce() + Send + 'static) -> Watch {
        Watch {
            stop: Some(Box::new(stop)),
        }
    }

    /// Stops delivering events; returns once the sink will not be called again.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("running", &self.stop.is_some())
            .finish()
    }
}

/// Lease time-to-live of a registration.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Delay before the first retry after an etcd failure; doubles up to [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two attempts to reach etcd.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(1);
