//! One client connection as a reactor holds it: small while idle, buffers only while busy.
//!
//! An idle connection is this struct in the reactor's slab and nothing else (no buffer: 48
//! bytes on x86-64). [`ClientIo`] — the partial frame being read and the replies the socket
//! has not taken — is borrowed from the reactor's pool while either is non-empty and handed
//! back once both are.

use std::io;

use mio::net::TcpStream;
use tether_daemon::nonblocking::write_queued;

use crate::metrics::CloseReason;
use crate::rate_limit::TokenBucket;

/// The buffers of a busy connection, pooled per reactor.
#[derive(Debug, Default)]
pub(crate) struct ClientIo {
    /// Bytes of an incomplete frame.
    pub partial: Vec<u8>,
    /// Encoded replies not yet written.
    pub out: Vec<u8>,
    /// How much of `out` the socket has taken.
    pub written: usize,
}

impl ClientIo {
    pub(crate) fn is_idle(&self) -> bool {
        self.partial.is_empty() && self.written == self.out.len()
    }

    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.written
    }
}

/// Yes/no facts about a connection, packed in one byte so that an idle connection's slot
/// stays at 48 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Marks(u8);

impl Marks {
    /// In the reactor's list of connections to flush this iteration.
    pub(crate) const DIRTY: u8 = 1;
    /// WRITABLE is part of the registered interest.
    pub(crate) const WRITABLE: u8 = 1 << 1;
    /// Reading stopped at `max_inflight`; resumes as replies come back.
    pub(crate) const PAUSED: u8 = 1 << 2;
    /// In the reactor's timeout watch list.
    pub(crate) const WATCHED: u8 = 1 << 3;
    /// Sent a frame since the last HEARTBEAT batch.
    pub(crate) const ALIVE: u8 = 1 << 4;
    /// Speaks TLS, WebSocket or both: its session is in the reactor's
    /// [`Layers`](crate::transport::Layers).
    pub(crate) const LAYERED: u8 = 1 << 5;
    /// Closing, everything written and the write side shut: what the peer still sends is
    /// read and dropped until its EOF (or the close linger).
    pub(crate) const SHUT: u8 = 1 << 6;

    pub(crate) fn has(self, mark: u8) -> bool {
        self.0 & mark != 0
    }

    pub(crate) fn set(&mut self, mark: u8, on: bool) {
        if on {
            self.0 |= mark;
        } else {
            self.0 &= !mark;
        }
    }
}

/// Where a connection stands with the state daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Login {
    /// The gateway runs without a state daemon: every frame is served.
    Anonymous,
    /// Connected, no LOGIN or RESUME accepted yet: only those are allowed.
    Awaiting,
    /// A LOGIN or RESUME went to the daemon; its answer has not come back.
    Pending,
    /// Logged in: the daemon holds a session for this route.
    In,
    /// The daemon KICKed it; its ERROR is on the way out, and no CLOSED is owed.
    Kicked,
}

/// A client connection.
#[derive(Debug)]
pub(crate) struct Client {
    pub stream: TcpStream,
    /// 24-bit generation of this slab slot (see [`crate::route`]).
    pub generation: u32,
    /// Stable hash of the client's IP, for ip-hash balancing.
    pub key: u64,
    pub io: Option<Box<ClientIo>>,
    /// Reactor clock (ms) when the pending partial frame started, or when closing began;
    /// 0 when neither.
    pub since_ms: u32,
    /// Requests of this client waiting at nodes.
    pub inflight: u32,
    /// Their payload bytes (the client's share of node queues, see `max_inflight_bytes`).
    pub inflight_bytes: u32,
    pub bucket: TokenBucket,
    /// An ERROR that closes is queued: read nothing more, close once written.
    pub closing: Option<CloseReason>,
    /// Yes/no facts about it, one bit each (see [`Marks`]).
    pub(crate) marks: Marks,
    pub login: Login,
    /// Idle sweeps since the client last sent a byte (see `Reactor::sweep_idle`).
    pub quiet: u8,
}

impl Client {
    pub(crate) fn new(
        stream: TcpStream,
        generation: u32,
        key: u64,
        bucket: TokenBucket,
        login: Login,
    ) -> Client {
        Client {
            stream,
            generation,
            key,
            io: None,
            since_ms: 0,
            inflight: 0,
            inflight_bytes: 0,
            bucket,
            marks: Marks::default(),
            closing: None,
            login,
            quiet: 0,
        }
    }

    /// Reply bytes not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.pending())
    }

    pub(crate) fn has_partial(&self) -> bool {
        self.io.as_ref().is_some_and(|io| !io.partial.is_empty())
    }

    /// Writes queued replies until done or the socket would block; returns bytes written.
    pub(crate) fn flush(&mut self) -> io::Result<usize> {
        let Some(io) = self.io.as_mut() else {
            return Ok(0);
        };
        let before = io.written;
        write_queued(&mut self.stream, &io.out, &mut io.written)?;
        let total = io.written - before;
        if io.written == io.out.len() {
            io.out.clear();
            io.written = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_client_is_small() {
        // The budget is 128 bytes of user space per idle connection, slab entry included.
        let size = std::mem::size_of::<Client>();
        assert!(size <= 48, "Client is {size} bytes");
        assert!(std::mem::size_of::<slab::Slab<Client>>() < 64);
    }
}
