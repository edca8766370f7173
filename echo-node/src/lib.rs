//! `tether-echo-node`: the compute cluster behind Tether's gateways.
//!
//! A node answers backend frames (REQUEST → RESPONSE, NODE_PING → NODE_PONG) and, so that a
//! load generator can measure a node directly or through nginx/HAProxy, the client kinds too
//! (DATA echoed, PING → PONG, LOGIN → LOGIN_OK). With `work_us` > 0 every request costs that
//! much CPU on a bounded worker pool; when the pool's queue is full the request is answered
//! OVERLOADED instead of queueing more. With `publish_room` set, a node also publishes every
//! REQUEST's payload to that room (NODE_PUBLISH, beside the RESPONSE), which is how the demo's
//! room chat works: a line a client sends is echoed to it and reaches the room.
//!
//! Threads: one acceptor hands sockets to `reactors` mio loops (one connection lives on one
//! reactor for its whole life); `workers` compute threads hand results back to the owning
//! reactor through a channel and a `mio::Waker`.
//!
//! - [`echo`]: what to answer to each frame (sans-IO).
//! - [`connection`]: one client or gateway socket with its buffers.
//! - [`reactor`]: the per-thread event loop.
//! - [`acceptor`]: accepts and balances sockets over reactors.
//! - [`pool`]: the bounded compute pool.
//! - [`node`]: wiring, start and stop.

mod acceptor;
mod config;
mod connection;
mod echo;
mod node;
mod pool;
mod reactor;

pub use config::{Config, Opts, NO_DEFAULT};
pub use node::run;
