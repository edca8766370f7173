//! One client connection: its socket, its partial-frame read buffer, its user-space write
//! queue, the DATA frames it has in flight, and what it does with each frame the server
//! sends.
//!
//! Frames from the server: DATA is checked against the payload its id must carry; PONG is
//! ignored; ERROR is counted under its code's name and ends that request; GOAWAY and PUSH
//! are counted (PUSH is ACKed); any other kind is a verify failure. A byte stream that does
//! not decode closes the connection as `bad_frame_from_server`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use tether_proto::{encode, Decoder, ErrorCode, Frame, Kind, HEADER_LEN};

use crate::cause::Cause;
use crate::outstanding::Outstanding;
use crate::payload;
use crate::stats::{Stats, Window};

/// User-space bytes a connection may queue while its socket is not writable.
pub const BACKLOG_LIMIT: usize = 4 << 20;

/// What every connection of a worker shares.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub decoder: Decoder,
    pub payload: usize,
    /// Queued-but-unsent bytes beyond which new DATA frames are refused.
    pub backlog_limit: usize,
}

impl Env {
    pub fn new(payload: usize, max_body: u32) -> Env {
        Env {
            decoder: Decoder::new(max_body),
            payload,
            // Always room for a couple of frames, however large the payload.
            backlog_limit: BACKLOG_LIMIT.max(2 * (HEADER_LEN + payload)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not dialled yet (`--connect-rate`).
    Idle,
    Connecting,
    Established,
    Closed,
}

#[derive(Debug)]
pub struct Conn {
    /// Index among all connections of the run (phase, target and source choice).
    pub global: usize,
    pub target: SocketAddr,
    pub source: Option<IpAddr>,
    pub state: State,
    pub stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
    pub outstanding: Outstanding,
    next_id: u64,
    /// Whether this connection already logged a verify failure.
    reported: bool,
}

impl Conn {
    pub fn new(global: usize, target: SocketAddr, source: Option<IpAddr>) -> Conn {
        Conn {
            global,
            target,
            source,
            state: State::Idle,
            stream: None,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            outstanding: Outstanding::new(),
            next_id: 1,
            reported: false,
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Bytes queued and not yet written to the socket.
    pub fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Queues the next DATA frame, measured from `since`. Returns `false` (and counts
    /// `send_backlog_overflow`) when the write queue is full, in which case nothing is queued.
    pub fn queue_data(
        &mut self,
        env: &Env,
        since: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> bool {
        if self.backlog() + HEADER_LEN + env.payload > env.backlog_limit {
            stats.error("send_backlog_overflow");
            return false;
        }
        let id = self.next_id;
        self.next_id += 1;
        encode::header(&mut self.wbuf, Kind::Data, 0, id, env.payload);
        payload::write(&mut self.wbuf, self.global as u64, id, env.payload);
        self.outstanding.push(id, since);
        stats.sent(since, window);
        true
    }

    /// Reads everything the socket has and handles every complete frame.
    ///
    /// `scratch` is the worker's read buffer: whole frames are handled straight from it and
    /// only a partial tail is copied into the connection's own buffer.
    pub fn read(
        &mut self,
        scratch: &mut [u8],
        env: &Env,
        now: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<(), Cause> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(());
            };
            let n = match stream.read(scratch) {
                Ok(0) => return Err(Cause::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Cause::of_stream_error(&e)),
            };
            let data = scratch.get(..n).unwrap_or_default();
            if self.rbuf.is_empty() {
                let used = self.handle_frames(data, env, now, window, stats)?;
                self.rbuf
                    .extend_from_slice(data.get(used..).unwrap_or_default());
            } else {
                let mut rbuf = std::mem::take(&mut self.rbuf);
                rbuf.extend_from_slice(data);
                let used = self.handle_frames(&rbuf, env, now, window, stats)?;
                rbuf.drain(..used);
                self.rbuf = rbuf;
            }
            // A short read emptied the socket's receive buffer; epoll reports the next
            // arrival as a new edge (the same shortcut tokio takes), so save the extra read.
            if n < scratch.len() {
                return Ok(());
            }
        }
    }

    /// Handles the complete frames at the front of `buf`; returns the bytes they used.
    fn handle_frames(
        &mut self,
        buf: &[u8],
        env: &Env,
        now: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<usize, Cause> {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            match env.decoder.decode(rest) {
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(frame, env, now, window, stats)?;
                }
                Ok(None) => return Ok(used),
                Err(e) => {
                    tracing::debug!(error = %e, target = %self.target, "undecodable bytes from server");
                    return Err(Cause::BadFrameFromServer);
                }
            }
        }
    }

    /// What one frame from the server means.
    pub fn on_frame(
        &mut self,
        frame: Frame<'_>,
        env: &Env,
        now: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<(), Cause> {
        match frame.kind {
            Kind::Data => match self.outstanding.take(frame.id) {
                Some(since) => {
                    match payload::verify(self.global as u64, frame.id, env.payload, frame.body) {
                        Ok(()) => stats.reply(since, now, window),
                        Err(mismatch) => {
                            self.verify_failed(stats, frame.id, &mismatch.to_string());
                        }
                    }
                }
                None => self.verify_failed(stats, frame.id, "id not in flight"),
            },
            Kind::Pong => {}
            Kind::Error => {
                let Some((code, _reason)) = frame.body.split_first_chunk::<2>() else {
                    return Err(Cause::BadFrameFromServer);
                };
                let code = u16::from_be_bytes(*code);
                match ErrorCode::from_u16(code) {
                    Some(known) => stats.error(known.name()),
                    None => stats.error(&format!("ERROR_{code}")),
                }
                self.outstanding.take(frame.id);
            }
            Kind::GoAway => stats.error("GOAWAY"),
            Kind::Push => {
                stats.error("PUSH");
                encode::frame(&mut self.wbuf, Kind::Ack, frame.id, &[]);
            }
            other => self.verify_failed(stats, frame.id, other.name()),
        }
        Ok(())
    }

    fn verify_failed(&mut self, stats: &mut Stats, id: u64, what: &str) {
        stats.verify_failures += 1;
        if !self.reported {
            self.reported = true;
            tracing::warn!(conn = self.global, id, what, "reply failed verification");
        }
    }

    /// Writes as much of the queue as the socket takes.
    pub fn flush(&mut self) -> Result<(), Cause> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        while self.wpos < self.wbuf.len() {
            match stream.write(self.wbuf.get(self.wpos..).unwrap_or_default()) {
                Ok(0) => return Err(Cause::IoError),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Cause::of_stream_error(&e)),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > self.wbuf.len() / 2 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Drops the socket and buffers; returns how many requests were still in flight.
    pub fn close(&mut self) -> usize {
        self.state = State::Closed;
        self.stream = None;
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.wpos = 0;
        self.outstanding.clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn setup() -> (Conn, Env, Window, Stats, Instant) {
        let t0 = Instant::now();
        let window = Window {
            measure_start: t0,
            end: t0 + Duration::from_secs(10),
        };
        let conn = Conn::new(0, "127.0.0.1:1".parse().unwrap(), None);
        (conn, Env::new(16, 1024), window, Stats::new().unwrap(), t0)
    }

    fn reply(id: u64, len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        payload::write(&mut body, 0, id, len);
        body
    }

    #[test]
    fn queued_data_is_a_valid_frame_and_its_echo_verifies() {
        let (mut conn, env, window, mut stats, t0) = setup();
        assert!(conn.queue_data(&env, t0, &window, &mut stats));
        assert!(conn.queue_data(&env, t0, &window, &mut stats));
        let (frame, used) = env.decoder.decode(&conn.wbuf).unwrap().unwrap();
        assert_eq!((frame.kind, frame.id, used), (Kind::Data, 1, 30));
        let echo = frame.body.to_vec();
        let now = t0 + Duration::from_micros(80);
        conn.on_frame(
            Frame::new(Kind::Data, 1, &echo),
            &env,
            now,
            &window,
            &mut stats,
        )
        .unwrap();
        assert_eq!(
            (stats.sent, stats.received, stats.verify_failures),
            (2, 1, 0)
        );
        assert_eq!(conn.outstanding.len(), 1);
    }

    #[test]
    fn bad_replies_are_verify_failures_not_panics() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_data(&env, t0, &window, &mut stats);
        conn.queue_data(&env, t0, &window, &mut stats);
        let mut corrupt = reply(1, 16);
        corrupt[9] ^= 0x80;
        for frame in [
            Frame::new(Kind::Data, 1, &corrupt),
            Frame::new(Kind::Data, 7, &corrupt),
            Frame::new(Kind::LoginOk, 2, b"{}"),
        ] {
            conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        }
        assert_eq!(stats.verify_failures, 3);
        assert_eq!(stats.received, 0);
        // The corrupted id is no longer in flight; id 2 still is.
        assert_eq!(conn.outstanding.len(), 1);
    }

    #[test]
    fn errors_goaway_and_push_are_counted_by_name() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_data(&env, t0, &window, &mut stats);
        let mut overloaded = Vec::new();
        encode::error(&mut overloaded, 1, ErrorCode::Overloaded, "queue full");
        let (frame, _) = env.decoder.decode(&overloaded).unwrap().unwrap();
        conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        assert!(conn.outstanding.is_empty());
        let unknown = [0u8, 99, b'x'];
        conn.on_frame(
            Frame::new(Kind::Error, 0, &unknown),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        conn.on_frame(
            Frame::new(Kind::GoAway, 0, b"{}"),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        conn.wbuf.clear();
        conn.on_frame(
            Frame::new(Kind::Push, 77, b"hi"),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        let names: Vec<(&str, u64)> = stats.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            names,
            vec![
                ("ERROR_99", 1),
                ("GOAWAY", 1),
                ("OVERLOADED", 1),
                ("PUSH", 1)
            ]
        );
        let (ack, _) = env.decoder.decode(&conn.wbuf).unwrap().unwrap();
        assert_eq!((ack.kind, ack.id, ack.body.len()), (Kind::Ack, 77, 0));
        // An ERROR too short to hold a code is a bad frame.
        assert_eq!(
            conn.on_frame(
                Frame::new(Kind::Error, 0, &[1]),
                &env,
                t0,
                &window,
                &mut stats
            ),
            Err(Cause::BadFrameFromServer)
        );
        assert_eq!(stats.verify_failures, 0);
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let (mut conn, env, window, mut stats, t0) = setup();
        let mut wire = Vec::new();
        for id in 1..=3 {
            encode::frame(&mut wire, Kind::Data, id, &reply(id, 16));
        }
        let cuts = [1, 5, 14, 29, 31, 60];
        for cut in cuts {
            conn.outstanding.clear();
            for id in 1..=3 {
                conn.outstanding.push(id, t0);
            }
            let mut rbuf = Vec::new();
            let mut handled = 0;
            for part in [&wire[..cut], &wire[cut..]] {
                rbuf.extend_from_slice(part);
                let used = conn
                    .handle_frames(&rbuf, &env, t0, &window, &mut stats)
                    .unwrap();
                rbuf.drain(..used);
                handled += used;
            }
            assert_eq!(handled, wire.len(), "cut at {cut}");
        }
        assert_eq!(stats.verify_failures, 0);
        assert_eq!(stats.received, 3 * cuts.len() as u64);
    }

    #[test]
    fn a_full_backlog_refuses_new_frames() {
        let (mut conn, _, window, mut stats, t0) = setup();
        let env = Env {
            backlog_limit: 64,
            ..Env::new(16, 1024)
        };
        assert!(conn.queue_data(&env, t0, &window, &mut stats));
        assert!(conn.queue_data(&env, t0, &window, &mut stats));
        assert!(!conn.queue_data(&env, t0, &window, &mut stats));
        assert_eq!(stats.errors.get("send_backlog_overflow"), Some(&1));
        assert_eq!(conn.outstanding.len(), 2);
    }
}
