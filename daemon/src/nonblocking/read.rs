//! Reading a nonblocking socket until it would block: the loop every connection's read
//! shares, whatever it then does with the frames and with the way the loop ended.
//!
//! [`read_frames`] reads into the caller's buffer (a reactor's scratch: no allocation per
//! read), hands every complete frame to the caller, straight from that buffer, and keeps
//! only an incomplete tail in the caller's `partial` (see [`tether_proto::feed`]: nothing
//! is copied but the bytes a frame split across reads lacks). [`read_chunks`] is the same
//! loop for bytes that are not frames (an HTTP answer).
//!
//! # The short-read rule
//!
//! With edge-triggered readiness (mio), a read shorter than the buffer means the socket's
//! queue was empty at that moment, and data arriving later raises a new edge: so the loop
//! stops there, without the extra read that would only say EAGAIN. Unless the peer also
//! closed (or reading resumes after a pause): its EOF raises no new edge and must be read
//! now. The caller says which with `until_eagain`; with it, only WouldBlock ends the loop.
//!
//! # Who owns what
//!
//! The socket usually lives inside what the frames act on (a connection in a reactor's
//! slab, the reactor itself), so both closures get the caller's `owner` in turn: `socket`
//! lends the socket for one read, and `on_frame` acts on one frame. `socket` is asked before
//! every read and answers `None` to read no more (the connection is closing, paused, or
//! gone). What the loop read and how it ended come back in a [`Reading`], so each caller
//! keeps its own policy: metrics, pausing, pooled partial buffers, close reasons.

use std::io::{self, Read};
use std::ops::ControlFlow;

use tether_proto::{feed, DecodeError, Decoder, Frame};

/// How a read loop ended.
#[derive(Debug)]
pub enum ReadEnd<B> {
    /// The socket has nothing more for now: it said WouldBlock, or a read came back short
    /// (the short-read rule, without `until_eagain`).
    Drained,
    /// `socket` gave no socket to read (closing, paused, gone), before a read.
    Withheld,
    /// The peer closed its side: a read returned 0 bytes.
    Eof,
    /// The handler stopped the loop with this; the rest of that read was dropped.
    Stopped(B),
    /// The bytes are not a frame stream ([`read_frames`] only); the frames before the bad
    /// bytes were handled.
    Malformed(DecodeError),
    /// A read failed with an error other than WouldBlock and EINTR (which is retried).
    Failed(io::Error),
}

/// What a read loop did.
#[derive(Debug)]
pub struct Reading<B> {
    /// Bytes read, whatever the end.
    pub bytes: usize,
    pub end: ReadEnd<B>,
}

/// Reads until the socket would block (or the short-read rule says it is empty), handing
/// each read's bytes to `on_chunk`, which returns `Break` to stop. The bytes are the
/// caller's to change (a layer that decrypts or unmasks in place).
///
/// `buf` must not be empty (a read into it would look like EOF).
pub fn read_chunks<C, R, B>(
    owner: &mut C,
    mut socket: impl FnMut(&mut C) -> Option<&mut R>,
    buf: &mut [u8],
    until_eagain: bool,
    mut on_chunk: impl FnMut(&mut C, &mut [u8]) -> ControlFlow<B>,
) -> Reading<B>
where
    R: Read + ?Sized,
{
    debug_assert!(
        !buf.is_empty(),
        "a read into an empty buffer looks like EOF"
    );
    let mut bytes = 0;
    let end = loop {
        let Some(stream) = socket(owner) else {
            break ReadEnd::Withheld;
        };
        let n = match stream.read(buf) {
            Ok(0) => break ReadEnd::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadEnd::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break ReadEnd::Failed(e),
        };
        bytes += n;
        if let ControlFlow::Break(stop) = on_chunk(owner, &mut buf[..n]) {
            break ReadEnd::Stopped(stop);
        }
        if n < buf.len() && !until_eagain {
            break ReadEnd::Drained;
        }
    };
    Reading { bytes, end }
}

/// Reads like [`read_chunks`], decoding with `decoder`: every complete frame goes to
/// `on_frame`, which returns `Break` to stop (the connection is closing: the rest of that
/// read is dropped); an incomplete tail is left in `partial`, which also holds the start of
/// a frame from earlier reads. On [`ReadEnd::Malformed`] the bad bytes may be left in
/// `partial`: the caller drops it with the connection.
pub fn read_frames<C, R, B>(
    owner: &mut C,
    socket: impl FnMut(&mut C) -> Option<&mut R>,
    buf: &mut [u8],
    partial: &mut Vec<u8>,
    decoder: &Decoder,
    until_eagain: bool,
    mut on_frame: impl FnMut(&mut C, Frame<'_>) -> ControlFlow<B>,
) -> Reading<B>
where
    R: Read + ?Sized,
{
    let reading = read_chunks(owner, socket, buf, until_eagain, |owner, data| {
        let mut stopped = None;
        let fed = feed(decoder, partial, data, |frame| {
            match on_frame(owner, frame) {
                ControlFlow::Continue(()) => true,
                ControlFlow::Break(stop) => {
                    stopped = Some(stop);
                    false
                }
            }
        });
        match (stopped, fed) {
            (Some(stop), _) => ControlFlow::Break(Stop::Handler(stop)),
            (None, Err(e)) => ControlFlow::Break(Stop::Malformed(e)),
            (None, Ok(())) => ControlFlow::Continue(()),
        }
    });
    let end = match reading.end {
        ReadEnd::Stopped(Stop::Handler(stop)) => ReadEnd::Stopped(stop),
        ReadEnd::Stopped(Stop::Malformed(e)) => ReadEnd::Malformed(e),
        ReadEnd::Drained => ReadEnd::Drained,
        ReadEnd::Withheld => ReadEnd::Withheld,
        ReadEnd::Eof => ReadEnd::Eof,
        ReadEnd::Malformed(e) => ReadEnd::Malformed(e),
        ReadEnd::Failed(e) => ReadEnd::Failed(e),
    };
    Reading {
        bytes: reading.bytes,
        end,
    }
}

/// Why [`read_frames`]' chunk handler stopped.
enum Stop<B> {
    Handler(B),
    Malformed(DecodeError),
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tether_proto::{encode, Kind};

    use super::*;

    /// What a scripted socket does on each read.
    enum Step {
        /// These bytes, or as many as the buffer takes (the rest stays for the next read).
        Bytes(Vec<u8>),
        Eintr,
        Reset,
        Eof,
    }

    /// A socket that plays its steps, then says WouldBlock.
    struct Script {
        steps: VecDeque<Step>,
        reads: usize,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            match self.steps.pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Eintr) => Err(io::ErrorKind::Interrupted.into()),
                Some(Step::Reset) => Err(io::ErrorKind::ConnectionReset.into()),
                Some(Step::Eof) => Ok(0),
                Some(Step::Bytes(mut bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.steps.push_front(Step::Bytes(bytes.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    /// A connection: its socket and the ids of the frames it handled.
    struct Peer {
        socket: Script,
        /// `socket` withholds the socket once this many frames were handled.
        pause_after: usize,
        /// The handler stops at the frame with this id.
        stop_at: Option<u64>,
        seen: Vec<u64>,
    }

    fn peer(steps: Vec<Step>) -> Peer {
        Peer {
            socket: Script {
                steps: steps.into(),
                reads: 0,
            },
            pause_after: usize::MAX,
            stop_at: None,
            seen: Vec::new(),
        }
    }

    fn frames(ids: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut wire = Vec::new();
        for id in ids {
            encode::frame(&mut wire, Kind::Data, id, &[id as u8; 10]);
        }
        wire
    }

    /// Reads `peer` with a `buf_len`-byte buffer.
    fn read(
        peer: &mut Peer,
        buf_len: usize,
        partial: &mut Vec<u8>,
        until_eagain: bool,
    ) -> Reading<u64> {
        let mut buf = vec![0; buf_len];
        read_frames(
            peer,
            |p| (p.seen.len() < p.pause_after).then_some(&mut p.socket),
            &mut buf,
            partial,
            &Decoder::default(),
            until_eagain,
            |p, frame| {
                assert_eq!(frame.body, &[frame.id as u8; 10]);
                p.seen.push(frame.id);
                match p.stop_at {
                    Some(id) if id == frame.id => ControlFlow::Break(id),
                    _ => ControlFlow::Continue(()),
                }
            },
        )
    }

    // Each test frame is 24 bytes.
    const FRAME: usize = 24;

    #[test]
    fn a_short_read_ends_the_loop_without_the_extra_read() {
        let mut p = peer(vec![Step::Bytes(frames(1..=2)), Step::Bytes(frames(3..=3))]);
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, false);
        assert!(matches!(r.end, ReadEnd::Drained));
        assert_eq!(
            (r.bytes, p.seen.as_slice(), p.socket.reads),
            (48, &[1, 2][..], 1)
        );
        // The next edge reads the rest, then the socket says WouldBlock.
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Drained));
        assert_eq!(
            (r.bytes, p.seen.as_slice(), p.socket.reads),
            (24, &[1, 2, 3][..], 3)
        );
    }

    #[test]
    fn a_full_read_reads_again() {
        let mut p = peer(vec![Step::Bytes(frames(1..=3))]);
        let mut partial = Vec::new();
        let r = read(&mut p, 2 * FRAME, &mut partial, false);
        assert!(matches!(r.end, ReadEnd::Drained));
        // 48 bytes (full), then 24 (short): no third read.
        assert_eq!(
            (r.bytes, p.seen.as_slice(), p.socket.reads),
            (72, &[1, 2, 3][..], 2)
        );
        assert!(partial.is_empty());
    }

    #[test]
    fn eintr_is_retried() {
        let mut p = peer(vec![Step::Eintr, Step::Bytes(frames(1..=1)), Step::Eintr]);
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Drained));
        assert_eq!((p.seen.as_slice(), p.socket.reads), (&[1][..], 4));
    }

    #[test]
    fn eof_after_data_is_read_when_the_peer_closed() {
        let steps = || vec![Step::Bytes(frames(1..=2)), Step::Eof];
        let mut p = peer(steps());
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Eof));
        assert_eq!((r.bytes, p.seen.as_slice()), (48, &[1, 2][..]));
        // Without `until_eagain` the short read ends the loop before the EOF.
        let mut p = peer(steps());
        let r = read(&mut p, 1024, &mut partial, false);
        assert!(matches!(r.end, ReadEnd::Drained));
    }

    #[test]
    fn a_frame_split_across_reads_keeps_only_its_tail() {
        let wire = frames(1..=3);
        let mut p = peer(vec![
            Step::Bytes(wire[..30].to_vec()),
            Step::Eintr,
            Step::Bytes(wire[30..60].to_vec()),
        ]);
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Drained));
        assert_eq!(p.seen, [1, 2]);
        // Frame 3's first 12 bytes wait for the rest.
        assert_eq!(partial, &wire[48..60]);
        p.socket.steps.push_back(Step::Bytes(wire[60..].to_vec()));
        read(&mut p, 1024, &mut partial, false);
        assert_eq!(p.seen, [1, 2, 3]);
        assert!(partial.is_empty());
    }

    #[test]
    fn the_handler_stops_mid_buffer() {
        let mut p = peer(vec![Step::Bytes(frames(1..=3)), Step::Bytes(frames(4..=4))]);
        p.stop_at = Some(2);
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Stopped(2)));
        assert_eq!(
            (r.bytes, p.seen.as_slice(), p.socket.reads),
            (72, &[1, 2][..], 1)
        );
        assert!(partial.is_empty(), "the rest of the read is dropped");
    }

    #[test]
    fn a_withheld_socket_is_not_read() {
        // Paused after two frames: that read's frames are all handled, no further read.
        let mut p = peer(vec![Step::Bytes(frames(1..=3)), Step::Bytes(frames(4..=4))]);
        p.pause_after = 2;
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Withheld));
        assert_eq!((p.seen.as_slice(), p.socket.reads), (&[1, 2, 3][..], 1));
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(r.end, ReadEnd::Withheld));
        assert_eq!((r.bytes, p.socket.reads), (0, 1));
    }

    #[test]
    fn a_decode_error_ends_the_loop_after_the_frames_before_it() {
        let mut wire = frames(1..=1);
        wire.extend_from_slice(&[0, 0, 0, 3]); // len < 10: BAD_FRAME
        wire.extend_from_slice(&frames(2..=2));
        let mut p = peer(vec![Step::Bytes(wire), Step::Bytes(frames(3..=3))]);
        let mut partial = Vec::new();
        let r = read(&mut p, 1024, &mut partial, true);
        assert!(matches!(
            r.end,
            ReadEnd::Malformed(DecodeError::BadFrame { len: 3 })
        ));
        assert_eq!((p.seen.as_slice(), p.socket.reads), (&[1][..], 1));
    }

    #[test]
    fn a_failed_read_is_returned() {
        let mut p = peer(vec![Step::Bytes(frames(1..=1)), Step::Reset]);
        let mut partial = Vec::new();
        let r = read(&mut p, FRAME, &mut partial, false);
        assert!(
            matches!(r.end, ReadEnd::Failed(ref e) if e.kind() == io::ErrorKind::ConnectionReset)
        );
        assert_eq!((r.bytes, p.seen.as_slice()), (24, &[1][..]));
    }

    #[test]
    fn chunks_are_handed_over_as_read() {
        let mut p = peer(vec![Step::Bytes(b"0123456789".to_vec()), Step::Eof]);
        let mut got = Vec::new();
        let mut buf = [0; 4];
        let r = read_chunks(
            &mut p,
            |p| Some(&mut p.socket),
            &mut buf,
            false,
            |_, chunk| {
                got.push(chunk.to_vec());
                if got.concat().len() > 6 {
                    ControlFlow::Break("enough")
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        assert!(matches!(r.end, ReadEnd::Stopped("enough")));
        assert_eq!(got, [&b"0123"[..], b"4567"]);
    }
}
