//! One client connection: its socket, its partial-frame read buffer, its user-space write
//! queue, the DATA frames it has in flight, its session, and what it does with each frame
//! the server sends. The socket changes across reconnects; the connection (one device, one
//! session) does not.
//!
//! Frames from the server ([`Conn::on_frame`], sans-IO): DATA is checked against the
//! payload its id must carry; PONG is counted; LOGIN_OK for the LOGIN or RESUME in flight
//! keeps the session and readies the connection; PUSH is ACKed at once and tracked
//! (duplicates, order, latency from the payload's stamp — see [`crate::pushes`]); an ERROR
//! that answers the login, an ERROR whose code closes the connection, and GOAWAY are raised
//! as [`Signals`] for the worker to act on; other ERRORs are counted under their code's
//! name and end that request; any other kind is a verify failure. A byte stream that does
//! not decode closes the connection as `bad_frame_from_server`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tether_proto::{encode, Decoder, ErrorCode, Frame, Kind, HEADER_LEN};

use crate::cause::Cause;
use crate::link::Link;
use crate::outstanding::Outstanding;
use crate::payload;
use crate::pushes::{self, PushLog, Seen};
use crate::rooms::{self, RoomLog};
use crate::session::{self, Hello, LoginOk, Session};
use crate::stats::{Stats, Window};

/// User-space bytes a connection may queue while its socket is not writable.
pub(crate) const BACKLOG_LIMIT: usize = 4 << 20;

/// What every connection of a worker shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env {
    pub decoder: Decoder,
    pub payload: usize,
    /// Queued-but-unsent bytes beyond which new DATA frames are refused.
    pub backlog_limit: usize,
    /// Header flags of every DATA frame (`--resend-safe`: [`FLAG_RESEND_SAFE`]).
    pub data_flags: u8,
}

/// The DATA header flag that marks a request safe to run twice (doc/protocol.md).
pub(crate) const FLAG_RESEND_SAFE: u8 = 0x01;

impl Env {
    pub(crate) fn new(payload: usize, max_body: u32) -> Env {
        Env {
            decoder: Decoder::new(max_body),
            payload,
            data_flags: FLAG_RESEND_SAFE,
            // Always room for a couple of frames, however large the payload.
            backlog_limit: BACKLOG_LIMIT.max(2 * (HEADER_LEN + payload)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not dialled yet (`--connect-rate`).
    Idle,
    /// Asking tether-ipconfig for `/ip_list` (the socket is the HTTP connection).
    Resolving,
    /// Connecting to a gateway.
    Connecting,
    /// LOGIN or RESUME sent (or about to be sent again), waiting for LOGIN_OK.
    LoggingIn,
    /// Connected (and logged in, when logging in): DATA flows.
    Ready,
    /// Told GOAWAY: no new DATA, waiting for the replies still due, then reconnecting.
    Leaving,
    /// Waiting before the next attempt to get back to a gateway.
    Backoff,
    Closed,
}

/// What a batch of frames asks the worker to do, in the order it should act.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signals {
    /// LOGIN_OK for the login in flight: the connection is ready.
    pub logged_in: bool,
    /// The server sent GOAWAY.
    pub goaway: bool,
    /// The login in flight was answered with an ERROR of this (raw) code.
    pub login_error: Option<u16>,
    /// With a BUSY login answer: the `retry_after_ms=N` hint at the head of its reason.
    pub login_retry_after_ms: Option<u64>,
    /// An ERROR whose code closes the connection (not about the login).
    pub closed_by: Option<ErrorCode>,
}

/// A connection getting back to a gateway after GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reconnect {
    /// The gateway that said GOAWAY: skipped while another one is listed.
    pub avoid: Option<SocketAddr>,
    /// Set after a backoff caused by `avoid` being the only gateway listed.
    pub allow_avoided: bool,
    /// Failed attempts so far (the backoff grows with it).
    pub attempts: u32,
    /// The connection counts as dropped if it is not back by then.
    pub by: Instant,
}

#[derive(Debug)]
pub(crate) struct Conn {
    /// Index among all connections of the run (phase, target, source and device choice).
    pub global: usize,
    /// The `--target` this connection starts at; `None` with `--ipconfig`.
    pub target: Option<SocketAddr>,
    pub source: Option<IpAddr>,
    /// Whether this connection sends DATA (`--echo-fraction`); the others only heartbeat.
    pub echo: bool,
    pub state: State,
    pub stream: Option<TcpStream>,
    /// TLS and/or WebSocket between the socket and the v1 frames (`None`: plain TCP).
    pub link: Option<Box<Link>>,
    /// The gateway the socket is connected or connecting to (`None` while resolving).
    pub peer: Option<SocketAddr>,
    /// Whether the socket's connect has completed (while resolving: to ipconfig).
    pub connected: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already written.
    wpos: usize,
    pub outstanding: Outstanding,
    next_id: u64,
    /// Whether this connection already logged a verify failure.
    reported: bool,
    /// Gateways left to try in the current attempt, next first.
    pub candidates: Vec<SocketAddr>,
    /// The session from the last LOGIN_OK, kept for RESUME.
    pub session: Option<Box<Session>>,
    /// `heartbeat_s` from the last LOGIN_OK.
    pub server_heartbeat: Option<u64>,
    /// The id of the LOGIN or RESUME in flight; 0 when none is (a retry is pending).
    pub login_id: u64,
    /// Whether the login in flight is a RESUME.
    pub resuming: bool,
    /// LOGIN/RESUME answers that kept the connection (UNAVAILABLE) since the last success.
    pub login_retries: u32,
    /// Logins answered BUSY so far (spreads the retries).
    pub busy: u32,
    /// PING interval while ready; `None`: no heartbeat.
    pub heartbeat: Option<Duration>,
    /// The deadline of the current phase (see [`crate::deadlines`]).
    pub phase_at: Option<Instant>,
    /// The worker's lag when `phase_at` was set (see [`crate::lag`]).
    pub phase_lag: Duration,
    /// When the next PING is due.
    pub ping_at: Option<Instant>,
    /// The id of the `--hold` check PING awaiting its PONG; 0 when none is.
    pub check_id: u64,
    /// Whether the TCP connect to a gateway ever completed.
    pub ever_connected: bool,
    /// Whether the connection was ever ready (then a loss is a drop, not a failure).
    pub up: bool,
    /// Set from GOAWAY until the connection is ready again.
    pub reconnect: Option<Reconnect>,
    pub pushes: PushLog,
    /// The rooms this connection follows and the last number seen of each.
    pub rooms: RoomLog,
    /// Ids of the JOINs awaiting ROOM_OK or ERROR.
    joins: Vec<u64>,
    /// What the frames handled since the worker last looked ask it to do.
    pub signals: Signals,
}

impl Conn {
    pub(crate) fn new(global: usize, target: Option<SocketAddr>, source: Option<IpAddr>) -> Conn {
        Conn {
            global,
            target,
            source,
            echo: true,
            state: State::Idle,
            stream: None,
            link: None,
            peer: None,
            connected: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            outstanding: Outstanding::new(),
            next_id: 1,
            reported: false,
            candidates: Vec::new(),
            session: None,
            server_heartbeat: None,
            login_id: 0,
            resuming: false,
            login_retries: 0,
            busy: 0,
            heartbeat: None,
            phase_at: None,
            phase_lag: Duration::ZERO,
            ping_at: None,
            check_id: 0,
            ever_connected: false,
            up: false,
            reconnect: None,
            pushes: PushLog::new(),
            rooms: RoomLog::new(),
            joins: Vec::new(),
            signals: Signals::default(),
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether the current phase waits for the other side (an `/ip_list` answer, a
    /// connect, a LOGIN_OK, the replies due after a GOAWAY), so that its deadline is a
    /// timeout, rather than for a backoff of its own to end.
    pub(crate) fn awaits_server(&self) -> bool {
        match self.state {
            State::Resolving | State::Connecting | State::Leaving => true,
            State::LoggingIn => self.login_id != 0,
            State::Idle | State::Ready | State::Backoff | State::Closed => false,
        }
    }

    /// Bytes queued and not yet written to the socket.
    pub(crate) fn backlog(&self) -> usize {
        self.wbuf.len() - self.wpos + self.link.as_ref().map_or(0, |l| l.pending())
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Queues the next DATA frame, measured from `since`. Returns `false` (and counts
    /// `send_backlog_overflow`) when the write queue is full, in which case nothing is queued.
    pub(crate) fn queue_data(
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
        let id = self.take_id();
        encode::header(&mut self.wbuf, Kind::Data, env.data_flags, id, env.payload);
        payload::write(&mut self.wbuf, self.global as u64, id, env.payload);
        self.outstanding.push(id, since);
        stats.sent(since, window);
        true
    }

    /// Queues a PING; returns its id.
    pub(crate) fn queue_ping(&mut self, stats: &mut Stats) -> u64 {
        let id = self.take_id();
        encode::frame(&mut self.wbuf, Kind::Ping, id, &[]);
        stats.session.pings += 1;
        id
    }

    /// Queues the `--hold` check: a PING whose PONG proves the connection still answers.
    pub(crate) fn queue_check(&mut self, stats: &mut Stats) {
        self.check_id = self.queue_ping(stats);
        stats.session.checks_sent += 1;
    }

    /// Queues what a new socket starts with: LOGIN or RESUME (and waits for LOGIN_OK), or
    /// nothing. Returns `true` when a login is now in flight.
    pub(crate) fn queue_hello(&mut self, hello: Hello) -> bool {
        let (kind, body) = match hello {
            Hello::Nothing => return false,
            Hello::Login(token) => (Kind::Login, token),
            Hello::Resume(token) => (Kind::Resume, token),
        };
        let id = self.take_id();
        encode::frame(&mut self.wbuf, kind, id, &body);
        self.login_id = id;
        self.resuming = kind == Kind::Resume;
        true
    }

    /// Queues a JOIN of each of `rooms`, asking for what came after the last number seen
    /// (nothing the first time).
    pub(crate) fn queue_joins(&mut self, rooms: &[String]) {
        for room in rooms {
            let id = self.take_id();
            let mut body = Vec::with_capacity(8 + room.len());
            let after = self.rooms.last(room);
            tether_proto::room::Join { after, room }.write(&mut body);
            encode::frame(&mut self.wbuf, Kind::Join, id, &body);
            self.joins.push(id);
        }
    }

    /// Queues raw bytes (an HTTP request on the resolving socket).
    pub(crate) fn queue_bytes(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Reads everything the socket has and handles every complete frame. Signals raised
    /// by the frames are left in `self.signals`, also when the read then fails.
    ///
    /// `scratch` is the worker's read buffer: whole frames are handled straight from it and
    /// only a partial tail is copied into the connection's own buffer.
    pub(crate) fn read(
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
            let mut link = self.link.take();
            if let Some(l) = link.as_mut() {
                let data = scratch.get_mut(..n).unwrap_or_default();
                // What the link owes the server (records, pongs, a close) goes at once.
                let received = l.receive(data).and_then(|()| l.write(stream));
                if let Err(cause) = received {
                    self.link = link;
                    return Err(cause);
                }
            }
            let data: &[u8] = match link.as_ref() {
                Some(l) => l.plain(),
                None => scratch.get(..n).unwrap_or_default(),
            };
            let handled = self.take_bytes(data, env, now, window, stats);
            self.link = link;
            handled?;
            // A short read emptied the socket's receive buffer; epoll reports the next
            // arrival as a new edge (the same shortcut tokio takes), so save the extra read.
            if n < scratch.len() {
                return Ok(());
            }
        }
    }

    /// Handles the complete frames in `data` (after any partial frame kept from earlier
    /// reads); keeps an incomplete tail.
    fn take_bytes(
        &mut self,
        data: &[u8],
        env: &Env,
        now: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<(), Cause> {
        {
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
        }
        Ok(())
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
                    tracing::debug!(error = %e, peer = ?self.peer, "undecodable bytes from server");
                    return Err(Cause::BadFrameFromServer);
                }
            }
        }
    }

    /// What one frame from the server means.
    pub(crate) fn on_frame(
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
                    stats.requests.answered += 1;
                    match payload::verify(self.global as u64, frame.id, env.payload, frame.body) {
                        Ok(()) => stats.reply(since, now, window),
                        Err(mismatch) => {
                            self.verify_failed(stats, frame.id, &mismatch.to_string());
                        }
                    }
                }
                None => self.verify_failed(stats, frame.id, "id not in flight"),
            },
            Kind::Pong => {
                stats.session.pongs += 1;
                if self.check_id != 0 && frame.id == self.check_id {
                    self.check_id = 0;
                    stats.session.checks_answered += 1;
                }
            }
            Kind::LoginOk if self.awaits_login(frame.id) => self.on_login_ok(frame.body, stats),
            // The answer to a login abandoned at GOAWAY.
            Kind::LoginOk if self.state == State::Leaving => {}
            Kind::Error => {
                let Some((code, reason)) = frame.body.split_first_chunk::<2>() else {
                    return Err(Cause::BadFrameFromServer);
                };
                let code = u16::from_be_bytes(*code);
                let known = ErrorCode::from_u16(code);
                if let Some(at) = self.joins.iter().position(|&id| id == frame.id) {
                    self.joins.swap_remove(at);
                    stats.rooms.joins_refused += 1;
                }
                if self.awaits_login(frame.id) {
                    self.login_id = 0;
                    self.signals.login_error = Some(code);
                    if known == Some(ErrorCode::Busy) {
                        self.signals.login_retry_after_ms = retry_after_ms(reason);
                    }
                } else if let Some(closing) = known.filter(|c| c.closes_connection()) {
                    // The drop's cause: counted once, by the worker.
                    self.signals.closed_by = Some(closing);
                    self.errored(frame.id, stats);
                } else {
                    match known {
                        Some(known) => stats.error(known.name()),
                        None => stats.error(&format!("ERROR_{code}")),
                    }
                    self.errored(frame.id, stats);
                }
            }
            Kind::GoAway => self.signals.goaway = true,
            Kind::Push => self.on_push(frame.id, frame.body, now, window, stats),
            Kind::Room => self.on_room(frame.body, now, window, stats),
            Kind::RoomOk => self.on_room_ok(frame.id, frame.body, stats),
            other => self.verify_failed(stats, frame.id, other.name()),
        }
        Ok(())
    }

    /// An ERROR answered request `id`: it is no longer in flight.
    fn errored(&mut self, id: u64, stats: &mut Stats) {
        if self.outstanding.take(id).is_some() {
            stats.requests.errored += 1;
        }
    }

    fn awaits_login(&self, id: u64) -> bool {
        self.state == State::LoggingIn && self.login_id != 0 && id == self.login_id
    }

    /// LOGIN_OK for the login in flight: keep the session, count, signal readiness.
    fn on_login_ok(&mut self, body: &[u8], stats: &mut Stats) {
        self.login_id = 0;
        self.signals.logged_in = true;
        let ok = match LoginOk::parse(body) {
            Ok(ok) => ok,
            Err(e) => {
                // Carry on without a session to resume.
                self.verify_failed(stats, 0, &e.to_string());
                self.session = None;
                self.server_heartbeat = None;
                return;
            }
        };
        let session = ok.session();
        if self.resuming {
            if self.session.as_ref().is_some_and(|s| s.id == session.id) {
                stats.session.resumes_ok += 1;
            } else {
                stats.session.resumes_new_session += 1;
            }
        } else {
            stats.session.logins_ok += 1;
        }
        self.server_heartbeat = ok.heartbeat_s;
        self.session = Some(Box::new(session));
    }

    /// PUSH: ACK at once, then count it (duplicate, order, latency).
    fn on_push(&mut self, id: u64, body: &[u8], now: Instant, window: &Window, stats: &mut Stats) {
        encode::frame(&mut self.wbuf, Kind::Ack, id, &[]);
        stats.push.received += 1;
        stats.push.acked += 1;
        match self.pushes.record(id) {
            Seen::Duplicate => stats.push.duplicates += 1,
            Seen::First { in_order } => {
                stats.push.unique += 1;
                if !in_order {
                    stats.push.out_of_order += 1;
                }
                match pushes::stamp(body) {
                    Some(stamp) => {
                        let now_us =
                            u64::try_from(session::unix_now().as_micros()).unwrap_or(u64::MAX);
                        stats.push_latency(stamp, now_us, now, window);
                    }
                    None => stats.push.unstamped += 1,
                }
            }
        }
    }

    /// ROOM: count the frame and each message (gaps, duplicates, latency).
    fn on_room(&mut self, body: &[u8], now: Instant, window: &Window, stats: &mut Stats) {
        let batch = match tether_proto::room::Batch::parse(body) {
            Ok(batch) => batch,
            Err(e) => return self.verify_failed(stats, 0, &format!("ROOM body: {e}")),
        };
        stats.rooms.frames += 1;
        if batch.flags & tether_proto::room::REPLAY != 0 {
            stats.rooms.replayed_frames += 1;
        }
        if batch.flags & tether_proto::room::CONFLATED != 0 {
            stats.rooms.conflated_frames += 1;
        }
        let arrival = rooms::Arrival {
            at: now,
            now_us: u64::try_from(session::unix_now().as_micros()).unwrap_or(u64::MAX),
            window,
        };
        for entry in batch.entries() {
            rooms::on_message(
                &mut self.rooms,
                stats,
                batch.room,
                entry.seq,
                entry.payload,
                &arrival,
            );
        }
    }

    /// ROOM_OK `{"room","seq","member"}` answering a JOIN: numbers count from `seq`.
    fn on_room_ok(&mut self, id: u64, body: &[u8], stats: &mut Stats) {
        #[derive(serde::Deserialize)]
        struct RoomOk {
            room: String,
            seq: u64,
        }
        let Some(at) = self.joins.iter().position(|&j| j == id) else {
            return self.verify_failed(stats, id, "ROOM_OK for no JOIN in flight");
        };
        self.joins.swap_remove(at);
        match serde_json::from_slice::<RoomOk>(body) {
            Ok(ok) => {
                stats.rooms.joins_ok += 1;
                self.rooms.joined(&ok.room, ok.seq);
            }
            Err(e) => self.verify_failed(stats, id, &format!("ROOM_OK body: {e}")),
        }
    }

    fn verify_failed(&mut self, stats: &mut Stats, id: u64, what: &str) {
        stats.verify_failures += 1;
        if !self.reported {
            self.reported = true;
            tracing::warn!(conn = self.global, id, what, "reply failed verification");
        }
    }

    /// Writes as much of the queue as the socket takes.
    pub(crate) fn flush(&mut self) -> Result<(), Cause> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if let Some(link) = self.link.as_mut() {
            let taken = link.send(self.wbuf.get(self.wpos..).unwrap_or_default())?;
            self.wpos += taken;
            if self.wpos == self.wbuf.len() {
                self.wbuf.clear();
                self.wpos = 0;
            }
            return link.write(stream);
        }
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

    /// Reads what an HTTP socket has into the connection's buffer; `Ok(true)` at EOF.
    /// At most `limit` bytes are kept ([`Cause::IpListBad`] beyond).
    pub(crate) fn read_raw(&mut self, scratch: &mut [u8], limit: usize) -> Result<bool, Cause> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(true);
            };
            match stream.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    if self.rbuf.len() + n > limit {
                        return Err(Cause::IpListBad);
                    }
                    self.rbuf
                        .extend_from_slice(scratch.get(..n).unwrap_or_default());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Cause::IpListUnreachable),
            }
        }
    }

    /// The bytes read so far (an HTTP response while resolving).
    pub(crate) fn received(&self) -> &[u8] {
        &self.rbuf
    }

    /// Drops the socket and its buffers, keeping the session, the push log and the
    /// outstanding requests (the caller decides what they become).
    pub(crate) fn drop_socket(&mut self) {
        self.stream = None;
        self.link = None;
        self.connected = false;
        self.rbuf = Vec::new();
        self.wbuf = Vec::new();
        self.wpos = 0;
        self.login_id = 0;
    }

    /// Drops the socket and buffers for good; returns how many requests were still in flight.
    pub(crate) fn close(&mut self) -> usize {
        self.state = State::Closed;
        self.drop_socket();
        self.phase_at = None;
        self.ping_at = None;
        self.candidates = Vec::new();
        self.outstanding.clear()
    }
}

/// The hint of a BUSY reason: `retry_after_ms=N` at its head (doc/protocol.md).
pub(crate) fn retry_after_ms(reason: &[u8]) -> Option<u64> {
    let rest = reason.strip_prefix(b"retry_after_ms=")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pushes;
    use std::time::Duration;

    fn setup() -> (Conn, Env, Window, Stats, Instant) {
        let t0 = Instant::now();
        let window = Window {
            measure_start: t0,
            end: t0 + Duration::from_secs(10),
        };
        let mut conn = Conn::new(0, Some("127.0.0.1:1".parse().unwrap()), None);
        conn.state = State::Ready;
        (conn, Env::new(16, 1024), window, Stats::new().unwrap(), t0)
    }

    fn reply(id: u64, len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        payload::write(&mut body, 0, id, len);
        body
    }

    /// The frames queued on `conn`, as (kind, id, body).
    fn queued(conn: &Conn, env: &Env) -> Vec<(Kind, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((frame, used)) = env.decoder.decode(&conn.wbuf[at..]).unwrap() {
            out.push((frame.kind, frame.id, frame.body.to_vec()));
            at += used;
        }
        out
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
            // Not logging in: a LOGIN_OK is unexpected.
            Frame::new(Kind::LoginOk, 2, b"{}"),
        ] {
            conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        }
        assert_eq!(stats.verify_failures, 3);
        assert_eq!(stats.received, 0);
        // The corrupted id is no longer in flight; id 2 still is.
        assert_eq!(conn.outstanding.len(), 1);
        assert_eq!(conn.signals, Signals::default());
    }

    #[test]
    fn request_errors_are_counted_and_closing_errors_and_goaway_are_signalled() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_data(&env, t0, &window, &mut stats);
        let mut errors = Vec::new();
        encode::error(&mut errors, 1, ErrorCode::NoBackend, "no node");
        encode::error(&mut errors, 0, ErrorCode::Kicked, "newer login");
        let (frame, used) = env.decoder.decode(&errors).unwrap().unwrap();
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
        let (frame, _) = env.decoder.decode(&errors[used..]).unwrap().unwrap();
        conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        conn.on_frame(
            Frame::new(Kind::GoAway, 0, br#"{"reason":"x"}"#),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        let names: Vec<(&str, u64)> = stats.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(names, vec![("ERROR_99", 1), ("NO_BACKEND", 1)]);
        assert_eq!(
            conn.signals,
            Signals {
                goaway: true,
                closed_by: Some(ErrorCode::Kicked),
                ..Signals::default()
            }
        );
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
    fn every_request_ends_answered_errored_or_in_flight() {
        let (mut conn, env, window, mut stats, t0) = setup();
        for _ in 0..5 {
            conn.queue_data(&env, t0, &window, &mut stats);
        }
        let on = |conn: &mut Conn, stats: &mut Stats, kind, id, body: &[u8]| {
            conn.on_frame(Frame::new(kind, id, body), &env, t0, &window, stats)
                .unwrap();
        };
        on(&mut conn, &mut stats, Kind::Data, 1, &reply(1, 16));
        let mut frames = Vec::new();
        encode::error(
            &mut frames,
            2,
            ErrorCode::RequestTimeout,
            "no node answered",
        );
        encode::error(&mut frames, 3, ErrorCode::Busy, "retry");
        // The same id again, and an id never sent: neither is a request.
        encode::error(&mut frames, 3, ErrorCode::Busy, "retry");
        encode::error(&mut frames, 77, ErrorCode::Unavailable, "node gone");
        let mut at = 0;
        while let Some((frame, used)) = env.decoder.decode(&frames[at..]).unwrap() {
            conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
            at += used;
        }
        // A reply whose payload does not verify still answered its request.
        on(&mut conn, &mut stats, Kind::Data, 4, &reply(5, 16));
        let q = stats.requests;
        assert_eq!((q.sent, q.answered, q.errored), (5, 2, 2), "{q:?}");
        assert_eq!(stats.verify_failures, 1);
        assert_eq!(conn.outstanding.len(), 1, "id 5 is still in flight");
        assert!(!q.balanced(), "until the last one's fate is known");
        stats.requests.unanswered += conn.close() as u64;
        assert!(stats.requests.balanced(), "{:?}", stats.requests);
    }

    #[test]
    fn login_ok_keeps_the_session_and_a_resume_is_checked_against_it() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.state = State::LoggingIn;
        assert!(conn.queue_hello(Hello::Login(b"token".to_vec())));
        let (kind, id, body) = queued(&conn, &env).remove(0);
        assert_eq!((kind, body.as_slice()), (Kind::Login, &b"token"[..]));
        // A LOGIN_OK for another id is not the answer.
        let ok = br#"{"session":"s1","resume_token":"s1.t","heartbeat_s":10}"#;
        conn.on_frame(
            Frame::new(Kind::LoginOk, id + 5, ok),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert_eq!((stats.verify_failures, conn.signals.logged_in), (1, false));
        conn.on_frame(
            Frame::new(Kind::LoginOk, id, ok),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert!(conn.signals.logged_in);
        assert_eq!(conn.login_id, 0);
        assert_eq!(conn.server_heartbeat, Some(10));
        assert_eq!(stats.session.logins_ok, 1);
        let session = conn.session.as_deref().cloned().unwrap();
        assert_eq!(session.resume_token, "s1.t");

        // Reconnected: RESUME with the token; the same session back is a resume.
        conn.wbuf.clear();
        let hello = session::hello(
            &session::Login::Anonymous,
            conn.session.as_deref(),
            "d",
            Duration::ZERO,
        );
        assert!(conn.queue_hello(hello.unwrap()));
        let (kind, id, body) = queued(&conn, &env).remove(0);
        assert_eq!((kind, body.as_slice()), (Kind::Resume, &b"s1.t"[..]));
        conn.on_frame(
            Frame::new(Kind::LoginOk, id, ok),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert_eq!(stats.session.resumes_ok, 1);
        // Another session back is counted as such.
        conn.queue_hello(Hello::Resume(b"s1.t".to_vec()));
        let other = br#"{"session":"s2","resume_token":"s2.t","heartbeat_s":10}"#;
        conn.on_frame(
            Frame::new(Kind::LoginOk, conn.login_id, other),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert_eq!(stats.session.resumes_new_session, 1);
        assert_eq!(conn.session.as_ref().unwrap().id, "s2");
    }

    #[test]
    fn an_error_answering_the_login_is_signalled_with_its_code() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.state = State::LoggingIn;
        conn.queue_hello(Hello::Login(Vec::new()));
        let id = conn.login_id;
        let mut wire = Vec::new();
        encode::error(&mut wire, id, ErrorCode::Unavailable, "state link down");
        let (frame, _) = env.decoder.decode(&wire).unwrap().unwrap();
        conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        assert_eq!(conn.signals.login_error, Some(11));
        assert_eq!(conn.login_id, 0);
        assert!(stats.errors.is_empty(), "the worker counts it");
    }

    #[test]
    fn a_bad_login_ok_is_a_verify_failure_but_the_connection_carries_on() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.state = State::LoggingIn;
        conn.queue_hello(Hello::Login(Vec::new()));
        let id = conn.login_id;
        conn.on_frame(
            Frame::new(Kind::LoginOk, id, b"not json"),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert!(conn.signals.logged_in);
        assert_eq!(stats.verify_failures, 1);
        assert!(conn.session.is_none());
    }

    #[test]
    fn pushes_are_acked_at_once_and_tracked() {
        let (mut conn, env, window, mut stats, t0) = setup();
        let now_us = session::unix_now().as_micros() as u64;
        let stamped = pushes::stamped(now_us - 2_000, b"x");
        for (id, body) in [
            (5, &stamped[..]),
            (5, &stamped[..]),
            (7, b"short"),
            (6, &stamped[..]),
        ] {
            conn.on_frame(
                Frame::new(Kind::Push, id, body),
                &env,
                t0,
                &window,
                &mut stats,
            )
            .unwrap();
        }
        let acks: Vec<(Kind, u64, usize)> = queued(&conn, &env)
            .into_iter()
            .map(|(k, id, body)| (k, id, body.len()))
            .collect();
        assert_eq!(
            acks,
            vec![
                (Kind::Ack, 5, 0),
                (Kind::Ack, 5, 0),
                (Kind::Ack, 7, 0),
                (Kind::Ack, 6, 0)
            ]
        );
        let p = stats.push;
        assert_eq!((p.received, p.acked, p.unique, p.duplicates), (4, 4, 3, 1));
        assert_eq!((p.out_of_order, p.unstamped), (1, 1));
        assert_eq!(stats.push_latency.len(), 2);
        assert!(
            stats.push_latency.min() >= 1_900,
            "{}",
            stats.push_latency.min()
        );
        assert!(stats.errors.is_empty() && stats.verify_failures == 0);
    }

    #[test]
    fn joins_are_answered_and_room_frames_counted() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_joins(&["room-0".to_string(), "room-1".to_string()]);
        let joins = queued(&conn, &env);
        assert_eq!(joins.len(), 2);
        assert_eq!(joins[0].0, Kind::Join);
        let join = tether_proto::room::Join::parse(&joins[0].2).unwrap();
        assert_eq!((join.after, join.room), (0, "room-0"));
        let on = |conn: &mut Conn, stats: &mut Stats, kind, id, body: &[u8]| {
            conn.on_frame(Frame::new(kind, id, body), &env, t0, &window, stats)
                .unwrap();
        };
        on(
            &mut conn,
            &mut stats,
            Kind::RoomOk,
            joins[0].1,
            br#"{"room":"room-0","seq":4,"member":true}"#,
        );
        let mut refusal = Vec::new();
        encode::error(&mut refusal, joins[1].1, ErrorCode::Forbidden, "no claim");
        let (frame, _) = env.decoder.decode(&refusal).unwrap().unwrap();
        conn.on_frame(frame, &env, t0, &window, &mut stats).unwrap();
        // A window of two messages after seq 4, then one that skips 7, then 8 again.
        let now_us = session::unix_now().as_micros() as u64;
        let mut body = Vec::new();
        let mut w = tether_proto::room::BatchWriter::start(&mut body, 0, "room-0");
        w.push(&mut body, 5, &rooms::stamped(now_us - 1_000, 1, 32));
        w.push(&mut body, 6, &rooms::stamped(now_us - 1_000, 2, 32));
        on(&mut conn, &mut stats, Kind::Room, 6, &body);
        let mut body = Vec::new();
        let mut w = tether_proto::room::BatchWriter::start(&mut body, 0, "room-0");
        w.push(&mut body, 8, &rooms::stamped(now_us, 4, 32));
        w.push(&mut body, 8, &rooms::stamped(now_us, 4, 32));
        on(&mut conn, &mut stats, Kind::Room, 8, &body);
        on(&mut conn, &mut stats, Kind::Room, 0, b"\x00");
        let r = stats.rooms;
        assert_eq!((r.joins_ok, r.joins_refused), (1, 1));
        assert_eq!(
            (r.frames, r.deliveries, r.gaps, r.missing, r.duplicates),
            (2, 4, 1, 1, 1)
        );
        assert_eq!(stats.room_latency.len(), 3);
        assert!(
            stats.room_latency.max() >= 900,
            "{}",
            stats.room_latency.max()
        );
        assert_eq!(stats.verify_failures, 1, "the bad ROOM body");
        // A re-JOIN asks for what came after the last number seen.
        conn.wbuf.clear();
        conn.queue_joins(&["room-0".to_string()]);
        let again = queued(&conn, &env);
        let join = tether_proto::room::Join::parse(&again[0].2).unwrap();
        assert_eq!(join.after, 8);
    }

    #[test]
    fn pings_and_pongs_are_counted() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_ping(&mut stats);
        let (kind, id, body) = queued(&conn, &env).remove(0);
        assert_eq!((kind, body.len()), (Kind::Ping, 0));
        conn.on_frame(
            Frame::new(Kind::Pong, id, b""),
            &env,
            t0,
            &window,
            &mut stats,
        )
        .unwrap();
        assert_eq!((stats.session.pings, stats.session.pongs), (1, 1));
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        use std::io::Write;

        let (mut conn, env, window, mut stats, t0) = setup();
        let mut wire = Vec::new();
        for id in 1..=3 {
            encode::frame(&mut wire, Kind::Data, id, &reply(id, 16));
        }
        let frame_len = wire.len() / 3;
        // The server's side of a loopback connection writes each part; `read` takes it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        socket.set_nonblocking(true).unwrap();
        conn.stream = Some(TcpStream::from_std(socket));
        let mut scratch = vec![0; 64 * 1024];
        let cuts = [1, 5, 14, 29, 31, 60];
        for cut in cuts {
            conn.outstanding.clear();
            for id in 1..=3 {
                conn.outstanding.push(id, t0);
            }
            let before = stats.received;
            for (part, frames, tail) in [
                (&wire[..cut], cut / frame_len, cut % frame_len),
                (&wire[cut..], 3, 0),
            ] {
                server.write_all(part).unwrap();
                // Loopback delivers at once, but read until the part is in.
                for _ in 0..100 {
                    conn.read(&mut scratch, &env, t0, &window, &mut stats)
                        .unwrap();
                    if stats.received - before == frames as u64 && conn.rbuf.len() == tail {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                assert_eq!(
                    (stats.received - before, conn.rbuf.len()),
                    (frames as u64, tail),
                    "cut at {cut}"
                );
            }
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

    #[test]
    fn closing_keeps_nothing_but_the_count_in_flight() {
        let (mut conn, env, window, mut stats, t0) = setup();
        conn.queue_data(&env, t0, &window, &mut stats);
        conn.session = Some(Box::new(Session {
            id: "s".into(),
            resume_token: "s.t".into(),
        }));
        conn.drop_socket();
        assert_eq!((conn.backlog(), conn.outstanding.len()), (0, 1));
        assert!(conn.session.is_some(), "kept for RESUME");
        assert_eq!(conn.close(), 1);
        assert_eq!(conn.state, State::Closed);
    }

    #[test]
    fn only_a_phase_waiting_for_the_server_has_a_timeout() {
        let (mut conn, ..) = setup();
        for (state, login_id, waits) in [
            (State::Resolving, 0, true),
            (State::Connecting, 0, true),
            (State::LoggingIn, 7, true),
            // A login answered BUSY or UNAVAILABLE waits for its own retry.
            (State::LoggingIn, 0, false),
            (State::Leaving, 0, true),
            (State::Backoff, 0, false),
            (State::Ready, 0, false),
        ] {
            conn.state = state;
            conn.login_id = login_id;
            assert_eq!(conn.awaits_server(), waits, "{state:?} login {login_id}");
        }
    }

    #[test]
    fn a_busy_reason_gives_its_hint() {
        assert_eq!(retry_after_ms(b"retry_after_ms=250; too many"), Some(250));
        assert_eq!(retry_after_ms(b"retry_after_ms=; x"), None);
        assert_eq!(retry_after_ms(b"busy"), None);
    }
}
