//! `tether-ipconfig`: the ip-config service. Gateways report their load every second; a
//! client asks `GET /ip_list` which gateways to dial and gets the best few, best first.
//!
//! Scoring is plato's, corrected: over each gateway's last `window` reports, the mean spare
//! bandwidth in GiB/s (dynamic) then the mean spare connections (static), both rounded to two
//! decimals, the means taken over the reports actually received. Gateways with equal scores
//! are shuffled per request so that a burst of new clients spreads over them.
//!
//! - [`config`]: keys, flags, env vars, ranges.
//! - [`report`]: the report body and its validation.
//! - [`credentials`]: `report_keys_file`, which keys sign for which gateway ids.
//! - [`auth`]: who may report: signature, clock window, replays, id binding (sans-IO).
//! - [`window`]: a gateway's last samples and their means (sans-IO).
//! - [`score`]: scores and ranking order (sans-IO).
//! - [`registry`]: gateways by id, stale eviction, ranking (sans-IO).
//! - [`snapshot`]: the pre-serialized list and the per-request tie shuffle.
//! - [`rng`]: the small generator behind the shuffle.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`cors`]: which browser origins may read `/ip_list` (sans-IO).
//! - [`http`]: the axum routes.
//! - [`fleet`]: gateways registered in etcd (`--etcd`), watched into the registry.
//! - [`service`]: start, stop, the rebuild task, [`run`].

mod auth;
mod config;
mod cors;
mod credentials;
mod fleet;
mod http;
pub mod metrics;
mod registry;
mod report;
mod rng;
mod score;
mod service;
mod snapshot;
mod window;

pub use config::{Config, Opts, NO_DEFAULT};
pub use credentials::Credentials;
pub use service::{run, Service, StartError};
