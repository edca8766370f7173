//! One gateway's connection to the daemon: its socket, what has been read and not yet
//! decoded, and what waits to be written. The event loop owns the links; this file only
//! moves bytes.

use std::io::{self, Read};

use mio::net::UnixStream;
use tether_daemon::nonblocking::write_queued;

/// Largest frame body on a state link (STATE_PUSH carries a route and a payload).
pub const MAX_BODY: u32 = 1 << 20;
/// Largest push payload that fits in a STATE_PUSH: `MAX_BODY` less the route, rounded down.
pub const MAX_PAYLOAD: usize = 1_048_000;
/// A gateway that lets this much output pile up unread is cut off (its pushes stay queued
/// and are sent again when it reconnects and re-announces).
pub const MAX_OUT: usize = 64 << 20;
/// Bytes read per `read(2)`.
const READ_CHUNK: usize = 64 * 1024;

pub struct Link {
    pub stream: UnixStream,
    /// The gateway index, once HELLO was received.
    pub gateway: Option<u16>,
    /// The gateway id, for logs.
    pub name: String,
    /// Read, not yet decoded (at most one partial frame after each read).
    pub inbuf: Vec<u8>,
    /// Encoded frames not yet written; `written` of them went out already.
    pub out: Vec<u8>,
    written: usize,
    /// WRITABLE interest is registered (output is waiting for the socket).
    pub wants_write: bool,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket has nothing more for now.
    WouldBlock,
    /// The gateway closed its side.
    Eof,
}

impl Link {
    pub fn new(stream: UnixStream) -> Link {
        Link {
            stream,
            gateway: None,
            name: String::new(),
            inbuf: Vec::new(),
            out: Vec::new(),
            written: 0,
            wants_write: false,
        }
    }

    /// Reads everything the socket holds into `inbuf`.
    pub fn read(&mut self) -> io::Result<ReadEnd> {
        loop {
            let start = self.inbuf.len();
            self.inbuf.resize(start + READ_CHUNK, 0);
            let result = self.stream.read(&mut self.inbuf[start..]);
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.inbuf.truncate(start);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(ReadEnd::WouldBlock),
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
            };
            self.inbuf.truncate(start + n);
            if n == 0 {
                return Ok(ReadEnd::Eof);
            }
        }
    }

    /// Writes as much of `out` as the socket takes; `Ok(true)` when all of it went.
    pub fn flush(&mut self) -> io::Result<bool> {
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
    pub fn backlog(&self) -> usize {
        self.out.len() - self.written
    }
}
