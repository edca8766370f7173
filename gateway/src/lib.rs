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
//! - [`transport`]: TLS and WebSocket between a client's socket and its v1 frames.
//! - [`route`]: the route key that brings a node's reply back to its connection.
//! - [`dispatch`]: the in-flight table and routing decisions, sans-IO.
//! - [`balance`]: node selection, one algorithm per file; [`health`]: node up/down.
//! - [`login_gate`]: admission control for logins, sans-IO.
//! - [`rate_limit`], [`buffer_pool`], [`metrics`], [`admin`].
//! - [`fleet`]: the node set from a discovery source (the `nodes` list, or etcd).
//! - [`reporter`]: load reports to the ip-config service, and the etcd registration;
//!   [`advertise`]: the id and addresses (per transport) they tell clients to dial.
//! - [`state_link`]: each reactor's link to the state daemon (logins, heartbeats, pushes).

mod acceptor;
mod admin;
mod advertise;
mod backend;
mod balance;
mod buffer_pool;
mod client;
mod config;
pub mod dispatch;
mod fleet;
mod gateway;
mod health;
mod login_gate;
pub mod metrics;
mod rate_limit;
mod reactor;
mod reporter;
mod room_members;
mod route;
mod state_link;
mod transport;

pub use admin::{Admin, AdminError};
pub use balance::Balance;
pub use config::{Config, Opts, NO_DEFAULT};
pub use gateway::run;
pub use transport::CertError;
