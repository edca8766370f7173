//! A reactor's link to the state daemon (`--state PATH`): one Unix socket per reactor, so
//! no reactor shares anything with another; each introduces itself as `<gateway id>/<reactor>`.
//!
//! This file holds the link's socket, its buffers and its reconnect backoff, and turns the
//! daemon's frames into [`StateEvent`]s ([`parse`], sans-IO). What an event does to a client
//! is the reactor's business. The protocol is "State kinds" in `doc/protocol.md`.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use tether_daemon::heap::shrink_idle;
use tether_daemon::nonblocking::write_queued;
use tether_proto::{encode, ErrorBody, Frame, Kind, NodeErrorBody, Routed};

/// Largest frame body the daemon sends (its own limit).
pub(crate) const MAX_BODY: u32 = 1 << 20;
/// Routes per HEARTBEAT or ANNOUNCE frame (64 KiB bodies).
const ROUTES_PER_FRAME: usize = 8192;
/// Output a daemon that stopped reading may leave queued before the link is reset.
pub(crate) const MAX_OUT: usize = 64 << 20;

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not connected; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// Connected, HELLO sent, HELLO_OK not yet received.
    Hello,
    /// HELLO_OK received: logins, heartbeats and pushes flow.
    Up,
}

/// What the daemon said, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateEvent<'a> {
    /// HELLO_OK: the link is up; clients must heartbeat every `heartbeat_s`.
    Up { heartbeat_s: u64 },
    /// A login or resume was accepted: `body` is the client's LOGIN_OK JSON.
    LoginOk { id: u64, route: u64, body: &'a [u8] },
    /// A login or resume was refused with `code`.
    LoginFail {
        id: u64,
        route: u64,
        code: u16,
        reason: &'a str,
    },
    /// Close this client with ERROR `code`.
    Kick {
        route: u64,
        code: u16,
        reason: &'a str,
    },
    /// Deliver a push to this client.
    Push {
        msg: u64,
        route: u64,
        payload: &'a [u8],
    },
    /// The daemon refused the link and is closing it.
    Refused { code: u16, reason: &'a str },
    /// A client's JOIN or LEAVE was done: `body` is the client's ROOM_OK JSON.
    RoomOk { id: u64, route: u64, body: &'a [u8] },
    /// A client's JOIN was refused with `code`.
    RoomFail {
        id: u64,
        route: u64,
        code: u16,
        reason: &'a str,
    },
    /// The connection at `route` is in these rooms (a MEMBERSHIP body after its route).
    Membership { route: u64, names: &'a [u8] },
    /// A window of a room (`route` 0: for every member here) or a replay for one connection.
    RoomMessage { id: u64, route: u64, body: &'a [u8] },
}

/// Decodes one frame from the daemon; `Err` names what was wrong (the link is then reset).
pub(crate) fn parse<'a>(frame: &Frame<'a>) -> Result<StateEvent<'a>, String> {
    let bad = |e: tether_proto::BodyError| format!("{}: {e}", frame.kind.name());
    Ok(match frame.kind {
        Kind::HelloOk => {
            let heartbeat_s = serde_json::from_slice::<serde_json::Value>(frame.body)
                .ok()
                .and_then(|v| v["heartbeat_s"].as_u64())
                .filter(|s| *s >= 1)
                .ok_or("HELLO_OK without a heartbeat_s of at least 1")?;
            StateEvent::Up { heartbeat_s }
        }
        Kind::StateLoginOk => {
            let r = Routed::parse(frame.body).map_err(bad)?;
            StateEvent::LoginOk {
                id: frame.id,
                route: r.route,
                body: r.payload,
            }
        }
        Kind::LoginFail => {
            let e = NodeErrorBody::parse(frame.body).map_err(bad)?;
            StateEvent::LoginFail {
                id: frame.id,
                route: e.route,
                code: e.code,
                reason: e.reason,
            }
        }
        Kind::Kick => {
            let e = NodeErrorBody::parse(frame.body).map_err(bad)?;
            StateEvent::Kick {
                route: e.route,
                code: e.code,
                reason: e.reason,
            }
        }
        Kind::StatePush => {
            let r = Routed::parse(frame.body).map_err(bad)?;
            StateEvent::Push {
                msg: frame.id,
                route: r.route,
                payload: r.payload,
            }
        }
        Kind::StateRoomOk => {
            let r = Routed::parse(frame.body).map_err(bad)?;
            StateEvent::RoomOk {
                id: frame.id,
                route: r.route,
                body: r.payload,
            }
        }
        Kind::RoomFail => {
            let e = NodeErrorBody::parse(frame.body).map_err(bad)?;
            StateEvent::RoomFail {
                id: frame.id,
                route: e.route,
                code: e.code,
                reason: e.reason,
            }
        }
        Kind::Membership => {
            let r = Routed::parse(frame.body).map_err(bad)?;
            for name in tether_proto::room::names(r.payload) {
                name.map_err(bad)?;
            }
            StateEvent::Membership {
                route: r.route,
                names: r.payload,
            }
        }
        Kind::RoomMessage => {
            let r = Routed::parse(frame.body).map_err(bad)?;
            tether_proto::room::Batch::parse(r.payload).map_err(bad)?;
            StateEvent::RoomMessage {
                id: frame.id,
                route: r.route,
                body: r.payload,
            }
        }
        Kind::StateError => {
            let e = ErrorBody::parse(frame.body).map_err(bad)?;
            StateEvent::Refused {
                code: e.code,
                reason: e.reason,
            }
        }
        other => return Err(format!("the state daemon does not send {}", other.name())),
    })
}

/// The link: socket, buffers, backoff, heartbeat schedule.
pub(crate) struct StateLink {
    pub path: PathBuf,
    /// `<gateway id>/<reactor>`, sent in HELLO.
    pub name: String,
    pub stream: Option<UnixStream>,
    pub phase: Phase,
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    /// An incomplete frame from the daemon (the reactor reads the socket).
    pub partial: Vec<u8>,
    pub out: Vec<u8>,
    written: usize,
    /// WRITABLE interest is registered.
    pub writable: bool,
    /// From HELLO_OK.
    pub heartbeat: Duration,
    pub last_heartbeat: Instant,
    /// The link has been up before (for log levels: the first failure is a warning).
    pub complained: bool,
}

impl StateLink {
    pub(crate) fn new(
        path: PathBuf,
        name: String,
        min: Duration,
        max: Duration,
        now: Instant,
    ) -> Self {
        StateLink {
            path,
            name,
            stream: None,
            phase: Phase::Down { retry_at: now },
            backoff: min,
            min_backoff: min,
            max_backoff: max,
            partial: Vec::new(),
            out: Vec::new(),
            written: 0,
            writable: false,
            heartbeat: Duration::from_secs(30),
            last_heartbeat: now,
            complained: false,
        }
    }

    /// A reload changed `reconnect_min_ms` / `reconnect_max_ms`: the next delay uses them
    /// (a delay already scheduled runs its course).
    pub(crate) fn set_backoff(&mut self, min: Duration, max: Duration) {
        self.min_backoff = min;
        self.max_backoff = max;
        self.backoff = self.backoff.clamp(min, max.max(min));
    }

    pub(crate) fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Starts a connection: the socket is connected (Unix sockets connect at once or fail)
    /// and HELLO is queued.
    pub(crate) fn connect(&mut self) -> io::Result<&mut UnixStream> {
        let stream = UnixStream::connect(&self.path)?;
        self.partial.clear();
        self.out.clear();
        self.written = 0;
        self.writable = false;
        encode::frame(&mut self.out, Kind::Hello, 0, self.name.as_bytes());
        self.phase = Phase::Hello;
        Ok(self.stream.insert(stream))
    }

    /// HELLO_OK arrived.
    pub(crate) fn up(&mut self, heartbeat_s: u64, now: Instant) {
        self.phase = Phase::Up;
        self.backoff = self.min_backoff;
        self.heartbeat = Duration::from_secs(heartbeat_s);
        self.last_heartbeat = now;
        self.complained = false;
    }

    /// The link failed: drops the socket and schedules the next attempt (doubling backoff).
    pub(crate) fn down(&mut self, now: Instant) -> Option<UnixStream> {
        self.phase = Phase::Down {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        self.out = Vec::new();
        self.partial = Vec::new();
        self.written = 0;
        self.writable = false;
        self.stream.take()
    }

    /// Writes what the socket takes; `Ok(true)` when nothing is left.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(true);
        };
        write_queued(stream, &self.out, &mut self.written)?;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            return Ok(true);
        }
        if self.out.len() - self.written > MAX_OUT {
            return Err(io::Error::other("the state daemon does not read its link"));
        }
        if self.written >= self.out.len() / 2 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(false)
    }

    /// Frees link buffers a burst grew past `keep` bytes that are empty again; returns the
    /// bytes freed.
    pub(crate) fn trim(&mut self, keep: usize) -> usize {
        let mut freed = 0;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            freed += shrink_idle(&mut self.out, keep);
        }
        freed + shrink_idle(&mut self.partial, keep)
    }

    /// Queues `routes` as HEARTBEAT (or ANNOUNCE) frames.
    pub(crate) fn routes(&mut self, kind: Kind, routes: &[u64]) {
        for chunk in routes.chunks(ROUTES_PER_FRAME) {
            encode::routes(&mut self.out, kind, chunk);
        }
    }

    /// Queues a frame whose body is the route and `rest`.
    pub(crate) fn routed(&mut self, kind: Kind, id: u64, route: u64, rest: &[u8]) {
        encode::routed(&mut self.out, kind, id, route, rest);
    }

    /// Queues a frame whose body is `body`.
    pub(crate) fn frame_with_body(&mut self, kind: Kind, id: u64, body: &[u8]) {
        encode::frame(&mut self.out, kind, id, body);
    }

    /// Queues a frame with no body.
    pub(crate) fn frame(&mut self, kind: Kind) {
        encode::frame(&mut self.out, kind, 0, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{routes, Decoder, ErrorCode};

    fn route_list(body: &[u8]) -> Option<Vec<u64>> {
        routes(body).ok().map(Iterator::collect)
    }

    fn decode(bytes: &[u8]) -> Frame<'_> {
        Decoder::new(MAX_BODY).decode(bytes).unwrap().unwrap().0
    }

    #[test]
    fn parses_every_kind_the_daemon_sends() {
        let mut out = Vec::new();
        encode::frame(
            &mut out,
            Kind::HelloOk,
            0,
            br#"{"heartbeat_s":7,"resume_window_s":30}"#,
        );
        assert_eq!(parse(&decode(&out)), Ok(StateEvent::Up { heartbeat_s: 7 }));

        out.clear();
        encode::routed(&mut out, Kind::StateLoginOk, 4, 99, b"{}");
        assert_eq!(
            parse(&decode(&out)),
            Ok(StateEvent::LoginOk {
                id: 4,
                route: 99,
                body: b"{}"
            })
        );

        out.clear();
        encode::routed_error(
            &mut out,
            Kind::LoginFail,
            4,
            99,
            ErrorCode::AuthFailed,
            "bad",
        );
        assert_eq!(
            parse(&decode(&out)),
            Ok(StateEvent::LoginFail {
                id: 4,
                route: 99,
                code: 5,
                reason: "bad"
            })
        );

        out.clear();
        encode::routed_error(&mut out, Kind::Kick, 0, 99, ErrorCode::Kicked, "again");
        assert_eq!(
            parse(&decode(&out)),
            Ok(StateEvent::Kick {
                route: 99,
                code: 12,
                reason: "again"
            })
        );

        out.clear();
        encode::routed(&mut out, Kind::StatePush, 11, 99, b"hi");
        assert_eq!(
            parse(&decode(&out)),
            Ok(StateEvent::Push {
                msg: 11,
                route: 99,
                payload: b"hi"
            })
        );

        // A refused HELLO.
        out.clear();
        let reason = "gateway id \"gw/0\" is held by a live link";
        encode::header(&mut out, Kind::StateError, 0, 0, 2 + reason.len());
        out.extend_from_slice(&ErrorCode::AuthFailed.as_u16().to_be_bytes());
        out.extend_from_slice(reason.as_bytes());
        assert_eq!(
            parse(&decode(&out)),
            Ok(StateEvent::Refused { code: 5, reason })
        );
    }

    #[test]
    fn refuses_what_the_daemon_never_sends_or_cannot_mean() {
        let mut out = Vec::new();
        encode::frame(&mut out, Kind::HelloOk, 0, b"{}");
        assert!(parse(&decode(&out)).is_err());
        out.clear();
        encode::frame(&mut out, Kind::StatePush, 1, &[0; 7]);
        assert!(parse(&decode(&out)).is_err());
        out.clear();
        encode::frame(&mut out, Kind::Data, 1, b"x");
        assert!(parse(&decode(&out)).is_err());
    }

    #[test]
    fn heartbeats_are_split_into_frames_of_at_most_8192_routes() {
        let now = Instant::now();
        let mut link = StateLink::new(
            "/nonexistent".into(),
            "gw/0".into(),
            Duration::from_millis(10),
            Duration::from_millis(100),
            now,
        );
        let routes: Vec<u64> = (0..20_000).collect();
        link.routes(Kind::Heartbeat, &routes);
        let decoder = Decoder::new(MAX_BODY);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((frame, used)) = decoder.decode(&link.out[at..]).unwrap() {
            at += used;
            let list = route_list(frame.body).unwrap();
            assert!(list.len() <= 8192);
            seen.extend(list);
        }
        assert_eq!(seen, routes);
        // Backoff doubles to the cap and resets when the link comes up.
        assert!(link.connect().is_err());
        for expected in [10, 20, 40, 80, 100, 100] {
            link.down(now);
            assert_eq!(
                link.phase,
                Phase::Down {
                    retry_at: now + Duration::from_millis(expected)
                }
            );
        }
        link.up(5, now);
        link.down(now);
        assert_eq!(
            link.phase,
            Phase::Down {
                retry_at: now + Duration::from_millis(10)
            }
        );
    }

    #[test]
    fn a_reload_changes_the_next_delay() {
        let now = Instant::now();
        let mut link = StateLink::new(
            PathBuf::from("/nonexistent/state.sock"),
            "gw/0".into(),
            Duration::from_millis(100),
            Duration::from_millis(5000),
            now,
        );
        for _ in 0..4 {
            link.down(now); // the next delay is now 1,600 ms
        }
        link.set_backoff(Duration::from_millis(10), Duration::from_millis(50));
        let mut delays = Vec::new();
        for _ in 0..4 {
            link.down(now);
            if let Phase::Down { retry_at } = link.phase {
                delays.push(retry_at - now);
            }
        }
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(50), ms(50), ms(50), ms(50)]);
        link.set_backoff(Duration::from_millis(200), Duration::from_millis(1000));
        link.down(now);
        assert_eq!(
            link.phase,
            Phase::Down {
                retry_at: now + ms(200)
            }
        );
    }
}
