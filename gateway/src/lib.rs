//! `tether-gateway`: holds very many long-lived client connections and forwards their
//! frames to the echo-node cluster.
//!
//! Threads: acceptor threads block in `accept` and hand each socket to the reactor with the
//! fewest connections; one reactor per core (pinned) runs a mio loop owning its clients, its
//! own link to every node, its buffers and its counters — nothing shared on the data path;
//! the admin thread serves `/metrics`, `/stats` and `/healthz`, summing the reactors'
//! counters when scraped.
//!
//! - [`gateway`]: start, reload, drain; [`config`]: keys, flags, env.
//! - [`acceptor`]: accept and balance sockets over reactors.
//! - [`reactor`]: the event loop; [`client`] and [`backend`]: its two kinds of socket.
//! - [`route`]: the route key that brings a node's reply back to its connection.
//! - [`dispatch`]: the in-flight table and routing decisions, sans-IO.
//! - [`balance`]: node selection, one algorithm per file; [`health`]: node up/down.
//! - [`login_gate`]: admission control for logins, sans-IO.
//! - [`rate_limit`], [`buffer_pool`], [`metrics`], [`admin`].
//! - [`fleet`]: the node set from a discovery source (the `nodes` list, or etcd).
//! - [`reporter`]: load reports to the ip-config service, and the etcd registration.
//! - [`state_link`]: each reactor's link to the state daemon (logins, heartbeats, pushes).

pub mod acceptor;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod buffer_pool;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod fleet;
pub mod gateway;
pub mod health;
pub mod login_gate;
pub mod metrics;
pub mod rate_limit;
pub mod reactor;
pub mod reporter;
pub mod route;
pub mod state_link;

pub use config::{Config, Opts};
pub use gateway::{run, Gateway, GatewayError};
