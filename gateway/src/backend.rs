//! One reactor's link to one node: the socket, its state, its output queue and the node's
//! health. The requests waiting for an answer are the dispatcher's (`crate::dispatch`).
//!
//! Every reactor has its own link to every node, so nothing here is shared.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;
use tether_daemon::heap::shrink_idle;
use tether_daemon::nonblocking::write_queued;

use crate::health::Health;

/// The state of the socket to a node.
#[derive(Debug)]
pub(crate) enum Link {
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

/// A node link: socket, buffers, health. (Its requests are in the reactor's dispatcher.)
#[derive(Debug)]
pub(crate) struct Backend {
    pub addr: SocketAddr,
    pub token: Token,
    pub link: Link,
    pub health: Health,
    /// Delay before the next reconnect attempt; doubles on each failure.
    pub backoff: Duration,
    pub out: Vec<u8>,
    pub written: usize,
    pub partial: Vec<u8>,
    /// When the socket last took bytes, or when output began waiting (see
    /// [`Backend::stalled`]).
    pub progress: Instant,
    /// The last flush left bytes unwritten.
    left_waiting: bool,
    pub dirty: bool,
    pub writable: bool,
    /// REQUEST frames sent on this link since the gateway started (a running total).
    pub requests: u64,
}

impl Backend {
    pub(crate) fn new(addr: SocketAddr, token: Token, now: Instant, backoff: Duration) -> Backend {
        Backend {
            addr,
            token,
            link: Link::Idle { retry_at: now },
            health: Health::new(),
            backoff,
            out: Vec::new(),
            written: 0,
            partial: Vec::new(),
            progress: now,
            left_waiting: false,
            dirty: false,
            writable: false,
            requests: 0,
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        matches!(self.link, Link::Connected { .. })
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    pub(crate) fn stream(&mut self) -> Option<&mut TcpStream> {
        match &mut self.link {
            Link::Connecting { stream, .. } | Link::Connected { stream } => Some(stream),
            Link::Idle { .. } => None,
        }
    }

    /// Writes queued frames until done or the socket would block.
    /// `now` marks progress when the socket took bytes or had nothing waiting.
    pub(crate) fn flush(&mut self, now: Instant) -> io::Result<()> {
        let Link::Connected { stream } = &mut self.link else {
            return Ok(());
        };
        let before = self.written;
        write_queued(stream, &self.out, &mut self.written)?;
        // Progress: the socket took bytes, or nothing had been left waiting by the last
        // flush (what waits now was queued since).
        if self.written > before || !self.left_waiting {
            self.progress = now;
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > (1 << 20) {
            self.out.drain(..self.written);
            self.written = 0;
        }
        self.left_waiting = self.pending() > 0;
        Ok(())
    }

    /// Frees link buffers a burst grew past `keep` bytes that are empty again; returns the
    /// bytes freed.
    pub(crate) fn trim(&mut self, keep: usize) -> usize {
        let mut freed = 0;
        if self.pending() == 0 {
            self.out.clear();
            self.written = 0;
            freed += shrink_idle(&mut self.out, keep);
        }
        freed + shrink_idle(&mut self.partial, keep)
    }

    /// Output has waited since `progress` without the socket taking a byte for longer than
    /// `limit`: the node does not read its link.
    pub(crate) fn stalled(&self, now: Instant, limit: Duration) -> bool {
        self.pending() > 0 && now.saturating_duration_since(self.progress) > limit
    }

    /// The socket, while the link is connected (what reads take frames from).
    pub(crate) fn connected(&mut self) -> Option<&mut TcpStream> {
        match &mut self.link {
            Link::Connected { stream } => Some(stream),
            _ => None,
        }
    }

    /// Drops the socket and everything queued on it; the caller evacuates its requests.
    pub(crate) fn reset(&mut self, retry_at: Instant) -> Option<TcpStream> {
        let old = std::mem::replace(&mut self.link, Link::Idle { retry_at });
        self.out.clear();
        self.written = 0;
        self.partial.clear();
        self.writable = false;
        self.left_waiting = false;
        match old {
            Link::Connecting { stream, .. } | Link::Connected { stream } => Some(stream),
            Link::Idle { .. } => None,
        }
    }
}
