//! `--peer nats|nchan`: the same fan-out measured through another system. One worker
//! thread's subscribers in one `mio::Poll` loop: dial (at `--connect-rate`, from the
//! `--source` addresses), subscribe ([`nats`]: CONNECT, SUB, PING answered by PONG;
//! [`nchan`]: a WebSocket upgrade), arrive at the start line, then count every message as
//! [`crate::rooms`] does for Tether's ROOM frames — the publish counter in the payload is
//! its sequence number — until the end of `--duration` plus `--drain`.
//!
//! Each subscriber follows one room: `--room-prefix` + (its index modulo `--rooms`).

pub(crate) mod nats;
pub(crate) mod nchan;

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cause::Cause;
use crate::config::PeerKind;
use crate::conn::Conn;
use crate::dial;
use crate::rooms::{self, Arrival, RoomLog};
use crate::schedule;
use crate::session;
use crate::start_line;
use crate::stats::{Stats, Window};
use crate::worker::{Shared, WorkerError};

/// Largest payload a NATS subscriber accepts (nats-server's default max_payload).
const NATS_MAX_PAYLOAD: usize = 1 << 20;
/// The `Host` of an nchan upgrade (nginx's `server_name _` takes any).
const NCHAN_HOST: &str = "localhost";
/// How often the progress counters are refreshed.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Connecting,
    Subscribing,
    Ready,
    Closed,
}

enum Proto {
    Nats { rbuf: Vec<u8> },
    Nchan(Box<nchan::Subscriber>),
}

struct Sub {
    global: usize,
    target: Option<std::net::SocketAddr>,
    source: Option<std::net::IpAddr>,
    stream: Option<TcpStream>,
    state: State,
    proto: Option<Proto>,
    wbuf: Vec<u8>,
    room: String,
    log: RoomLog,
    dialled_at: Option<Instant>,
}

/// Runs worker `index`'s subscribers and returns its stats.
pub(crate) fn run(
    index: usize,
    conns: Vec<Conn>,
    shared: Arc<Shared>,
) -> Result<Stats, WorkerError> {
    let config = &shared.config;
    let mut arrival = start_line::Arrival::new(&shared.start_line);
    let (Some(peer), Some(rooms)) = (config.peer, config.rooms.as_ref()) else {
        arrival.arrive();
        return Ok(Stats::new()?);
    };
    let mut poll = Poll::new().map_err(WorkerError::CreatePoll)?;
    let mut events = Events::with_capacity(1024);
    let mut stats = Stats::new()?;
    let paths: Vec<&'static str> = (0..rooms.count)
        .map(|i| {
            let path = format!("/sub?id={}", rooms::room_name(&rooms.prefix, i));
            &*Box::leak(path.into_boxed_str())
        })
        .collect();
    let mut subs: Vec<Sub> = conns
        .into_iter()
        .map(|c| Sub {
            global: c.global,
            target: c.target,
            source: c.source,
            stream: None,
            state: State::Idle,
            proto: None,
            wbuf: Vec::new(),
            room: rooms::room_name(&rooms.prefix, c.global % rooms.count.max(1)),
            log: RoomLog::new(),
            dialled_at: None,
        })
        .collect();
    let slot = shared.live.slot(index);
    let mut scratch = vec![0u8; 64 * 1024];
    // Until the load starts nothing is measured: the window lies far ahead.
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut window = Window {
        measure_start: far,
        end: far,
    };
    let mut next_dial = 0;
    let mut settling = 0usize;
    let mut open = 0u64;
    let mut start = None;
    let mut last_publish = Instant::now();
    let mut arrived = false;
    loop {
        let now = Instant::now();
        // Dial what is due.
        let pending = subs.get(next_dial..).unwrap_or_default();
        let due = schedule::dials_due(
            shared.connect_start,
            config.connect_rate,
            pending.iter().map(|s| s.global),
            now,
            schedule::DIALS_PER_TURN,
        );
        for _ in 0..due {
            let k = next_dial;
            next_dial += 1;
            settling += 1;
            let Some(sub) = subs.get_mut(k) else { continue };
            let target = sub.target.unwrap_or(peer.addr);
            sub.dialled_at = Some(now);
            match dial::connect(target, sub.source) {
                Ok(mut stream) => {
                    let registered = poll.registry().register(
                        &mut stream,
                        Token(k),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    if registered.is_err() {
                        fail(sub, &mut stats, Cause::IoError, &mut settling);
                        continue;
                    }
                    sub.stream = Some(stream);
                    sub.state = State::Connecting;
                }
                Err(cause) => fail(sub, &mut stats, cause, &mut settling),
            }
        }
        // Subscribers that take too long fail (only while some are still coming).
        for sub in subs
            .iter_mut()
            .take(if settling > 0 { usize::MAX } else { 0 })
        {
            let late = sub
                .dialled_at
                .is_some_and(|at| now.saturating_duration_since(at) > config.connect_timeout);
            if matches!(sub.state, State::Connecting | State::Subscribing) && late {
                let cause = if sub.state == State::Connecting {
                    Cause::ConnectTimeout
                } else {
                    Cause::LoginTimeout
                };
                fail(sub, &mut stats, cause, &mut settling);
            }
        }
        if !arrived && next_dial >= subs.len() && settling == 0 {
            stats.setup = shared.connect_start.elapsed();
            arrival.arrive();
            arrived = true;
        }
        if arrived && start.is_none() {
            if let Some(s) = shared.start_line.start() {
                start = Some(s);
                window = Window {
                    measure_start: s + config.warmup,
                    end: s + config.duration,
                };
            }
        }
        if start.is_some_and(|s| now >= s + config.duration + config.drain) {
            break;
        }
        if now.duration_since(last_publish) >= PUBLISH_EVERY {
            slot.publish(&stats, open);
            last_publish = now;
        }
        let timeout = if next_dial < subs.len() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(20)
        };
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WorkerError::Poll(e)),
        }
        let now = Instant::now();
        let now_us = u64::try_from(session::unix_now().as_micros()).unwrap_or(u64::MAX);
        for event in events.iter() {
            let k = event.token().0;
            let Some(sub) = subs.get_mut(k) else { continue };
            let was_ready = sub.state == State::Ready;
            let result = service(
                sub,
                peer.kind,
                &paths,
                &mut scratch,
                &mut stats,
                &Arrival {
                    at: now,
                    now_us,
                    window: &window,
                },
            );
            match result {
                Ok(()) => {
                    if !was_ready && sub.state == State::Ready {
                        settling = settling.saturating_sub(1);
                        stats.established += 1;
                        open += 1;
                    }
                }
                Err(cause) => {
                    if was_ready {
                        stats.dropped += 1;
                        open = open.saturating_sub(1);
                        stats.error(cause.name());
                        close(sub);
                    } else {
                        fail(sub, &mut stats, cause, &mut settling);
                    }
                }
            }
        }
    }
    for sub in subs.iter_mut() {
        close(sub);
    }
    slot.publish(&stats, 0);
    Ok(stats)
}

/// A subscriber that never became ready.
fn fail(sub: &mut Sub, stats: &mut Stats, cause: Cause, settling: &mut usize) {
    if matches!(sub.state, State::Closed | State::Ready) {
        return;
    }
    stats.failed += 1;
    stats.error(cause.name());
    *settling = settling.saturating_sub(1);
    close(sub);
}

fn close(sub: &mut Sub) {
    sub.stream = None;
    sub.proto = None;
    sub.wbuf = Vec::new();
    sub.state = State::Closed;
}

/// One event on a subscriber: finish connecting and send the subscription, read and count
/// messages, write what is owed.
fn service(
    sub: &mut Sub,
    kind: PeerKind,
    paths: &[&'static str],
    scratch: &mut [u8],
    stats: &mut Stats,
    arrival: &Arrival<'_>,
) -> Result<(), Cause> {
    if sub.state == State::Connecting {
        let Some(stream) = sub.stream.as_ref() else {
            return Err(Cause::IoError);
        };
        if !dial::finished(stream)? {
            return Ok(());
        }
        sub.proto = Some(match kind {
            PeerKind::Nats => {
                nats::subscribe(&mut sub.wbuf, &sub.room);
                Proto::Nats { rbuf: Vec::new() }
            }
            PeerKind::Nchan => {
                let path = paths
                    .get(sub.global % paths.len().max(1))
                    .copied()
                    .unwrap_or("/sub");
                let s = nchan::Subscriber::start(
                    NCHAN_HOST,
                    path,
                    sub.global as u64 + 1,
                    &mut sub.wbuf,
                )
                .ok_or(Cause::WsError)?;
                Proto::Nchan(Box::new(s))
            }
        });
        sub.state = State::Subscribing;
    }
    // Read what there is.
    loop {
        let Some(stream) = sub.stream.as_mut() else {
            return Ok(());
        };
        let n = match stream.read(scratch) {
            Ok(0) => return Err(Cause::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Cause::of_stream_error(&e)),
        };
        let data = scratch.get_mut(..n).unwrap_or_default();
        let room = sub.room.as_str();
        let log = &mut sub.log;
        let mut on_message = |payload: &[u8]| {
            stats.rooms.frames += 1;
            rooms::on_peer_message(log, stats, room, payload, arrival);
        };
        match sub.proto.as_mut() {
            Some(Proto::Nats { rbuf }) => {
                rbuf.extend_from_slice(data);
                let mut used = 0;
                loop {
                    let rest = rbuf.get(used..).unwrap_or_default();
                    match nats::parse(rest, NATS_MAX_PAYLOAD) {
                        Ok(Some((op, len))) => {
                            used += len;
                            match op {
                                nats::Op::Msg { payload, .. } => on_message(payload),
                                nats::Op::Ping => sub.wbuf.extend_from_slice(nats::PONG),
                                nats::Op::Pong => {
                                    if sub.state == State::Subscribing {
                                        sub.state = State::Ready;
                                    }
                                }
                                nats::Op::Err(_) => return Err(Cause::BadFrameFromServer),
                                nats::Op::Info | nats::Op::Ok => {}
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad NATS bytes");
                            return Err(Cause::BadFrameFromServer);
                        }
                    }
                }
                rbuf.drain(..used);
            }
            Some(Proto::Nchan(s)) => {
                let fed = s.receive(data, &mut sub.wbuf, on_message);
                if s.ready() && sub.state == State::Subscribing {
                    sub.state = State::Ready;
                }
                match fed {
                    Ok(()) => {}
                    Err(nchan::End::Closed) => return Err(Cause::Eof),
                    Err(_) => return Err(Cause::WsError),
                }
            }
            None => return Err(Cause::IoError),
        }
        if n < scratch.len() {
            break;
        }
    }
    // Write what is owed.
    let Some(stream) = sub.stream.as_mut() else {
        return Ok(());
    };
    let mut written = 0;
    while written < sub.wbuf.len() {
        match stream.write(sub.wbuf.get(written..).unwrap_or_default()) {
            Ok(0) => return Err(Cause::IoError),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Cause::of_stream_error(&e)),
        }
    }
    sub.wbuf.drain(..written);
    Ok(())
}
