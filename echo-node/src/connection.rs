//! One peer socket (a client or a gateway's backend link) and its two buffers.
//!
//! The read buffer holds only a partial frame: complete frames are decoded in place from the
//! reactor's scratch buffer, and an idle connection holds no read buffer. The write buffer
//! holds replies the socket has not taken yet; every reply produced by one read is written
//! with one `write` call. Once written, it is kept for the next replies (a node's peers are
//! few and busy gateways) unless it grew past 64 KiB.

use std::io;
use std::ops::ControlFlow;

use mio::net::TcpStream;
use mio::Interest;
use tether_daemon::nonblocking::{read_frames, write_queued, ReadEnd};
use tether_proto::{encode, Decoder, Frame};

/// A peer socket with its buffers and lifecycle flags.
pub(crate) struct Connection {
    pub stream: TcpStream,
    /// Tells a late worker result for a reused slab slot from one for this connection.
    pub generation: u64,
    /// Interest currently registered with the poll.
    pub interest: Interest,
    partial: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    /// A closing ERROR is queued: read nothing more, close once it is written.
    pub closing: bool,
    /// The peer shut down its side; close once our replies are written.
    pub peer_closed: bool,
    /// Reading stopped because too many replies wait for a peer that is not reading.
    pub read_paused: bool,
    /// The socket failed; close at once.
    pub broken: bool,
}

/// Why reading stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadStop {
    /// The socket has nothing more for now.
    Drained,
    /// The connection is closing, its peer is gone, or it broke.
    Done,
    /// Replies pile up: resume once the peer reads them.
    Paused,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, generation: u64) -> Connection {
        Connection {
            stream,
            generation,
            interest: Interest::READABLE,
            partial: Vec::new(),
            out: Vec::new(),
            written: 0,
            closing: false,
            peer_closed: false,
            read_paused: false,
            broken: false,
        }
    }

    /// Bytes of replies not yet taken by the socket.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// The output buffer, for replies that arrive from the compute pool.
    pub(crate) fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether the connection has nothing left to do and can be dropped.
    pub(crate) fn finished(&self) -> bool {
        self.broken || ((self.closing || self.peer_closed) && self.pending() == 0)
    }

    /// Reads until the socket is drained, handing every complete frame to `on_frame`
    /// (which appends replies to the output buffer and returns `false` when it queued a
    /// closing error); a decode error queues its ERROR and closes. Stops early once
    /// `max_queued` bytes of replies wait. `until_eagain`: the peer closed, or reading
    /// resumes after a pause, so no new edge comes (see [`read_frames`]' short-read rule).
    pub(crate) fn read_frames<F>(
        &mut self,
        scratch: &mut [u8],
        decoder: &Decoder,
        max_queued: usize,
        until_eagain: bool,
        mut on_frame: F,
    ) -> ReadStop
    where
        F: FnMut(Frame<'_>, &mut Vec<u8>) -> bool,
    {
        let mut partial = std::mem::take(&mut self.partial);
        let reading = read_frames(
            self,
            |conn| {
                if conn.closing || conn.peer_closed || conn.broken {
                    return None;
                }
                if conn.pending() >= max_queued {
                    conn.read_paused = true;
                    return None;
                }
                Some(&mut conn.stream)
            },
            scratch,
            &mut partial,
            decoder,
            until_eagain,
            |conn, frame| {
                if on_frame(frame, &mut conn.out) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        );
        let stop = match reading.end {
            ReadEnd::Drained => ReadStop::Drained,
            // Withheld but not done: at `max_queued`.
            ReadEnd::Withheld if !(self.closing || self.peer_closed || self.broken) => {
                ReadStop::Paused
            }
            ReadEnd::Withheld => ReadStop::Done,
            ReadEnd::Eof => {
                self.peer_closed = true;
                ReadStop::Done
            }
            ReadEnd::Failed(_) => {
                self.broken = true;
                ReadStop::Done
            }
            ReadEnd::Stopped(()) => {
                self.closing = true;
                ReadStop::Done
            }
            ReadEnd::Malformed(e) => {
                encode::error(&mut self.out, e.offending_id(), e.code(), &e.to_string());
                self.closing = true;
                ReadStop::Done
            }
        };
        // An idle connection holds no buffer, nor does a closing one.
        if !self.closing && !partial.is_empty() {
            self.partial = partial;
        }
        stop
    }

    /// Writes queued replies until done or the socket would block.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        write_queued(&mut self.stream, &self.out, &mut self.written)?;
        if self.written == self.out.len() {
            self.written = 0;
            if self.out.capacity() > SMALL_BUFFER {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        } else if self.written > SMALL_BUFFER {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

/// Output buffers larger than this are released once empty, so a burst does not pin memory.
const SMALL_BUFFER: usize = 64 * 1024;
