//! The two loops of a nonblocking socket: writing a queued buffer ([`write_queued`], the
//! loop every connection's `flush` shares, whatever it then does with the written part of
//! its buffer) and reading frames until the socket would block ([`read_frames`], see
//! [`read`]).

mod read;

use std::io::{self, Write};

pub use read::{read_chunks, read_frames, ReadEnd, Reading};

/// Writes `out[*written..]` until all of it is written or the socket would block, advancing
/// `written` by what the socket took. A write that takes nothing is `WriteZero`; EINTR is
/// retried; any other error is returned.
pub fn write_queued(stream: &mut impl Write, out: &[u8], written: &mut usize) -> io::Result<()> {
    while *written < out.len() {
        match stream.write(&out[*written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `chunk` bytes a call, then says WouldBlock once `room` is used up.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
        chunk: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.room - self.taken.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_until_done_or_would_block() {
        let out = b"0123456789";
        let mut socket = Socket {
            taken: Vec::new(),
            room: 5,
            chunk: 3,
        };
        let mut written = 2;
        write_queued(&mut socket, out, &mut written).unwrap();
        assert_eq!((written, socket.taken.as_slice()), (7, &b"23456"[..]));
        socket.room = 100;
        write_queued(&mut socket, out, &mut written).unwrap();
        assert_eq!((written, socket.taken.as_slice()), (10, &b"23456789"[..]));
    }
}
