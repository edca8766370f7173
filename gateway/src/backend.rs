//! One reactor's link to one node: the socket, its state, the REQUESTs waiting for an
//! answer (kept for one re-send should the node fail), and the node's health.
//!
//! Every reactor has its own link to every node, so nothing here is shared.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;
use rustc_hash::FxHashMap;
use tether_daemon::nonblocking::write_queued;

use crate::health::Health;

/// The state of the socket to a node.
#[derive(Debug)]
pub enum Link {
    /// No socket; try again at `retry_at`.
    Idle {
        retry_at: Instant,
    },
    /// A non-blocking connect is under way.
    Connecting {
        stream: TcpStream,
        since: Instant,
    },
    Connected {
        stream: TcpStream,
    },
}

/// A REQUEST sent and not yet answered.
#[derive(Debug)]
pub struct InFlight {
    /// When the client's DATA arrived (the request latency runs from here).
    pub since: Instant,
    /// The payload, kept to re-send it once if the node fails.
    pub payload: Vec<u8>,
    /// Already re-sent once: a second failure is reported to the client.
    pub retried: bool,
}

/// Key of an in-flight request: (route key, request id).
pub type RequestKey = (u64, u64);

/// A node link: socket, buffers, in-flight requests, health.
#[derive(Debug)]
pub struct Backend {
    pub addr: SocketAddr,
    pub token: Token,
    pub link: Link,
    pub health: Health,
    /// Delay before the next reconnect attempt; doubles on each failure.
    pub backoff: Duration,
    pub out: Vec<u8>,
    pub written: usize,
    pub partial: Vec<u8>,
    pub inflight: FxHashMap<RequestKey, InFlight>,
    pub dirty: bool,
    pub writable: bool,
    /// REQUEST frames sent on this link since the gateway started (a running total).
    pub requests: u64,
}

/// Unwritten bytes for one node past which the node counts as stuck and its link is reset.
pub const MAX_BACKEND_QUEUE: usize = 64 << 20;

impl Backend {
    pub fn new(addr: SocketAddr, token: Token, now: Instant, backoff: Duration) -> Backend {
        Backend {
            addr,
            token,
            link: Link::Idle { retry_at: now },
            health: Health::new(),
            backoff,
            out: Vec::new(),
            written: 0,
            partial: Vec::new(),
            inflight: FxHashMap::default(),
            dirty: false,
            writable: false,
            requests: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Connected { .. })
    }

    pub fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    pub fn stream(&mut self) -> Option<&mut TcpStream> {
        match &mut self.link {
            Link::Connecting { stream, .. } | Link::Connected { stream } => Some(stream),
            Link::Idle { .. } => None,
        }
    }

    /// Writes queued frames until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        let Link::Connected { stream } = &mut self.link else {
            return Ok(());
        };
        write_queued(stream, &self.out, &mut self.written)?;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > (1 << 20) {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// The socket, while the link is connected (what reads take frames from).
    pub fn connected(&mut self) -> Option<&mut TcpStream> {
        match &mut self.link {
            Link::Connected { stream } => Some(stream),
            _ => None,
        }
    }

    /// Drops the socket and everything queued on it; the caller re-sends `inflight`.
    pub fn reset(&mut self, retry_at: Instant) -> Option<TcpStream> {
        let old = std::mem::replace(&mut self.link, Link::Idle { retry_at });
        self.out.clear();
        self.written = 0;
        self.partial.clear();
        self.writable = false;
        match old {
            Link::Connecting { stream, .. } | Link::Connected { stream } => Some(stream),
            Link::Idle { .. } => None,
        }
    }
}
