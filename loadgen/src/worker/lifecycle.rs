//! How one connection gets up, comes back after a GOAWAY, or is given up — the worker's
//! side of a connection's life, where sockets are opened, registered and closed.
//!
//! ```text
//!  Idle ─▶ Resolving ─▶ Connecting ─▶ LoggingIn ─▶ Ready ──GOAWAY──▶ Leaving
//!  (dial)  (/ip_list)   (next gateway  (LOGIN or    (DATA,            (replies still due)
//!            │           on failure)    RESUME)      PINGs,                 │
//!            │               │             │         ACKs)                  ▼
//!            └───────────────┴─────────────┴──── failed attempt ──▶ Backoff ─▶ Resolving …
//! ```
//!
//! An attempt (one `/ip_list` answer, or the `--target` list, tried gateway by gateway) that
//! fails before the connection was ever ready fails the connection (`conns.failed`), as a
//! plain connect failure always has. A connection told GOAWAY instead keeps trying, with a
//! growing backoff, until `--reconnect-timeout` (see [`crate::reconnect`]). A ready
//! connection lost any other way is dropped (`conns.dropped`). Every failure is counted in
//! `errors` under its cause, including attempts a fallback recovered from. With
//! `--resume-on-loss`, a ready connection lost without a GOAWAY (its host died) gets back
//! like one told GOAWAY, counted with the GOAWAYs in `reconnects`.

use std::time::{Duration, Instant};

use mio::{Interest, Token};
use tether_proto::ErrorCode;

use super::Worker;
use crate::cause::Cause;
use crate::conn::{Conn, Reconnect, State};
use crate::deadlines::Alarm;
use crate::dial;
use crate::ip_list;
use crate::reconnect::{self, LEAVE_WAIT, LOGIN_RETRIES};
use crate::session::{self, Hello};

impl Worker<'_> {
    /// Starts an attempt to reach a gateway: ask `/ip_list`, or walk the `--target`s.
    pub(super) fn start_attempt(&mut self, k: usize, now: Instant) {
        if self.config.ipconfig.is_some() {
            self.start_fetch(k, now);
        } else {
            let first = self.conns.get(k).and_then(|c| c.target);
            let listed = ip_list::from_targets(&self.config.targets, first);
            self.try_gateways(k, &listed, now);
        }
    }

    /// Tries `listed` in order, minus the gateway that said GOAWAY while another is listed.
    pub(super) fn try_gateways(&mut self, k: usize, listed: &[std::net::SocketAddr], now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let (avoid, allow) = conn
            .reconnect
            .map_or((None, false), |r| (r.avoid, r.allow_avoided));
        let mut candidates = ip_list::candidates(listed, avoid, allow);
        if candidates.is_empty() {
            // Only the gateway going away is listed: wait, then take it (it may be back).
            if let Some(r) = conn.reconnect.as_mut() {
                r.allow_avoided = true;
            }
            conn.state = State::Backoff;
            return self.back_off(k, now);
        }
        candidates.reverse(); // popped from the back: best first
        conn.candidates = candidates;
        self.connect_next(k, now);
    }

    /// Connects to the next candidate gateway; when none is left, the attempt failed.
    pub(super) fn connect_next(&mut self, k: usize, now: Instant) {
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            let Some(addr) = conn.candidates.pop() else {
                return self.retry_or_fail(k, now);
            };
            let mut stream = match dial::connect(addr, conn.source) {
                Ok(stream) => stream,
                Err(cause) => {
                    self.stats.error(cause.name());
                    continue;
                }
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(k), interest)
            {
                self.stats.error(Cause::of_connect_error(&e).name());
                continue;
            }
            conn.link = match self
                .link
                .start(conn.global as u64 ^ now.elapsed().as_nanos() as u64)
            {
                Ok(link) => link,
                Err(cause) => {
                    self.stats.error(cause.name());
                    continue;
                }
            };
            conn.stream = Some(stream);
            conn.peer = Some(addr);
            conn.connected = false;
            conn.state = State::Connecting;
            return self.set_phase(k, now, self.config.connect_timeout);
        }
    }

    /// The TCP connect to a gateway completed: LOGIN or RESUME, or ready at once.
    pub(super) fn on_connected(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.connected = true;
        conn.candidates = Vec::new();
        if !conn.ever_connected {
            conn.ever_connected = true;
            self.stats.established += 1;
        }
        conn.login_retries = 0;
        if self.send_hello(k, now) {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.state = State::LoggingIn;
            }
        } else {
            self.on_ready(k, now);
        }
    }

    /// Queues LOGIN or RESUME with a fresh deadline; `false` when the connection does not
    /// log in.
    pub(super) fn send_hello(&mut self, k: usize, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(k) else {
            return false;
        };
        let login = &self.config.login;
        let hello = if login.enabled() {
            let device = session::device_id(
                &self.config.device_prefix,
                self.config.device_offset,
                conn.global,
            );
            match session::hello_with(
                login,
                conn.session.as_deref(),
                &device,
                session::unix_now(),
                &self.config.claims,
            ) {
                Ok(hello) => hello,
                Err(_) => {
                    // No randomness to sign with: nothing goes out, and the login deadline
                    // tries again (as after UNAVAILABLE).
                    self.stats.error("token_signing");
                    self.set_phase(k, now, self.config.connect_timeout);
                    return true;
                }
            }
        } else {
            Hello::Nothing
        };
        if !conn.queue_hello(hello) {
            return false;
        }
        self.set_phase(k, now, self.config.connect_timeout);
        true
    }

    /// Connected and, when logging in, logged in: DATA may flow; heartbeats start.
    pub(super) fn on_ready(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.state = State::Ready;
        conn.phase_at = None;
        conn.login_retries = 0;
        if !conn.up {
            conn.up = true;
            self.settling = self.settling.saturating_sub(1);
            self.open += 1;
            if self.config.login.enabled() {
                self.stats.session.logged_in += 1;
            }
        }
        if conn.reconnect.take().is_some() {
            self.reconnecting = self.reconnecting.saturating_sub(1);
            self.stats.session.reconnects_ok += 1;
        }
        if let Some(rooms) = self.config.rooms.as_ref().filter(|r| r.per_conn > 0) {
            if self.config.login.enabled() {
                let names: Vec<String> =
                    crate::rooms::rooms_of(conn.global, rooms.count, rooms.per_conn)
                        .into_iter()
                        .map(|i| crate::rooms::room_name(&rooms.prefix, i))
                        .collect();
                conn.queue_joins(&names);
            }
        }
        conn.heartbeat = (self.config.login.enabled() || self.config.heartbeat.is_some())
            .then(|| session::heartbeat(self.config.heartbeat, conn.server_heartbeat));
        if let Some(interval) = conn.heartbeat {
            conn.ping_at = Some(self.deadlines.set_ping(now + interval, k));
        }
    }

    /// A PING is due on `conns[k]` (scheduled for `at`).
    pub(super) fn ping(&mut self, k: usize, at: Instant, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let (true, Some(interval)) = (conn.is_ready(), conn.heartbeat) else {
            conn.ping_at = None;
            return;
        };
        conn.queue_ping(&mut self.stats);
        // Keep to the timetable unless the worker fell a whole interval behind.
        let next = if at + interval > now {
            at + interval
        } else {
            now + interval
        };
        conn.ping_at = Some(self.deadlines.set_ping(next, k));
        self.flush(k);
    }

    /// GOAWAY: stop sending, wait for the replies still due, then get back through
    /// `/ip_list` (or the next target), avoiding this gateway.
    pub(super) fn on_goaway(&mut self, k: usize, now: Instant) {
        self.stats.session.goaways += 1;
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if !matches!(
            conn.state,
            State::Connecting | State::LoggingIn | State::Ready
        ) {
            return;
        }
        reconnect_avoiding_peer(
            conn,
            &mut self.reconnecting,
            now + self.config.reconnect_timeout,
        );
        conn.state = State::Leaving;
        conn.login_id = 0;
        conn.ping_at = None;
        self.set_phase(k, now, LEAVE_WAIT);
    }

    /// Closes a connection told GOAWAY (its replies are in, or [`LEAVE_WAIT`] passed) and
    /// starts getting back; replies still missing are counted as `goaway_unanswered`.
    pub(super) fn leave(&mut self, k: usize, now: Instant) {
        if let Some(conn) = self.conns.get_mut(k) {
            // The last acknowledgements, if the socket takes them.
            let _ = conn.flush();
            let lost = conn.outstanding.clear() as u64;
            self.stats.errors_n("goaway_unanswered", lost);
            self.stats.requests.lost += lost;
        }
        self.unhook(k);
        self.start_attempt(k, now);
    }

    /// The deadline of `conns[k]`'s current phase passed.
    pub(super) fn phase_timeout(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get(k) else {
            return;
        };
        match conn.state {
            State::Resolving => self.fetch_deadline(k, now),
            State::Connecting => self.attempt_failed(k, Cause::ConnectTimeout, now),
            // No login in flight: a retry after UNAVAILABLE is due.
            State::LoggingIn if conn.login_id == 0 => {
                if self.send_hello(k, now) {
                    self.flush(k);
                }
            }
            State::LoggingIn => self.lose(k, Cause::LoginTimeout, now),
            State::Leaving => self.leave(k, now),
            State::Backoff => self.start_attempt(k, now),
            State::Idle | State::Ready | State::Closed => {}
        }
    }

    /// Acts on what the frames of one read signalled, then on the read's own outcome.
    pub(super) fn after_io(&mut self, k: usize, result: Result<(), Cause>, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let signals = std::mem::take(&mut conn.signals);
        if signals.logged_in {
            self.on_ready(k, now);
        }
        if signals.goaway {
            self.on_goaway(k, now);
        }
        if let Some(code) = signals.login_error {
            if code == ErrorCode::Busy.as_u16() {
                return self.on_login_busy(k, signals.login_retry_after_ms, result, now);
            }
            return self.on_login_error(k, code, result, now);
        }
        if let Some(code) = signals.closed_by {
            return self.lose(k, Cause::Server(code), now);
        }
        if let Err(cause) = result {
            return self.lose(k, cause, now);
        }
        let Some(conn) = self.conns.get(k) else {
            return;
        };
        if conn.state == State::Leaving && conn.outstanding.is_empty() {
            return self.leave(k, now);
        }
        self.refill(k, now);
        self.flush(k);
    }

    /// The LOGIN or RESUME in flight was answered BUSY: the gateway has as many logins at
    /// its state daemon as it takes. Not a failure: the connection stays, and sends its
    /// LOGIN or RESUME again after the gateway's hint (or a backoff without one), spread
    /// over 0.5 to 1.5 times it so that refused clients do not come back together.
    fn on_login_busy(
        &mut self,
        k: usize,
        hint_ms: Option<u64>,
        result: Result<(), Cause>,
        now: Instant,
    ) {
        self.stats.session.logins_busy += 1;
        if let Err(cause) = result {
            return self.lose(k, cause, now);
        }
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let wait = match hint_ms {
            Some(ms) => reconnect::jittered(Duration::from_millis(ms), conn.global, conn.busy),
            None => reconnect::backoff(conn.busy.min(8), conn.global),
        };
        conn.busy = conn.busy.wrapping_add(1);
        self.set_phase(k, now, wait)
    }

    /// The LOGIN or RESUME in flight was answered ERROR `code`. UNAVAILABLE and the other
    /// codes that keep the connection are retried after a backoff (up to
    /// [`LOGIN_RETRIES`]); the rest fail the attempt. A refused RESUME (AUTH_FAILED: the
    /// window passed) forgets the session, so the next attempt logs in afresh.
    fn on_login_error(&mut self, k: usize, code: u16, result: Result<(), Cause>, now: Instant) {
        let known = ErrorCode::from_u16(code);
        match known {
            Some(known) => self.stats.error(known.name()),
            None => self.stats.error(&format!("ERROR_{code}")),
        }
        let closes = known.is_some_and(ErrorCode::closes_connection);
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if !closes && conn.login_retries < LOGIN_RETRIES {
            if let Err(cause) = result {
                return self.lose(k, cause, now);
            }
            let wait = reconnect::backoff(conn.login_retries, conn.global);
            conn.login_retries += 1;
            return self.set_phase(k, now, wait);
        }
        if conn.resuming {
            self.stats.session.resumes_failed += 1;
            if known == Some(ErrorCode::AuthFailed) {
                conn.session = None;
            }
        } else {
            self.stats.session.logins_failed += 1;
        }
        self.unhook(k);
        self.retry_or_fail(k, now);
    }

    /// `conns[k]` lost its socket for `cause`: what that means depends on where it was.
    pub(super) fn lose(&mut self, k: usize, cause: Cause, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        match conn.state {
            State::Idle | State::Backoff | State::Closed => {}
            State::Resolving | State::Connecting => self.attempt_failed(k, cause, now),
            State::LoggingIn => {
                if conn.resuming {
                    self.stats.session.resumes_failed += 1;
                } else {
                    self.stats.session.logins_failed += 1;
                }
                self.stats.error(cause.name());
                self.unhook(k);
                self.retry_or_fail(k, now);
            }
            State::Leaving => {
                // The old gateway closed first (its drain ended): expected, unless it says
                // something else.
                if cause != Cause::Eof {
                    self.stats.error(cause.name());
                }
                let lost = conn.outstanding.clear() as u64;
                self.stats.errors_n("goaway_unanswered", lost);
                self.stats.requests.lost += lost;
                self.unhook(k);
                self.start_attempt(k, now);
            }
            State::Ready if self.config.resume_on_loss => {
                // Its gateway or host died: back through another one, as after a GOAWAY.
                tracing::debug!(conn = conn.global, peer = ?conn.peer, cause = cause.name(), "connection lost; resuming elsewhere");
                self.stats.error(cause.name());
                self.stats.session.goaways += 1;
                reconnect_avoiding_peer(
                    conn,
                    &mut self.reconnecting,
                    now + self.config.reconnect_timeout,
                );
                conn.login_id = 0;
                conn.ping_at = None;
                let lost = conn.outstanding.clear() as u64;
                self.stats.errors_n("lost_unanswered", lost);
                self.stats.requests.lost += lost;
                let wait = reconnect::spread_out(self.config.reconnect_spread, conn.global);
                self.unhook(k);
                if wait.is_zero() {
                    self.start_attempt(k, now);
                } else if let Some(conn) = self.conns.get_mut(k) {
                    conn.state = State::Backoff;
                    self.set_phase(k, now, wait);
                }
            }
            State::Ready => {
                tracing::debug!(conn = conn.global, peer = ?conn.peer, cause = cause.name(), "connection lost");
                self.stats.error(cause.name());
                self.give_up(k);
            }
        }
    }

    /// An attempt to reach a gateway (or ipconfig) failed for `cause`: the next gateway
    /// listed, else a retry (reconnecting) or the end of the connection.
    pub(super) fn attempt_failed(&mut self, k: usize, cause: Cause, now: Instant) {
        self.stats.error(cause.name());
        self.unhook(k);
        let more = self
            .conns
            .get(k)
            .is_some_and(|c| c.state == State::Connecting && !c.candidates.is_empty());
        if more {
            self.connect_next(k, now);
        } else {
            self.retry_or_fail(k, now);
        }
    }

    /// The attempt failed as a whole: back off and retry while getting back after a
    /// GOAWAY; otherwise the connection failed.
    fn retry_or_fail(&mut self, k: usize, now: Instant) {
        let reconnecting = self.conns.get(k).is_some_and(|c| c.reconnect.is_some());
        if reconnecting {
            self.back_off(k, now);
        } else {
            self.give_up(k);
        }
    }

    /// Waits before the next attempt, unless that would pass `--reconnect-timeout`.
    fn back_off(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let global = conn.global;
        let Some(r) = conn.reconnect.as_mut() else {
            return self.give_up(k);
        };
        let wait = reconnect::backoff(r.attempts, global);
        r.attempts += 1;
        if now + wait > r.by {
            self.stats.error(Cause::ReconnectTimeout.name());
            return self.give_up(k);
        }
        conn.state = State::Backoff;
        self.set_phase(k, now, wait);
    }

    /// The connection is over before the end of the run: dropped if it had been ready,
    /// failed otherwise. (Its cause is already counted.)
    pub(super) fn give_up(&mut self, k: usize) {
        self.unhook(k);
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.state == State::Closed {
            return;
        }
        let was_up = conn.up;
        if conn.reconnect.take().is_some() {
            self.reconnecting = self.reconnecting.saturating_sub(1);
            self.stats.session.reconnects_failed += 1;
        }
        let unanswered = conn.close() as u64;
        self.stats.errors_n("unanswered", unanswered);
        self.stats.requests.lost += unanswered;
        if was_up {
            self.stats.dropped += 1;
            self.open = self.open.saturating_sub(1);
        } else {
            self.stats.failed += 1;
            self.settling = self.settling.saturating_sub(1);
        }
    }

    /// Deregisters and drops `conns[k]`'s socket (the connection itself lives on).
    pub(super) fn unhook(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if let Some(stream) = conn.stream.as_mut() {
            let _ = self.poll.registry().deregister(stream);
        }
        conn.drop_socket();
    }

    /// Sets the deadline of `conns[k]`'s current phase to `wait` after `now`, in the
    /// worker's own time: pushed back by whatever lag accrues meanwhile (see [`crate::lag`]).
    pub(super) fn set_phase(&mut self, k: usize, now: Instant, wait: Duration) {
        let lag = self.lag.total(now);
        if let Some(conn) = self.conns.get_mut(k) {
            let at = now + wait;
            conn.phase_at = Some(at);
            conn.phase_lag = lag;
            self.deadlines.set(at, k, Alarm::Phase);
        }
    }
}

/// Sends `conn` back through another gateway than its peer, to be back `by` then (counted in
/// `reconnecting`); a way back already under way only changes which gateway it avoids.
fn reconnect_avoiding_peer(conn: &mut Conn, reconnecting: &mut usize, by: Instant) {
    match conn.reconnect.as_mut() {
        Some(r) => r.avoid = conn.peer,
        None => {
            *reconnecting += 1;
            conn.reconnect = Some(Reconnect {
                avoid: conn.peer,
                allow_avoided: false,
                attempts: 0,
                by,
            });
        }
    }
}
