//! One gateway's connection to the daemon: its socket, the start of a frame that has not
//! all arrived, and what waits to be written. The event loop owns the links and reads them
//! (`tether_daemon::nonblocking::read_frames`); this file only writes.

use std::io;

use mio::net::UnixStream;
use tether_daemon::nonblocking::write_queued;

use crate::peers::PeerCred;

/// Largest frame body on a state link (STATE_PUSH carries a route and a payload).
pub(crate) const MAX_BODY: u32 = 1 << 20;
/// Largest push payload that fits in a STATE_PUSH: `MAX_BODY` less the route, rounded down.
pub(crate) const MAX_PAYLOAD: usize = 1_048_000;
/// A gateway that lets this much output pile up unread is cut off (its pushes stay queued
/// and are sent again when it reconnects and re-announces).
pub(crate) const MAX_OUT: usize = 64 << 20;
/// Bytes read per `read(2)` (the event loop's read buffer).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

pub(crate) struct Link {
    pub stream: UnixStream,
    /// The gateway index, once HELLO was received.
    pub gateway: Option<u16>,
    /// The gateway id, for logs.
    pub name: String,
    /// Who connected, for logs.
    pub peer: PeerCred,
    /// An incomplete frame: what has arrived of it.
    pub partial: Vec<u8>,
    /// Encoded frames not yet written; `written` of them went out already.
    pub out: Vec<u8>,
    written: usize,
    /// WRITABLE interest is registered (output is waiting for the socket).
    pub wants_write: bool,
}

impl Link {
    pub(crate) fn new(stream: UnixStream, peer: PeerCred) -> Link {
        Link {
            stream,
            gateway: None,
            name: String::new(),
            peer,
            partial: Vec::new(),
            out: Vec::new(),
            written: 0,
            wants_write: false,
        }
    }

    /// Writes as much of `out` as the socket takes; `Ok(true)` when all of it went.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        write_queued(&mut self.stream, &self.out, &mut self.written)?;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            return Ok(true);
        }
        // Keep the buffer from growing for ever behind a slow reader.
        if self.written >= self.out.len() / 2 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(false)
    }

    /// Output waiting to be written.
    pub(crate) fn backlog(&self) -> usize {
        self.out.len() - self.written
    }
}
