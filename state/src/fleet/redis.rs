//! The fleet engine on Redis 7 Cluster: the functions of `tether.lua` decide every login,
//! takeover, bind and push atomically in the device's slot; a batch of operations goes out
//! as one cluster pipeline (one round trip per primary), then the takeovers, which need the
//! device behind a token first, one by one. Runs on the engine thread only.

use std::time::Duration;

use redis::cluster::{cluster_pipe, ClusterClient, ClusterConnection, ClusterPipeline};
use redis::Value;

use super::bus::{self, BusMessage};
use super::engine::{Engine, EngineError, Op, Outcome, Owner, StoredPush};
use super::keys;
use super::settings::Settings;
use crate::store::ENDED_BY_OPERATOR;

/// The function library, loaded (REPLACE) on every primary at connect and whenever a primary
/// answers that it does not know it (a promoted replica of an old primary, a Redis restarted
/// empty).
pub(crate) const LIBRARY: &str = include_str!("tether.lua");

/// The Redis Cluster engine: a client, and the connection while it is up.
pub(crate) struct RedisEngine {
    client: ClusterClient,
    connection: Option<ClusterConnection>,
    /// The connection bus messages are published on: to the first seed that answers, the
    /// node the hosts' subscribers also prefer (see `bus.rs`).
    bus: Option<redis::Connection>,
    settings: Settings,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("host", &self.settings.host)
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl RedisEngine {
    pub(crate) fn new(settings: Settings) -> Result<RedisEngine, EngineError> {
        let nodes: Vec<String> = settings
            .seeds
            .iter()
            .map(|seed| format!("redis://{seed}"))
            .collect();
        let client = ClusterClient::builder(nodes)
            .username(&settings.credentials.user)
            .password(String::from_utf8_lossy(
                settings.credentials.password.expose(),
            ))
            // Without it a command written while the previous one is unacknowledged waits for
            // the delayed ACK: 40 ms stalls on the push path.
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(1000))
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(200)
            .build()
            .map_err(unavailable)?;
        Ok(RedisEngine {
            client,
            connection: None,
            bus: None,
            settings,
        })
    }

    fn connection(&mut self) -> Result<&mut ClusterConnection, EngineError> {
        if self.connection.is_none() {
            let mut connection = self.client.get_connection().map_err(unavailable)?;
            load_library(&mut connection)?;
            tracing::info!(seeds = ?self.settings.seeds, "fleet engine connected; functions loaded");
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| EngineError::Unavailable("no connection".into()))
    }

    /// The pipelined operations (all but takeovers), answers in order.
    fn run_pipelined(&mut self, ops: &[&Op]) -> Result<Vec<Value>, EngineError> {
        let mut pipe = cluster_pipe();
        for op in ops {
            add_op(&mut pipe, op, &self.settings);
        }
        let connection = self.connection()?;
        match pipe.query::<Vec<Value>>(connection) {
            Ok(values) => Ok(values),
            Err(e) if e.to_string().contains("Function not found") => {
                load_library(connection)?;
                pipe.query::<Vec<Value>>(connection).map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn takeover(&mut self, token_hash: &str, gateway: &str) -> Result<Outcome, EngineError> {
        let device: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys::resume(token_hash))
            .query(self.connection()?)
            .map_err(unavailable)?;
        let Some(device) = device.and_then(|d| String::from_utf8(d).ok()) else {
            return Ok(Outcome::UnknownToken);
        };
        let mut pipe = cluster_pipe();
        fcall(&mut pipe, "tether_takeover", &device)
            .arg(&device)
            .arg(&self.settings.host)
            .arg(gateway)
            .arg(token_hash)
            .arg(self.settings.route_ttl_ms);
        let value = pipe
            .query::<Vec<Value>>(self.connection()?)
            .map_err(unavailable)?
            .into_iter()
            .next()
            .unwrap_or(Value::Nil);
        let items = array(value)?;
        match text(items.first())?.as_str() {
            "unknown" => Ok(Outcome::UnknownToken),
            "ok" => Ok(Outcome::TakenOver {
                device,
                previous: text(items.get(1))?,
                previous_session: text(items.get(2))?,
                rooms: text(items.get(3))?,
                pushes: pushes(items.get(4..).unwrap_or_default())?,
            }),
            other => Err(EngineError::Protocol(format!(
                "takeover answered {other:?}"
            ))),
        }
    }
}

impl Engine for RedisEngine {
    fn connect(&mut self) -> Result<(), EngineError> {
        self.connection().map(drop)
    }

    fn run(&mut self, ops: &[Op]) -> Vec<Result<Outcome, EngineError>> {
        let pipelined: Vec<&Op> = ops
            .iter()
            .filter(|op| !matches!(op, Op::Takeover { .. }))
            .collect();
        let mut answers = match self.run_pipelined(&pipelined) {
            Ok(values) => {
                let mut values = values.into_iter();
                let mut out = Vec::with_capacity(pipelined.len());
                for op in &pipelined {
                    out.push(parse(op, &mut values, &self.settings.host));
                }
                out.into_iter()
            }
            Err(e) => {
                if !pipelined.is_empty() {
                    self.connection = None;
                }
                vec![Err(e); pipelined.len()].into_iter()
            }
        };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Takeover {
                    token_hash,
                    gateway,
                } => {
                    let result = self.takeover(token_hash, gateway);
                    if matches!(result, Err(EngineError::Unavailable(_))) {
                        self.connection = None;
                    }
                    results.push(result);
                }
                _ => results.push(answers.next().unwrap_or_else(|| {
                    Err(EngineError::Protocol(
                        "fewer answers than operations".into(),
                    ))
                })),
            }
        }
        let messages = bus_messages(ops, &results, &self.settings.host);
        if !messages.is_empty() {
            self.publish(&messages);
        }
        self.publish_rooms(ops, &mut results);
        results
    }
}

impl RedisEngine {
    /// Publishes the numbered room messages on their rooms' channels, in one round trip, and
    /// writes into each answer how many hosts (subscribers) took it. A message that cannot be
    /// published is lost for the members of other hosts (it was numbered: they see the gap).
    fn publish_rooms(&mut self, ops: &[Op], results: &mut [Result<Outcome, EngineError>]) {
        let mut pipe = redis::pipe();
        let mut published = Vec::new();
        for (i, (op, result)) in ops.iter().zip(results.iter()).enumerate() {
            if let (Op::Publish { room, payload, .. }, Ok(Outcome::Published { seq, .. })) =
                (op, result)
            {
                let message = BusMessage::Room {
                    room: room.clone(),
                    seq: *seq,
                    payload: payload.clone(),
                };
                pipe.cmd("PUBLISH")
                    .arg(keys::room_channel(room))
                    .arg(message.encode());
                published.push(i);
            }
        }
        if published.is_empty() {
            return;
        }
        for _ in 0..2 {
            if self.bus.is_none() {
                self.bus = bus::connect_first(&self.settings);
            }
            let Some(connection) = self.bus.as_mut() else {
                break;
            };
            match pipe.query::<Vec<usize>>(connection) {
                Ok(counts) => {
                    for (i, count) in published.iter().zip(counts) {
                        if let Some(Ok(Outcome::Published { hosts, .. })) = results.get_mut(*i) {
                            *hosts = count;
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fleet bus: publishing room messages failed; reconnecting");
                    self.bus = None;
                }
            }
        }
        for i in published {
            if let Some(result) = results.get_mut(i) {
                *result = Err(EngineError::Unavailable(
                    "the room message was numbered but could not be published".into(),
                ));
            }
        }
    }

    /// Publishes `(host, message)` pairs in one round trip; on failure, once more on the
    /// next seed that answers. A message that cannot be published is logged: the bus is a
    /// hint (pushes are durable, a missed drop is repaired by the next refresh).
    fn publish(&mut self, messages: &[(String, Vec<u8>)]) {
        let mut pipe = redis::pipe();
        for (host, message) in messages {
            pipe.cmd("PUBLISH")
                .arg(keys::bus(host))
                .arg(message.as_slice())
                .ignore();
        }
        for _ in 0..2 {
            if self.bus.is_none() {
                self.bus = bus::connect_first(&self.settings);
            }
            let Some(connection) = self.bus.as_mut() else {
                break;
            };
            match pipe.query::<()>(connection) {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet bus: publishing failed; reconnecting");
                    self.bus = None;
                }
            }
        }
        tracing::warn!(
            messages = messages.len(),
            "fleet bus: messages not published (pushes stay durable; drops are repaired by the next refresh)"
        );
    }
}

/// What the answers call for on the bus: drop orders to the host a device left, pushes to
/// the host that holds their device.
fn bus_messages(
    ops: &[Op],
    results: &[Result<Outcome, EngineError>],
    this_host: &str,
) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (op, result) in ops.iter().zip(results) {
        let message = match (op, result) {
            (
                Op::Login { device, .. },
                Ok(Outcome::Claimed {
                    previous: Some(host),
                    previous_session,
                    ..
                }),
            ) if host != this_host => (
                host,
                BusMessage::Drop {
                    device: device.clone(),
                    session: previous_session.clone(),
                    reason: "the device logged in on another host".into(),
                },
            ),
            (
                Op::Takeover { .. },
                Ok(Outcome::TakenOver {
                    device,
                    previous,
                    previous_session,
                    ..
                }),
            ) if previous != this_host => (
                previous,
                BusMessage::Drop {
                    device: device.clone(),
                    session: previous_session.clone(),
                    reason: "the session was resumed on another host".into(),
                },
            ),
            (
                Op::Push {
                    device,
                    payload,
                    expires_unix_ms,
                    ..
                },
                Ok(Outcome::Stored { msg, owner }),
            ) if owner.host != this_host => (
                &owner.host,
                BusMessage::Push {
                    device: device.clone(),
                    session: owner.session.clone(),
                    msg: *msg,
                    expires_unix_ms: *expires_unix_ms,
                    payload: payload.clone(),
                },
            ),
            (Op::End { device }, Ok(Outcome::Removed { owner, .. })) if owner.host != this_host => {
                (
                    &owner.host,
                    BusMessage::Drop {
                        device: device.clone(),
                        session: owner.session.clone(),
                        reason: ENDED_BY_OPERATOR.into(),
                    },
                )
            }
            _ => continue,
        };
        out.push((message.0.clone(), message.1.encode()));
    }
    out
}

fn load_library(connection: &mut ClusterConnection) -> Result<(), EngineError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query::<Value>(connection)
        .map(drop)
        .map_err(unavailable)
}

/// Adds `op`'s commands to the pipeline: one FCALL each, plus the resume index for a bind.
fn add_op(pipe: &mut ClusterPipeline, op: &Op, s: &Settings) {
    match op {
        Op::Login {
            device,
            gateway,
            session,
            token_hash,
            refuse,
        } => {
            // The counter first: pushes in the pending hash with ids up to it were stored
            // before this claim (see `parse`). Then the claim itself, atomic on its own: SET
            // answers the route it replaced (under `refuse`, NX leaves an existing one alone
            // and answers it). The device's pushes, its rooms, and the resume index.
            let k = keys::Device::new(device);
            pipe.cmd("GET").arg(&k.msg);
            let route = keys::route_value(
                &s.host,
                gateway,
                &keys::session(*session),
                token_hash,
                "online",
            );
            pipe.cmd("SET").arg(&k.route).arg(route);
            if *refuse {
                pipe.arg("NX");
            }
            pipe.arg("PX").arg(s.route_ttl_ms).arg("GET");
            pipe.cmd("HGETALL").arg(&k.pending);
            pipe.cmd("GET").arg(&k.rooms);
            pipe.cmd("SET")
                .arg(keys::resume(token_hash))
                .arg(device)
                .arg("PX")
                .arg(s.route_ttl_ms);
        }
        Op::Bind {
            device,
            gateway,
            session,
            token_hash,
            online,
            refresh,
        } => {
            let state = match (refresh, online) {
                (true, _) => "refresh",
                (false, true) => "online",
                (false, false) => "detached",
            };
            fcall(pipe, "tether_bind", device)
                .arg(device)
                .arg(&s.host)
                .arg(gateway)
                .arg(keys::session(*session))
                .arg(token_hash)
                .arg(state)
                .arg(s.route_ttl_ms);
            pipe.cmd("SET")
                .arg(keys::resume(token_hash))
                .arg(device)
                .arg("PX")
                .arg(s.route_ttl_ms);
        }
        Op::Forget { device, session } => {
            fcall(pipe, "tether_forget", device)
                .arg(&s.host)
                .arg(keys::session(*session));
        }
        Op::Push {
            device,
            payload,
            expires_unix_ms,
            id_floor,
        } => {
            fcall(pipe, "tether_push", device)
                .arg(device)
                .arg(&s.host)
                .arg(*expires_unix_ms)
                .arg(payload.as_slice())
                .arg(s.max_pending)
                .arg(*id_floor)
                .arg(s.pending_ttl_ms)
                .arg(s.counter_ttl_ms);
        }
        Op::Ack { device, msg } => {
            let k = keys::Device::new(device);
            pipe.cmd("HDEL").arg(&k.pending).arg(*msg);
        }
        Op::Lookup { device } => {
            let k = keys::Device::new(device);
            pipe.cmd("GET").arg(&k.route);
            pipe.cmd("HLEN").arg(&k.pending);
        }
        Op::End { device } => {
            fcall(pipe, "tether_end", device).arg(s.route_ttl_ms);
        }
        Op::Rooms { device, value } => {
            let k = keys::Device::new(device);
            if value.is_empty() {
                pipe.cmd("DEL").arg(&k.rooms);
            } else {
                // As long as the route: the refresh of the route refreshes it too.
                pipe.cmd("SET")
                    .arg(&k.rooms)
                    .arg(value)
                    .arg("PX")
                    .arg(s.route_ttl_ms);
            }
        }
        Op::Publish { room, floor, .. } => {
            pipe.cmd("FCALL")
                .arg("tether_room_seq")
                .arg(1)
                .arg(keys::room_seq(room))
                .arg(*floor);
        }
        Op::Takeover { .. } => {}
    }
}

/// `FCALL function` with `device`'s five keys in the order `tether.lua` reads them (route,
/// msg, pending, ended, rooms); the caller adds the arguments.
fn fcall<'p>(
    pipe: &'p mut ClusterPipeline,
    function: &str,
    device: &str,
) -> &'p mut ClusterPipeline {
    let k = keys::Device::new(device);
    pipe.cmd("FCALL")
        .arg(function)
        .arg(5)
        .arg(&k.route)
        .arg(&k.msg)
        .arg(&k.pending)
        .arg(keys::ended(device))
        .arg(&k.rooms)
}

/// How many commands `add_op` writes for `op`, so answers in the pipeline.
fn commands(op: &Op) -> usize {
    match op {
        Op::Login { .. } => 5,
        Op::Bind { .. } | Op::Lookup { .. } => 2,
        Op::Takeover { .. } => 0,
        Op::Forget { .. }
        | Op::Push { .. }
        | Op::Ack { .. }
        | Op::End { .. }
        | Op::Rooms { .. }
        | Op::Publish { .. } => 1,
    }
}

/// Reads `op`'s answers from the pipeline's values (all of them, whatever they say, so that
/// the next operation reads its own).
fn parse(
    op: &Op,
    values: &mut impl Iterator<Item = Value>,
    host: &str,
) -> Result<Outcome, EngineError> {
    let count = commands(op);
    let answers: Vec<Value> = values.by_ref().take(count).collect();
    if answers.len() < count {
        return Err(EngineError::Protocol("fewer answers than commands".into()));
    }
    if let Some(Value::ServerError(e)) = answers.iter().find(|v| matches!(v, Value::ServerError(_)))
    {
        return Err(EngineError::Unavailable(format!("{e:?}")));
    }
    let mut answers = answers.into_iter();
    let value = answers.next().unwrap_or(Value::Nil);
    match op {
        Op::Login { refuse, .. } => {
            let counter = match value {
                Value::Nil => 0,
                other => number(Some(&other))?,
            };
            let replaced = answers.next().unwrap_or(Value::Nil);
            let pending = pushes(&array(answers.next().unwrap_or(Value::Nil))?)?;
            let rooms = match answers.next() {
                None | Some(Value::Nil) => String::new(),
                Some(value) => text(Some(&value))?,
            };
            login_outcome(replaced, pending, rooms, counter, *refuse, host)
        }
        Op::Bind { .. } => {
            let items = array(value)?;
            match text(items.first())?.as_str() {
                verdict @ ("ok" | "recreated") => Ok(Outcome::Bound {
                    recreated: verdict == "recreated",
                    pushes: pushes(items.get(1..).unwrap_or_default())?,
                }),
                "moved" | "stale" => Ok(Outcome::Moved),
                "ended" => Ok(Outcome::Ended),
                other => Err(EngineError::Protocol(format!("bind answered {other:?}"))),
            }
        }
        Op::Forget { .. } | Op::Ack { .. } | Op::Rooms { .. } => Ok(Outcome::Done),
        Op::Publish { .. } => Ok(Outcome::Published {
            seq: number(Some(&value))?,
            hosts: 0,
        }),
        Op::Push { .. } => {
            let items = array(value)?;
            match text(items.first())?.as_str() {
                "offline" => Ok(Outcome::Offline),
                "full" => Ok(Outcome::Full {
                    pending: number(items.get(1))? as usize,
                }),
                state @ ("online" | "detached") => Ok(Outcome::Stored {
                    owner: Owner {
                        host: text(items.get(1))?,
                        session: text(items.get(2))?,
                        online: state == "online",
                    },
                    msg: number(items.get(3))?,
                }),
                other => Err(EngineError::Protocol(format!("push answered {other:?}"))),
            }
        }
        Op::Lookup { .. } => match value {
            Value::Nil => Ok(Outcome::Offline),
            value => {
                let r = route(&value)?;
                Ok(Outcome::Located {
                    owner: Owner {
                        host: r.host,
                        session: r.session,
                        online: r.online,
                    },
                    gateway: r.gateway,
                    pending: number(answers.next().as_ref())? as usize,
                })
            }
        },
        Op::End { .. } => {
            let items = array(value)?;
            match text(items.first())?.as_str() {
                "none" => Ok(Outcome::Offline),
                state @ ("online" | "detached") => Ok(Outcome::Removed {
                    owner: Owner {
                        host: text(items.get(1))?,
                        session: text(items.get(2))?,
                        online: state == "online",
                    },
                    pending: number(items.get(3))? as usize,
                }),
                other => Err(EngineError::Protocol(format!("end answered {other:?}"))),
            }
        }
        Op::Takeover { .. } => Err(EngineError::Protocol("takeover in a pipeline".into())),
    }
}

/// What a login's claim means: `replaced`, the route the claim's SET answered (`Nil`: none);
/// `pending`, the device's durable pushes right after it; `counter`, its message id counter
/// right before it.
fn login_outcome(
    replaced: Value,
    pending: Vec<StoredPush>,
    rooms: String,
    counter: u64,
    refuse: bool,
    this_host: &str,
) -> Result<Outcome, EngineError> {
    let owner = match replaced {
        Value::Nil => None,
        other => Some(route(&other).map(|r| (r.host, r.session))?),
    };
    Ok(match owner {
        // NX left the route alone: somebody (this host included) holds the device.
        Some((owner, _)) if refuse => Outcome::Refused { owner },
        // Another host held it: told to drop it, its pushes and rooms come over.
        Some((previous, previous_session)) if previous != this_host => Outcome::Claimed {
            previous: Some(previous),
            previous_session,
            pushes: pending,
            stale: Vec::new(),
            rooms,
        },
        // This host held it: the store replaces its own session, pushes and rooms and all.
        Some(_) => Outcome::Claimed {
            previous: None,
            previous_session: String::new(),
            pushes: Vec::new(),
            stale: Vec::new(),
            rooms: String::new(),
        },
        // Nobody: pushes stored before the claim belong to a session whose window passed;
        // any after it are this session's.
        None => {
            let (stale, fresh): (Vec<StoredPush>, Vec<StoredPush>) =
                pending.into_iter().partition(|p| p.msg <= counter);
            Outcome::Claimed {
                previous: None,
                previous_session: String::new(),
                pushes: fresh,
                stale: stale.into_iter().map(|p| p.msg).collect(),
                rooms: String::new(),
            }
        }
    })
}

fn route(value: &Value) -> Result<keys::Route, EngineError> {
    keys::parse_route(&bytes(Some(value))?)
        .ok_or_else(|| EngineError::Protocol("a route without its five fields".into()))
}

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

fn array(value: Value) -> Result<Vec<Value>, EngineError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(EngineError::Protocol(format!(
            "expected an array, got {other:?}"
        ))),
    }
}

fn bytes(value: Option<&Value>) -> Result<Vec<u8>, EngineError> {
    match value {
        Some(Value::BulkString(b)) => Ok(b.clone()),
        Some(Value::SimpleString(s)) => Ok(s.clone().into_bytes()),
        Some(Value::Int(i)) => Ok(i.to_string().into_bytes()),
        other => Err(EngineError::Protocol(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

fn text(value: Option<&Value>) -> Result<String, EngineError> {
    String::from_utf8(bytes(value)?).map_err(|e| EngineError::Protocol(e.to_string()))
}

fn number(value: Option<&Value>) -> Result<u64, EngineError> {
    text(value)?
        .parse()
        .map_err(|e: std::num::ParseIntError| EngineError::Protocol(e.to_string()))
}

/// HGETALL pairs of the pending hash: message id, "EXPIRES:PAYLOAD".
fn pushes(flat: &[Value]) -> Result<Vec<StoredPush>, EngineError> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    for pair in flat.chunks(2) {
        let msg = number(pair.first())?;
        let value = bytes(pair.get(1))?;
        let colon = value
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| EngineError::Protocol("pending push without expiry".into()))?;
        let expires_unix_ms = std::str::from_utf8(&value[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| EngineError::Protocol("pending push expiry".into()))?;
        out.push(StoredPush {
            msg,
            expires_unix_ms,
            payload: value[colon + 1..].to_vec(),
        });
    }
    out.sort_by_key(|p| p.msg);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn login(refuse: bool) -> Op {
        Op::Login {
            device: "d".into(),
            gateway: "gw".into(),
            session: 9,
            token_hash: "t".into(),
            refuse,
        }
    }

    /// A login's five answers: counter, replaced route, pending pushes (id → expiry), rooms
    /// (here: the other host's "lobby" whenever a route was replaced), index.
    fn answers(counter: Value, replaced: Value, pending: &[(u64, &str)]) -> Vec<Value> {
        let flat = pending
            .iter()
            .flat_map(|(id, v)| [bulk(&id.to_string()), bulk(v)])
            .collect();
        let rooms = match replaced {
            Value::Nil => Value::Nil,
            _ => bulk("lobby"),
        };
        vec![counter, replaced, Value::Array(flat), rooms, Value::Okay]
    }

    fn parse_all(ops: &[Op], values: Vec<Value>) -> Vec<Result<Outcome, EngineError>> {
        let mut values = values.into_iter();
        ops.iter().map(|op| parse(op, &mut values, "a")).collect()
    }

    #[test]
    fn a_login_claim_reads_what_its_set_replaced() {
        let route_b = bulk(&keys::route_value(
            "b",
            "gw-b",
            "00000000000000ab",
            "h",
            "online",
        ));
        let route_a = bulk(&keys::route_value(
            "a",
            "gw-a",
            "0000000000000001",
            "h",
            "online",
        ));
        let pushes = [(5, "9:p"), (7, "9:q")];
        let parsed = parse_all(
            &[
                login(false),
                login(false),
                login(false),
                login(true),
                login(true),
            ],
            [
                answers(bulk("6"), route_b.clone(), &pushes),
                answers(bulk("6"), route_a, &pushes),
                answers(bulk("6"), Value::Nil, &pushes),
                answers(bulk("6"), route_b, &pushes),
                answers(Value::Nil, Value::Nil, &[]),
            ]
            .concat(),
        );
        let stored = |msg, payload: &[u8]| StoredPush {
            msg,
            expires_unix_ms: 9,
            payload: payload.to_vec(),
        };
        assert_eq!(
            parsed,
            vec![
                // Another host held it: dropped there, its pushes and rooms come over.
                Ok(Outcome::Claimed {
                    previous: Some("b".into()),
                    previous_session: "00000000000000ab".into(),
                    pushes: vec![stored(5, b"p"), stored(7, b"q")],
                    stale: vec![],
                    rooms: "lobby".into(),
                }),
                // This host held it: the store replaces its own session, rooms and all.
                Ok(Outcome::Claimed {
                    previous: None,
                    previous_session: String::new(),
                    pushes: vec![],
                    stale: vec![],
                    rooms: String::new(),
                }),
                // Nobody: ids up to the counter read before the claim are a dead session's.
                Ok(Outcome::Claimed {
                    previous: None,
                    previous_session: String::new(),
                    pushes: vec![stored(7, b"q")],
                    stale: vec![5],
                    rooms: String::new(),
                }),
                Ok(Outcome::Refused { owner: "b".into() }),
                Ok(Outcome::Claimed {
                    previous: None,
                    previous_session: String::new(),
                    pushes: vec![],
                    stale: vec![],
                    rooms: String::new(),
                }),
            ]
        );
    }

    #[test]
    fn a_lookup_and_an_end_read_the_route_and_the_pending_count() {
        let route = bulk(&keys::route_value(
            "b",
            "gw-b",
            "00000000000000ab",
            "h",
            "detached",
        ));
        let lookup = Op::Lookup { device: "d".into() };
        let end = Op::End { device: "d".into() };
        let owner = Owner {
            host: "b".into(),
            session: "00000000000000ab".into(),
            online: false,
        };
        let removed = Value::Array(vec![
            bulk("detached"),
            bulk("b"),
            bulk("00000000000000ab"),
            Value::Int(3),
        ]);
        let parsed = parse_all(
            &[lookup.clone(), lookup, end.clone(), end],
            vec![
                route,
                Value::Int(3),
                Value::Nil,
                Value::Int(0),
                removed,
                Value::Array(vec![bulk("none")]),
            ],
        );
        assert_eq!(
            parsed,
            vec![
                Ok(Outcome::Located {
                    owner: owner.clone(),
                    gateway: "gw-b".into(),
                    pending: 3,
                }),
                Ok(Outcome::Offline),
                Ok(Outcome::Removed { owner, pending: 3 }),
                Ok(Outcome::Offline),
            ]
        );
    }

    #[test]
    fn an_error_in_one_operations_answers_leaves_the_next_operations_own() {
        let error = redis::parse_redis_value(b"-ERR boom\r\n").expect("an error reply");
        assert!(matches!(error, Value::ServerError(_)), "{error:?}");
        let ack = Op::Ack {
            device: "d".into(),
            msg: 1,
        };
        let mut values = answers(bulk("1"), error, &[]);
        values.push(Value::Int(1));
        let parsed = parse_all(&[login(false), ack], values);
        assert!(
            matches!(parsed[0], Err(EngineError::Unavailable(_))),
            "{parsed:?}"
        );
        assert_eq!(parsed[1], Ok(Outcome::Done));
    }
}
