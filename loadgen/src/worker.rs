//! One load thread: its share of the connections in its own `mio::Poll`, driven through
//! four phases —
//!
//! 1. **connect**: dial every connection (paced by `--connect-rate`): fetch `/ip_list`
//!    when using ipconfig, connect (falling back to the next gateway), log in; wait until
//!    each is ready, failed or timed out;
//! 2. **start line**: wait until every worker is connected, so the load starts at one
//!    shared instant;
//! 3. **load**: for `--duration`, keep `--pipeline` frames outstanding per connection, or
//!    send on the `--rate` timetable (woken at the next due send: poll timeout, sharpened
//!    by a timerfd — see [`crate::timer`]);
//! 4. **drain**: stop sending, wait up to `--drain` for outstanding replies (and for
//!    connections still getting back after a GOAWAY), then close; whatever is still
//!    outstanding counts as `unanswered`.
//!
//! Throughout, connections heartbeat, acknowledge pushes and follow GOAWAY back to a
//! gateway; per-connection timeouts, backoffs and PINGs come from one timer heap
//! ([`Deadlines`]) that bounds every poll. How a connection gets up, comes back and is given
//! up is in [`lifecycle`]; the `/ip_list` fetch on its socket in [`fetch`].
//!
//! Nothing is shared with other threads on the hot path: the worker's [`Stats`] are its own,
//! and it publishes running totals to its progress [`Slot`] once per loop iteration.

mod fetch;
mod lifecycle;

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use thiserror::Error;

use crate::config::{Config, Mode};
use crate::conn::{Conn, Env, State};
use crate::deadlines::{Alarm, Deadlines};
use crate::dial;
use crate::lag::Lag;
use crate::link::LinkSpec;
use crate::progress::{Live, Slot};
use crate::schedule::{self, Round, Schedule};
use crate::start_line::{Arrival, StartLine};
use crate::stats::{Stats, Window};
use crate::timer::{self, Timer};

/// Poll timeout while waiting at the start line.
const START_LINE_POLL: Duration = Duration::from_millis(2);
/// Bytes read from a socket at once.
const SCRATCH: usize = 64 * 1024;
const EVENTS: usize = 1024;
/// Open loop: frames due this soon after a wake-up are sent in the same wake-up.
const LOOKAHEAD: Duration = Duration::from_micros(100);
/// How long past an armed timer the poll timeout lets a worker sleep.
const TIMER_SAFETY: Duration = Duration::from_millis(2);

/// What every worker of a run shares (read-only, or atomics).
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    pub live: Live,
    pub start_line: StartLine,
    /// When dialling began; `--connect-rate` paces from here.
    pub connect_start: Instant,
}

/// A worker that could not run at all.
#[derive(Debug, Error)]
pub(crate) enum WorkerError {
    #[error("creating the mio poll")]
    CreatePoll(#[source] io::Error),
    #[error("polling")]
    Poll(#[source] io::Error),
    #[error("creating the latency histogram")]
    Histogram(#[from] hdrhistogram::CreationError),
    #[error("setting up --tls/--ws/--wss: {0}")]
    Link(String),
}

/// Runs worker `index` over `conns` (whose `global` indices ascend) and returns its stats.
pub(crate) fn run(
    index: usize,
    conns: Vec<Conn>,
    shared: Arc<Shared>,
) -> Result<Stats, WorkerError> {
    let mut arrival = Arrival::new(&shared.start_line);
    let mut worker = Worker::new(index, conns, &shared)?;
    worker.connect_all()?;
    arrival.arrive();
    let start = worker.wait_for_start()?;
    worker.load(start)?;
    if shared.config.hold {
        worker.check()?;
    }
    worker.drain()?;
    worker.close_all();
    Ok(worker.stats)
}

struct Worker<'a> {
    config: &'a Config,
    start_line: &'a StartLine,
    connect_start: Instant,
    slot: &'a Slot,
    poll: Poll,
    events: Events,
    /// (token, read-ish) of the last poll's events.
    ready: Vec<(usize, bool)>,
    conns: Vec<Conn>,
    env: Env,
    /// How each connection to a gateway sets up its TLS or WebSocket link.
    link: LinkSpec,
    stats: Stats,
    scratch: Vec<u8>,
    window: Window,
    /// Closed loop: frames to keep outstanding per connection, while `sending`.
    pipeline: Option<usize>,
    sending: bool,
    /// Connections that have been ready and are not lost: ready, or getting back after a
    /// GOAWAY.
    open: u64,
    /// Connections dialled that are neither ready yet nor given up.
    settling: usize,
    /// Connections getting back to a gateway after a GOAWAY.
    reconnecting: usize,
    /// Per-connection timeouts, backoffs and heartbeats.
    deadlines: Deadlines,
    /// How long the worker has been behind its sockets; phase deadlines wait for it.
    lag: Lag,
    /// Connections with frames queued this iteration, to flush once.
    dirty: Vec<usize>,
    /// Open loop: wakes the poll at the next due send more precisely than its timeout can.
    timer: Option<Timer>,
    /// When the last poll returned (`--coalesce-ms` counts from it).
    woke: Instant,
}

impl<'a> Worker<'a> {
    fn new(index: usize, conns: Vec<Conn>, shared: &'a Shared) -> Result<Worker<'a>, WorkerError> {
        let config = &shared.config;
        // Until the load starts nothing is measured: the window lies far ahead.
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        Ok(Worker {
            config,
            start_line: &shared.start_line,
            connect_start: shared.connect_start,
            slot: shared.live.slot(index),
            poll: Poll::new().map_err(WorkerError::CreatePoll)?,
            events: Events::with_capacity(EVENTS),
            ready: Vec::with_capacity(EVENTS),
            conns,
            env: Env {
                data_flags: if config.resend_safe {
                    crate::conn::FLAG_RESEND_SAFE
                } else {
                    0
                },
                ..Env::new(config.payload, config.max_body)
            },
            link: LinkSpec::new(
                config.transport,
                config.tls_ca.as_deref(),
                &config.server_name,
                &config.ws_path,
            )
            .map_err(WorkerError::Link)?,
            stats: Stats::new()?,
            scratch: vec![0; SCRATCH],
            window: Window {
                measure_start: far,
                end: far,
            },
            pipeline: None,
            sending: false,
            open: 0,
            settling: 0,
            reconnecting: 0,
            deadlines: Deadlines::new(Instant::now()),
            lag: Lag::new(),
            dirty: Vec::new(),
            timer: None,
            woke: Instant::now(),
        })
    }

    /// Phase 1: dial everything and wait until each connection is ready, failed or timed
    /// out. Dials at most [`schedule::DIALS_PER_TURN`] per turn, so a worker behind its
    /// `--connect-rate` keeps reading what the connections it dialled are answering.
    fn connect_all(&mut self) -> Result<(), WorkerError> {
        let rate = self.config.connect_rate;
        let mut next = 0;
        loop {
            let now = Instant::now();
            let pending = self.conns.get(next..).unwrap_or_default();
            let due = schedule::dials_due(
                self.connect_start,
                rate,
                pending.iter().map(|c| c.global),
                now,
                schedule::DIALS_PER_TURN,
            );
            for _ in 0..due {
                self.settling += 1;
                self.start_attempt(next, now);
                next += 1;
            }
            let next_dial = self
                .conns
                .get(next)
                .map(|c| schedule::dial_at(self.connect_start, rate, c.global));
            let wake = match next_dial {
                // Overdue: a poll that does not wait, then the next turn.
                Some(at) => at,
                None if self.settling == 0 => {
                    self.stats.setup = self.connect_start.elapsed();
                    return Ok(());
                }
                None => now + self.config.connect_timeout,
            };
            self.poll_until(wake)?;
        }
    }

    /// Phase 2: keep servicing connections until every worker is connected.
    fn wait_for_start(&mut self) -> Result<Instant, WorkerError> {
        let start = loop {
            if let Some(start) = self.start_line.start() {
                break start;
            }
            self.poll_until(Instant::now() + START_LINE_POLL)?;
        };
        while Instant::now() < start {
            self.poll_until(start)?;
        }
        Ok(start)
    }

    /// Phase 3: offer load from `start` for `--duration`.
    fn load(&mut self, start: Instant) -> Result<(), WorkerError> {
        self.window = Window {
            measure_start: start + self.config.warmup,
            end: start + self.config.duration,
        };
        self.sending = true;
        let mut round = match self.config.mode {
            Mode::Pipeline(k) => {
                self.pipeline = Some(k);
                for i in 0..self.conns.len() {
                    // A fresh clock per connection: filling thousands takes a while.
                    self.refill(i, Instant::now());
                    self.flush(i);
                }
                None
            }
            Mode::Rate(rate) => {
                let schedule = Schedule::new(start, rate, self.config.conns);
                let sending = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.echo)
                    .map(|(pos, c)| (pos, c.global))
                    .collect();
                self.timer = Timer::new(self.poll.registry())
                    .map_err(|e| tracing::debug!(error = %e, "no timerfd; sends keep to whole ms"))
                    .ok();
                Some(Round::new(schedule, sending))
            }
            // Heartbeats only: their timers bound the poll.
            Mode::Hold => None,
        };
        loop {
            let now = Instant::now();
            let mut wake = self.window.end;
            if let Some(round) = round.as_mut() {
                // Also once more after the end: frames due before it are sent even if late.
                self.send_due(round, now);
                if let Some(due) = round.peek() {
                    wake = wake.min(due.at);
                }
            }
            // Past the end, or nothing left to load.
            if now >= self.window.end || self.open == 0 {
                break;
            }
            if let Some(next) = self.deadlines.next() {
                wake = wake.min(next);
            }
            let mut timeout = wake.saturating_duration_since(now);
            if let Some(timer) = &self.timer {
                // The timer wakes us on time; the poll timeout is only a safety net.
                if timer.arm(timeout).is_ok() {
                    timeout += TIMER_SAFETY;
                }
            }
            self.poll_once(timeout)?;
            self.fire_timers(Instant::now());
            self.publish();
        }
        self.sending = false;
        Ok(())
    }

    /// Open loop: queue every frame due by `now` (all of them, if the loop fell behind: their
    /// latency clock already started at the scheduled time) and those due within
    /// [`LOOKAHEAD`] (sent a little early, measured from `now`, so the worker wakes at most
    /// once per lookahead), then flush each touched socket. A send due on a connection
    /// that is getting back after a GOAWAY is skipped and counted.
    fn send_due(&mut self, round: &mut Round, now: Instant) {
        let horizon = now + LOOKAHEAD;
        while let Some(due) = round.peek() {
            if due.at > horizon || due.at >= self.window.end {
                break;
            }
            round.advance();
            let Some(conn) = self.conns.get_mut(due.pos) else {
                continue;
            };
            if !conn.is_ready() {
                if conn.reconnect.is_some() {
                    self.stats.session.skipped += 1;
                }
                continue;
            }
            // A connection with bytes already queued is either listed in `dirty` or waiting
            // for a writable event, which flushes everything.
            if conn.backlog() == 0 {
                self.dirty.push(due.pos);
            }
            let since = due.at.min(now);
            conn.queue_data(&self.env, since, &self.window, &mut self.stats);
        }
        while let Some(k) = self.dirty.pop() {
            self.flush(k);
        }
    }

    /// `--hold`, after the hold: every ready connection PINGs once more (at `--check-rate`
    /// across the run, in global order from the end of the hold, or all at once) and must
    /// have its PONG within `--connect-timeout` of the last check sent; one that does not is
    /// given up as dropped (`check_unanswered`).
    fn check(&mut self) -> Result<(), WorkerError> {
        let start = self.window.end;
        let mut next = 0;
        loop {
            let now = Instant::now();
            while let Some(conn) = self.conns.get_mut(next) {
                if schedule::dial_at(start, self.config.check_rate, conn.global) > now {
                    break;
                }
                if conn.is_ready() {
                    conn.queue_check(&mut self.stats);
                    self.flush(next);
                }
                next += 1;
            }
            if let Some(conn) = self.conns.get(next) {
                self.poll_until(schedule::dial_at(
                    start,
                    self.config.check_rate,
                    conn.global,
                ))?;
                continue;
            }
            break;
        }
        let deadline = Instant::now() + self.config.connect_timeout;
        loop {
            let waiting = self.conns.iter().any(|c| c.check_id != 0 && c.is_ready());
            if !waiting || Instant::now() >= deadline {
                break;
            }
            self.poll_until(deadline)?;
        }
        for k in 0..self.conns.len() {
            let unanswered = self
                .conns
                .get(k)
                .is_some_and(|c| c.check_id != 0 && c.is_ready());
            if unanswered {
                self.stats.error("check_unanswered");
                self.give_up(k);
            }
        }
        Ok(())
    }

    /// Phase 4: wait up to `--drain` for the replies still outstanding and the connections
    /// still getting back after a GOAWAY.
    fn drain(&mut self) -> Result<(), WorkerError> {
        let deadline = self.window.end + self.config.drain;
        loop {
            let in_flight = self.conns.iter().any(|c| !c.outstanding.is_empty());
            if (!in_flight && self.reconnecting == 0) || Instant::now() >= deadline {
                return Ok(());
            }
            self.poll_until(deadline)?;
        }
    }

    /// The end: close every connection; what is still outstanding was never answered, and
    /// a connection not back after a GOAWAY is lost.
    fn close_all(&mut self) {
        for conn in &mut self.conns {
            match conn.state {
                State::Idle | State::Closed => continue,
                State::Ready => {
                    // Acknowledgements read last are still queued.
                    let _ = conn.flush();
                }
                _ if conn.up => {
                    self.stats.error("reconnect_unfinished");
                    self.stats.session.reconnects_failed += 1;
                    self.stats.dropped += 1;
                    let lost = conn.outstanding.clear() as u64;
                    self.stats.errors_n("goaway_unanswered", lost);
                    self.stats.requests.lost += lost;
                }
                _ => {
                    self.stats.error("setup_unfinished");
                    self.stats.failed += 1;
                }
            }
            // Still up after the drain: whatever is in flight was never answered.
            let unanswered = conn.close() as u64;
            self.stats.errors_n("unanswered", unanswered);
            self.stats.requests.unanswered += unanswered;
        }
        self.open = 0;
        self.publish();
    }

    /// Polls until `wake` at the latest (or the next timer), then fires due timers.
    fn poll_until(&mut self, wake: Instant) -> Result<(), WorkerError> {
        let until = self.deadlines.next().map_or(wake, |at| at.min(wake));
        self.poll_once(until.saturating_duration_since(Instant::now()))?;
        self.fire_timers(Instant::now());
        self.publish();
        Ok(())
    }

    /// Waits for events (at most `timeout`) and services every connection that has one.
    fn poll_once(&mut self, mut timeout: Duration) -> Result<(), WorkerError> {
        // `--coalesce-ms`, after a wake that found events: what arrives while this sleeps is
        // read in one wake.
        let rest = self.config.coalesce.saturating_sub(self.woke.elapsed());
        if !rest.is_zero() && !self.events.is_empty() {
            std::thread::sleep(rest);
            timeout = timeout.saturating_sub(rest);
        }
        let polled = self.poll.poll(&mut self.events, Some(timeout));
        self.woke = Instant::now();
        match polled {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(WorkerError::Poll(e)),
        }
        self.ready.clear();
        for event in self.events.iter() {
            let readish = event.is_readable() || event.is_read_closed() || event.is_error();
            self.ready.push((event.token().0, readish));
        }
        // A full batch leaves events waiting in the kernel: the worker is behind.
        self.lag.polled(Instant::now(), self.ready.len() >= EVENTS);
        for i in 0..self.ready.len() {
            let Some(&(k, readish)) = self.ready.get(i) else {
                break;
            };
            if Token(k) == timer::TOKEN {
                if let Some(timer) = &self.timer {
                    timer.clear();
                }
                continue;
            }
            self.service(k, readish);
        }
        Ok(())
    }

    /// Fires every timer due by `now`; entries a connection no longer waits for are stale.
    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, k, alarm)) = self.deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            match alarm {
                Alarm::Phase if conn.phase_at == Some(at) => {
                    // A timeout is not the server's if the worker was behind meanwhile; a
                    // backoff ends when it ends.
                    let due = self.lag.shift(at, conn.phase_lag, now);
                    if conn.awaits_server() && due > now {
                        conn.phase_at = Some(due);
                        conn.phase_lag = self.lag.total(now);
                        self.deadlines.set(due, k, Alarm::Phase);
                        continue;
                    }
                    conn.phase_at = None;
                    self.phase_timeout(k, now);
                }
                Alarm::Ping if conn.ping_at == Some(at) => self.ping(k, at, now),
                Alarm::Phase | Alarm::Ping => {}
            }
        }
    }

    /// Handles one event on `conns[k]`: finish connecting, read and answer frames (or the
    /// `/ip_list` answer), act on what they signal, top up the closed loop, write what is
    /// queued.
    fn service(&mut self, k: usize, readish: bool) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let now = Instant::now();
        let result = match conn.state {
            State::Resolving => return self.service_fetch(k, now),
            State::Connecting => {
                let finished = match conn.stream.as_ref() {
                    Some(stream) => dial::finished(stream),
                    None => Ok(false),
                };
                match finished {
                    Ok(true) => {
                        self.on_connected(k, now);
                        Ok(())
                    }
                    Ok(false) => return,
                    Err(cause) => return self.attempt_failed(k, cause, now),
                }
            }
            State::LoggingIn | State::Ready | State::Leaving => {
                if readish {
                    conn.read(
                        &mut self.scratch,
                        &self.env,
                        now,
                        &self.window,
                        &mut self.stats,
                    )
                } else {
                    Ok(())
                }
            }
            State::Idle | State::Backoff | State::Closed => return,
        };
        self.after_io(k, result, now);
    }

    /// Closed loop: top `conns[k]` up to `--pipeline` outstanding frames while sending.
    fn refill(&mut self, k: usize, now: Instant) {
        let Some(pipeline) = self.pipeline else {
            return;
        };
        if !self.sending || now >= self.window.end {
            return;
        }
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if !conn.is_ready() || !conn.echo {
            return;
        }
        while conn.outstanding.len() < pipeline {
            if !conn.queue_data(&self.env, now, &self.window, &mut self.stats) {
                break;
            }
        }
    }

    /// Writes what `conns[k]` has queued; a failure loses the connection.
    fn flush(&mut self, k: usize) {
        let result = match self.conns.get_mut(k) {
            Some(conn) if conn.stream.is_some() && conn.state != State::Connecting => conn.flush(),
            _ => Ok(()),
        };
        if let Err(cause) = result {
            self.lose(k, cause, Instant::now());
        }
    }

    fn publish(&self) {
        self.slot.publish(&self.stats, self.open);
    }
}
