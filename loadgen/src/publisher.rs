//! `--publish-rate R`: one thread that publishes R room messages per second in total,
//! round-robin over the rooms, from the start of the load until [`crate::pusher::settle`]
//! before its end — to Tether's state daemon (`POST /v1/rooms/{room}/publish`, or
//! `POST /v1/broadcast` with `--broadcast`, at `--push-url` with `--push-token-file`'s
//! token), or to the `--peer` (nchan: `POST /pub?id={room}`; NATS: `PUB {room}` on one
//! connection). The HTTP side is the push driver's keep-alive client
//! ([`crate::pusher::Client`]).
//!
//! Each payload is stamped ([`crate::rooms::stamped`]) with the send time and the room's
//! own publish counter (1, 2, … per room), so a peer's subscriber numbers messages without
//! a server sequence. A message is due at `start + --publish-after + n / R`; a thread that falls behind sends
//! at once without skipping. With `--procs`, only worker process 0 publishes, at the whole
//! rate.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::{PeerConfig, PeerKind, PublishConfig, RoomsConfig};
use crate::http::Url;
use crate::peer::nats;
use crate::pusher::Client;
use crate::rooms;
use crate::session;

/// Connect and write timeout of the NATS publisher.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the publisher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Published {
    pub sent: u64,
    pub failed: u64,
    /// Failures by cause, as `publish_<cause>`.
    pub errors: BTreeMap<String, u64>,
}

impl Published {
    fn fail(&mut self, cause: &str) {
        self.failed += 1;
        *self.errors.entry(format!("publish_{cause}")).or_insert(0) += 1;
    }
}

/// Where messages go.
enum Sink {
    /// The state daemon's room or broadcast API.
    Tether {
        client: Client,
        url: Url,
        broadcast: bool,
    },
    /// nchan's publisher location.
    Nchan { client: Client },
    /// A NATS connection.
    Nats(NatsPub),
}

/// The (room index, the room's counter) of the `n`th message (from 0) over `rooms` rooms.
pub(crate) fn slot(n: u64, rooms: usize) -> (usize, u64) {
    let rooms = rooms.max(1) as u64;
    ((n % rooms) as usize, n / rooms + 1)
}

/// Publishes from `start` until `end`; returns the counts.
pub(crate) fn run(
    rooms: &RoomsConfig,
    publish: &PublishConfig,
    peer: Option<PeerConfig>,
    start: Instant,
    end: Instant,
) -> Published {
    let mut done = Published::default();
    let mut sink = match peer {
        None => Sink::Tether {
            client: Client::new(publish.url.clone(), publish.token.clone()),
            url: publish.url.clone(),
            broadcast: publish.broadcast,
        },
        Some(PeerConfig {
            kind: PeerKind::Nchan,
            addr,
        }) => match Url::parse(&format!("http://{addr}")) {
            Ok(url) => Sink::Nchan {
                client: Client::new(url, None),
            },
            Err(_) => {
                done.fail("bad_peer_addr");
                return done;
            }
        },
        Some(PeerConfig {
            kind: PeerKind::Nats,
            addr,
        }) => Sink::Nats(NatsPub::new(addr)),
    };
    let mut n: u64 = 0;
    while let Ok(offset) = Duration::try_from_secs_f64(n as f64 / publish.rate) {
        let due = start + publish.after + offset;
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (index, counter) = slot(n, rooms.count);
        n += 1;
        let room = rooms::room_name(&rooms.prefix, index);
        let now_us = u64::try_from(session::unix_now().as_micros()).unwrap_or(u64::MAX);
        let payload = rooms::stamped(now_us, counter, publish.size);
        done.sent += 1;
        if let Err(cause) = sink.send(&room, &payload) {
            done.fail(&cause);
        }
    }
    done
}

impl Sink {
    fn send(&mut self, room: &str, payload: &[u8]) -> Result<(), String> {
        match self {
            Sink::Tether {
                client,
                url,
                broadcast,
            } => {
                let path = if *broadcast {
                    url.path("/v1/broadcast")
                } else {
                    url.path(&format!("/v1/rooms/{room}/publish"))
                };
                let body = serde_json::json!({ "payload": STANDARD.encode(payload) }).to_string();
                let response = client.post(&path, body.as_bytes())?;
                if response.status == 200 {
                    Ok(())
                } else {
                    Err(format!("http_{}", response.status))
                }
            }
            Sink::Nchan { client } => {
                let response = client.post(&format!("/pub?id={room}"), payload)?;
                if (200..300).contains(&response.status) {
                    Ok(())
                } else {
                    Err(format!("http_{}", response.status))
                }
            }
            Sink::Nats(nats) => nats.publish(room, payload).map_err(str::to_string),
        }
    }
}

/// One publishing connection to nats-server: CONNECT once, then PUBs; the server's PINGs
/// are answered between publishes.
struct NatsPub {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    out: Vec<u8>,
}

impl NatsPub {
    fn new(addr: SocketAddr) -> NatsPub {
        NatsPub {
            addr,
            stream: None,
            rbuf: Vec::new(),
            out: Vec::new(),
        }
    }

    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), &'static str> {
        self.out.clear();
        if self.stream.is_none() {
            let stream =
                TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).map_err(|_| "unreachable")?;
            let _ = stream.set_nodelay(true);
            stream
                .set_write_timeout(Some(IO_TIMEOUT))
                .map_err(|_| "io_error")?;
            stream.set_nonblocking(false).map_err(|_| "io_error")?;
            self.rbuf.clear();
            nats::connect(&mut self.out);
            self.stream = Some(stream);
        }
        self.answer_pings()?;
        nats::publish(&mut self.out, subject, payload);
        let Some(stream) = self.stream.as_mut() else {
            return Err("io_error");
        };
        if stream.write_all(&self.out).is_err() {
            self.stream = None;
            return Err("io_error");
        }
        Ok(())
    }

    /// Reads what the server sent without waiting; queues a PONG per PING.
    fn answer_pings(&mut self) -> Result<(), &'static str> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        stream.set_nonblocking(true).map_err(|_| "io_error")?;
        let mut chunk = [0u8; 4096];
        let read = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break Err("closed"),
                Ok(n) => self
                    .rbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Err("io_error"),
            }
        };
        stream.set_nonblocking(false).map_err(|_| "io_error")?;
        if let Err(cause) = read {
            self.stream = None;
            return Err(cause);
        }
        let mut used = 0;
        loop {
            match nats::parse(self.rbuf.get(used..).unwrap_or_default(), 1 << 20) {
                Ok(Some((op, len))) => {
                    used += len;
                    match op {
                        nats::Op::Ping => self.out.extend_from_slice(nats::PONG),
                        nats::Op::Err(_) => {
                            self.rbuf.drain(..used);
                            return Err("nats_err");
                        }
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.stream = None;
                    return Err("bad_answer");
                }
            }
        }
        self.rbuf.drain(..used);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn messages_go_round_robin_with_a_counter_per_room() {
        let slots: Vec<(usize, u64)> = (0..5).map(|n| slot(n, 2)).collect();
        assert_eq!(slots, vec![(0, 1), (1, 1), (0, 2), (1, 2), (0, 3)]);
        assert_eq!(slot(7, 0), (0, 8));
    }

    /// A fake nats-server: reads the publisher's bytes and checks them.
    #[test]
    fn nats_publishes_are_pubs_of_stamped_payloads() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"INFO {}\r\nPING\r\n").unwrap();
            let mut all = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stream.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8(all).unwrap()
        });
        let rooms = RoomsConfig {
            count: 2,
            prefix: "r-".into(),
            per_conn: 1,
            publish: None,
        };
        let publish = PublishConfig {
            rate: 200.0,
            size: 40,
            after: Duration::ZERO,
            broadcast: false,
            url: Url::parse("http://127.0.0.1:1").unwrap(),
            token: None,
        };
        let peer = PeerConfig {
            kind: PeerKind::Nats,
            addr,
        };
        let start = Instant::now();
        let done = run(
            &rooms,
            &publish,
            Some(peer),
            start,
            start + Duration::from_millis(30),
        );
        assert_eq!((done.sent, done.failed), (6, 0), "{done:?}");
        let text = server.join().unwrap();
        assert!(text.starts_with("CONNECT "), "{text}");
        assert_eq!(text.matches("PUB r-0 40\r\n").count(), 3, "{text}");
        assert_eq!(text.matches("PUB r-1 40\r\n").count(), 3, "{text}");
        assert!(
            text.contains("PONG\r\n"),
            "the server's PING was answered: {text}"
        );
    }
}
