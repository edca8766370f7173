//! The bus between hosts: each host subscribes to its own channel (`tether:bus:HOST`), on
//! which another host's engine thread publishes what it decided for this host's sessions —
//! a push to deliver, a session to drop (its device logged in or resumed elsewhere).
//!
//! Classic Redis Cluster pub/sub reaches a subscriber on any node, but a message published on
//! another node crosses the cluster bus, which adds up to ~40 ms (measured with Redis 7.0:
//! p50 12.6 ms, p99 42 ms, against 0.25 / 3.7 ms on the same node). So subscribers and
//! publishers both use the first seed that answers, in the configured order: normally the
//! same node, so a message is delivered locally; after a node is lost they may differ for a
//! while, and messages still arrive, through the cluster bus.
//!
//! The bus is a hint, never the record: a push is durable in the engine before it is
//! published, and a host that missed a drop learns it at its next route refresh.
//!
//! Rooms ride the same connection: a host subscribes to the channel of each room it has a
//! member in (`tether:room:ROOM`, and always to the broadcast's, `tether:room:`), as the
//! loop tells it ([`Interest`]), so a message reaches exactly the hosts with a member. Room
//! messages are not durable: one a host missed (its subscription was down) is a gap its
//! members see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use rustc_hash::FxHashSet;

use super::keys;
use super::settings::Settings;

/// How long the subscriber waits for a message before it looks for new room interest.
const INTEREST_POLL: Duration = Duration::from_millis(20);

/// One message of the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// Deliver `msg` (already durable) to this host's session `session` of `device`.
    Push {
        device: String,
        session: String,
        msg: u64,
        expires_unix_ms: u64,
        payload: Vec<u8>,
    },
    /// Drop this host's session `session` of `device`: another host holds it now.
    Drop {
        device: String,
        session: String,
        reason: String,
    },
    /// Message `seq` of `room` ("" for the broadcast), for this host's members.
    Room {
        room: String,
        seq: u64,
        payload: Vec<u8>,
    },
}

/// A change to the rooms this host listens to: subscribe (`true`) or unsubscribe.
pub(crate) type Interest = (String, bool);

/// Splits `LEN:BYTES` fields (what `tether.lua` writes).
fn fields(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let colon = bytes.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&bytes[..colon]).ok()?.parse().ok()?;
        let rest = &bytes[colon + 1..];
        out.push(rest.get(..len)?);
        bytes = &rest[len..];
    }
    Some(out)
}

/// Appends one `LEN:BYTES` field.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

impl BusMessage {
    /// The message as published.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            BusMessage::Push {
                device,
                session,
                msg,
                expires_unix_ms,
                payload,
            } => {
                field(&mut out, b"push");
                field(&mut out, device.as_bytes());
                field(&mut out, session.as_bytes());
                field(&mut out, msg.to_string().as_bytes());
                field(&mut out, expires_unix_ms.to_string().as_bytes());
                field(&mut out, payload);
            }
            BusMessage::Drop {
                device,
                session,
                reason,
            } => {
                field(&mut out, b"drop");
                field(&mut out, device.as_bytes());
                field(&mut out, session.as_bytes());
                field(&mut out, reason.as_bytes());
            }
            BusMessage::Room { room, seq, payload } => {
                field(&mut out, b"room");
                field(&mut out, room.as_bytes());
                field(&mut out, seq.to_string().as_bytes());
                field(&mut out, payload);
            }
        }
        out
    }

    /// `None` for a message this daemon does not understand (logged and ignored).
    pub fn parse(bytes: &[u8]) -> Option<BusMessage> {
        let f = fields(bytes)?;
        let text = |i: usize| -> Option<String> {
            std::str::from_utf8(f.get(i)?).ok().map(str::to_string)
        };
        let number = |i: usize| -> Option<u64> { text(i)?.parse().ok() };
        match f.first().copied()? {
            b"push" if f.len() == 6 => Some(BusMessage::Push {
                device: text(1)?,
                session: text(2)?,
                msg: number(3)?,
                expires_unix_ms: number(4)?,
                payload: f[5].to_vec(),
            }),
            b"drop" if f.len() == 4 => Some(BusMessage::Drop {
                device: text(1)?,
                session: text(2)?,
                reason: text(3)?,
            }),
            b"room" if f.len() == 4 => Some(BusMessage::Room {
                room: text(1)?,
                seq: number(2)?,
                payload: f[3].to_vec(),
            }),
            _ => None,
        }
    }
}

/// The subscriber thread; stops (within a second) when dropped.
#[derive(Debug)]
pub(crate) struct Subscriber {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Subscriber {
    /// Subscribes to this host's channel, the broadcast's and the rooms `interest` names;
    /// every message goes to `deliver`.
    pub(crate) fn start(
        settings: &Settings,
        interest: Receiver<Interest>,
        deliver: impl Fn(BusMessage) + Send + 'static,
        connected: impl Fn(bool) + Send + 'static,
    ) -> std::io::Result<Subscriber> {
        let stop = Arc::new(AtomicBool::new(false));
        let settings = settings.clone();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("fleet-bus".into())
                .spawn(move || {
                    let mut rooms = Rooms {
                        interest,
                        subscribed: FxHashSet::default(),
                    };
                    subscribe_loop(&settings, &stop, &mut rooms, &deliver, &connected)
                })?
        };
        Ok(Subscriber {
            stop,
            thread: Some(thread),
        })
    }
}

/// The rooms the subscriber listens to, and the loop's changes to them.
struct Rooms {
    interest: Receiver<Interest>,
    subscribed: FxHashSet<String>,
}

impl Rooms {
    /// Takes the loop's changes; applies them to `pubsub` when connected.
    fn update(&mut self, mut pubsub: Option<&mut redis::PubSub<'_>>) -> redis::RedisResult<()> {
        while let Ok((room, on)) = self.interest.try_recv() {
            let changed = if on {
                self.subscribed.insert(room.clone())
            } else {
                self.subscribed.remove(&room)
            };
            if let (true, Some(pubsub)) = (changed, pubsub.as_deref_mut()) {
                let channel = keys::room_channel(&room);
                if on {
                    pubsub.subscribe(channel)?;
                } else {
                    pubsub.unsubscribe(channel)?;
                }
            }
        }
        Ok(())
    }
}

fn subscribe_loop(
    settings: &Settings,
    stop: &AtomicBool,
    rooms: &mut Rooms,
    deliver: &dyn Fn(BusMessage),
    connected: &dyn Fn(bool),
) {
    let channel = keys::bus(&settings.host);
    let mut seed = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = settings.seeds.get(seed % settings.seeds.len().max(1)) else {
            return;
        };
        let mut subscribed = false;
        let _ = rooms.update(None);
        match listen(settings, addr, &channel, stop, rooms, deliver, &mut |up| {
            subscribed |= up;
            connected(up);
        }) {
            Ok(()) => return,
            Err(e) => {
                connected(false);
                tracing::warn!(seed = %addr, error = %e, "fleet bus: subscription lost or refused");
                // Lost after subscribing: the first seed again (where publishers go first);
                // refused: the next one.
                seed = if subscribed { 0 } else { seed.wrapping_add(1) };
                std::thread::sleep(Duration::from_millis(if subscribed { 50 } else { 200 }));
            }
        }
    }
}

/// A connection to seed `addr`, authenticated, with TCP_NODELAY.
fn open(settings: &Settings, addr: &str) -> redis::RedisResult<redis::Connection> {
    use redis::IntoConnectionInfo;
    let password = String::from_utf8_lossy(settings.credentials.password.expose()).into_owned();
    let info = format!("redis://{addr}")
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .set_redis_settings(
            redis::RedisConnectionInfo::default()
                .set_username(&settings.credentials.user)
                .set_password(password),
        );
    redis::Client::open(info)?.get_connection_with_timeout(Duration::from_millis(500))
}

/// A connection to the first seed that answers, for publishing.
pub(crate) fn connect_first(settings: &Settings) -> Option<redis::Connection> {
    for addr in &settings.seeds {
        match open(settings, addr) {
            Ok(connection) => return Some(connection),
            Err(e) => tracing::warn!(seed = %addr, error = %e, "fleet bus: seed not reachable"),
        }
    }
    None
}

/// Listens on one seed until `stop` (Ok) or an error.
fn listen(
    settings: &Settings,
    addr: &str,
    channel: &str,
    stop: &AtomicBool,
    rooms: &mut Rooms,
    deliver: &dyn Fn(BusMessage),
    connected: &mut dyn FnMut(bool),
) -> redis::RedisResult<()> {
    let mut connection = open(settings, addr)?;
    let mut pubsub = connection.as_pubsub();
    pubsub.subscribe(channel)?;
    pubsub.subscribe(keys::room_channel(""))?;
    for room in &rooms.subscribed {
        pubsub.subscribe(keys::room_channel(room))?;
    }
    // Short, so that a room's new interest is subscribed soon after the loop asks.
    pubsub.set_read_timeout(Some(INTEREST_POLL))?;
    connected(true);
    tracing::info!(seed = %addr, channel, rooms = rooms.subscribed.len(), "fleet bus: subscribed");
    while !stop.load(Ordering::Relaxed) {
        rooms.update(Some(&mut pubsub))?;
        match pubsub.get_message() {
            Ok(message) => {
                let payload: Vec<u8> = message.get_payload().unwrap_or_default();
                match BusMessage::parse(&payload) {
                    Some(parsed) => deliver(parsed),
                    None => tracing::warn!(
                        bytes = payload.len(),
                        "fleet bus: a message this daemon does not understand; ignored"
                    ),
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_messages_parse_as_the_functions_write_them_and_garbage_is_refused() {
        let push = b"4:push2:d116:00000000000000ab2:4213:17650000000004:a:b\n";
        assert_eq!(
            BusMessage::parse(push),
            Some(BusMessage::Push {
                device: "d1".into(),
                session: "00000000000000ab".into(),
                msg: 42,
                expires_unix_ms: 1_765_000_000_000,
                payload: b"a:b\n".to_vec(),
            })
        );
        let drop = b"4:drop1:x0:3:why";
        assert_eq!(
            BusMessage::parse(drop),
            Some(BusMessage::Drop {
                device: "x".into(),
                session: String::new(),
                reason: "why".into(),
            })
        );
        let room = BusMessage::Room {
            room: "lobby".into(),
            seq: 1 << 50,
            payload: b"hi:\n".to_vec(),
        };
        for message in [
            BusMessage::parse(push).unwrap(),
            BusMessage::parse(drop).unwrap(),
            room,
        ] {
            assert_eq!(BusMessage::parse(&message.encode()), Some(message));
        }
        for bad in [
            &b""[..],
            b"4:push",
            b"9:push",
            b"x:push",
            b"4:nope1:a",
            b"4:drop1:x",
        ] {
            assert_eq!(
                BusMessage::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
