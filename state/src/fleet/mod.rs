//! The fleet: many hosts, each with its gateways and its state daemon, behind one router
//! table. The daemon stays the journaled authority for the sessions it holds; an engine
//! (Redis 7 Cluster, `redis.rs`) holds where every device is (device → host, gateway,
//! session, with a TTL this host refreshes), the pushes that must survive a host, and each
//! device's message id counter, and carries pushes and drop orders between hosts (`bus.rs`).
//! See `doc/fleet.md`.
//!
//! This file is the event loop's side: it turns a login, a resume of a token this host does
//! not hold, and a push into engine operations, batches them with what the iteration's
//! journal records say (binds, forgets, acks), hands the batch to the engine thread
//! (`worker.rs`), and carries out what `decide.rs` makes of the answers. Without `fleet`
//! none of it exists and the daemon works alone.
//!
//! - `engine.rs`: the operations, the answers, the [`Engine`] trait;
//! - `redis.rs` + `tether.lua`: the Redis Cluster engine and its functions;
//! - `bus.rs`: this host's channel and its subscriber thread;
//! - `worker.rs`: the engine thread;
//! - `decide.rs`: the decisions, sans-IO;
//! - `keys.rs`: names in the engine; `settings.rs`: configuration and credentials.

mod bus;
mod decide;
mod engine;
mod keys;
mod redis;
mod settings;
mod worker;

use std::sync::Arc;

use crossbeam_channel::Receiver;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::sync::oneshot;

use crate::config::DuplicateLogin;
use crate::http::{Answer, PushResult};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::store::{
    EndedSession, LocalSession, Now, PushStatus, Reserved, SessionView, Store, Verified, IDS_PER_MS,
};
use crate::token::RoomGrants;

pub use bus::BusMessage;
pub use engine::{Engine, EngineError, Op, Outcome, Owner, StoredPush};
pub(crate) use redis::RedisEngine;
pub use settings::{Credentials, CredentialsError, Settings};

use decide::{BindDecision, PushDecision, Verdict};
use worker::{Batch, FleetEvent, Worker};

/// What the loop does with an operation's answer.
#[derive(Debug)]
pub(crate) enum Context {
    Login {
        gw: u16,
        id: u64,
        route: u64,
        reserved: Reserved,
        /// The token's `rooms` claim, for the session once it opens.
        rooms: Option<Arc<RoomGrants>>,
    },
    Resume {
        gw: u16,
        id: u64,
        route: u64,
    },
    Push {
        reply: oneshot::Sender<PushResult>,
    },
    View {
        reply: oneshot::Sender<Option<SessionView>>,
    },
    End {
        reply: oneshot::Sender<Option<EndedSession>>,
    },
    Bind {
        session: u64,
    },
    Quiet,
}

/// A device whose login's claim is in flight (see [`Fleet::claiming`]).
#[derive(Debug, Default)]
struct Claiming {
    logins: u32,
    pushes: Vec<BusPush>,
}

/// A push the bus brought: id, expiry, payload.
type BusPush = (u64, u64, Vec<u8>);

/// Route refreshes one iteration adds at most.
const REFRESH_BATCH: usize = 4096;

/// The loop's side of the fleet. See the [module documentation](self).
pub(crate) struct Fleet {
    settings: Settings,
    worker: Worker,
    _bus: bus::Subscriber,
    events: Receiver<FleetEvent>,
    batch: Batch,
    /// This host's sessions as bound in the router table, by session id.
    bound: FxHashMap<u64, LocalSession>,
    /// Sessions whose login's claim wrote their route already: their journaled login needs
    /// no bind.
    claimed: FxHashSet<u64>,
    /// Devices with a login's claim in flight, and pushes the bus brought for them meanwhile
    /// (the claim named this host before its answer came back): delivered once it opens.
    claiming: FxHashMap<String, Claiming>,
    /// Sessions whose route this refresh round has yet to write, and when the round
    /// started (`None`: the next round starts at `next_round_ms`).
    refresh_queue: Vec<u64>,
    round_started_ms: Option<u64>,
    round_size: usize,
    next_round_ms: u64,
    last_tick_ms: u64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("host", &self.settings.host)
            .field("bound", &self.bound.len())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Starts the engine and bus threads; the store's sessions (replayed from the journal)
    /// are bound again at the first refresh.
    pub(crate) fn start(
        settings: Settings,
        engine: Box<dyn Engine>,
        waker: Arc<mio::Waker>,
        store: &Store,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Fleet> {
        let (events_tx, events) = crossbeam_channel::unbounded();
        let wake: Arc<dyn Fn() + Send + Sync> = {
            let waker = waker.clone();
            Arc::new(move || {
                let _ = waker.wake();
            })
        };
        let worker = Worker::start(engine, events_tx.clone(), wake.clone())?;
        let bus = {
            let (tx, up_tx) = (events_tx.clone(), events_tx);
            let (wake, up_wake) = (wake.clone(), wake);
            bus::Subscriber::start(
                &settings,
                move |message| {
                    let _ = tx.send(FleetEvent::Bus(message));
                    wake();
                },
                move |up| {
                    let _ = up_tx.send(FleetEvent::BusUp(up));
                    up_wake();
                },
            )?
        };
        let bound = store
            .session_ids()
            .into_iter()
            .filter_map(|id| store.local_session(id).map(|s| (id, s)))
            .collect();
        tracing::info!(host = %settings.host, seeds = ?settings.seeds, "fleet on");
        Ok(Fleet {
            settings,
            worker,
            _bus: bus,
            events,
            batch: Batch::default(),
            bound,
            claimed: FxHashSet::default(),
            claiming: FxHashMap::default(),
            refresh_queue: Vec::new(),
            round_started_ms: None,
            round_size: 0,
            next_round_ms: 0,
            last_tick_ms: 0,
            metrics,
        })
    }

    /// STATE_LOGIN: the token is checked here, the session's id and secret are taken, the
    /// engine claims the device fleet-wide for that session (its route written whole, so no
    /// bind follows), and only then does the store open it (see [`Fleet::take_events`]).
    pub(crate) fn login(
        &mut self,
        store: &mut Store,
        gw: u16,
        id: u64,
        route: u64,
        token: &[u8],
        now: Now,
    ) {
        let Some(Verified { device, rooms }) = store.verify_login(gw, id, route, token, now) else {
            return;
        };
        let Some(reserved) = store.reserve_login(gw, id, route) else {
            return;
        };
        self.claiming.entry(device.clone()).or_default().logins += 1;
        let op = Op::Login {
            device,
            gateway: store.gateway_name(gw).to_string(),
            session: reserved.session,
            token_hash: keys::token_hash(reserved.resume_token().as_bytes()),
            refuse: store.rules().duplicate_login == DuplicateLogin::Refuse,
        };
        self.batch.add(
            op,
            Context::Login {
                gw,
                id,
                route,
                reserved,
                rooms,
            },
        );
    }

    /// STATE_RESUME: `false` when this host holds the session (the store resumes it);
    /// otherwise the engine takes it over from whichever host had it.
    pub(crate) fn resume(
        &mut self,
        store: &Store,
        gw: u16,
        id: u64,
        route: u64,
        token: &[u8],
        now: Now,
    ) -> bool {
        if store.resumable_here(token, now) {
            return false;
        }
        self.batch.add(
            Op::Takeover {
                token_hash: keys::token_hash(token),
                gateway: store.gateway_name(gw).to_string(),
            },
            Context::Resume { gw, id, route },
        );
        true
    }

    /// `POST /v1/push`: made durable in the engine first, wherever the session is.
    pub(crate) fn push(
        &mut self,
        store: &Store,
        device: String,
        payload: Vec<u8>,
        ttl_s: Option<u64>,
        reply: oneshot::Sender<PushResult>,
        now: Now,
    ) {
        let ttl_ms = ttl_s
            .unwrap_or(store.rules().push_ttl_s)
            .saturating_mul(1000);
        let op = Op::Push {
            device,
            payload,
            expires_unix_ms: now.unix_ms.saturating_add(ttl_ms),
            id_floor: now.unix_ms.saturating_mul(IDS_PER_MS),
        };
        self.batch.add(op, Context::Push { reply });
    }

    /// `GET /v1/sessions/{device}` of a device this host does not hold: the router table
    /// says where it is.
    pub(crate) fn view(&mut self, device: String, reply: oneshot::Sender<Option<SessionView>>) {
        self.batch
            .add(Op::Lookup { device }, Context::View { reply });
    }

    /// `DELETE /v1/sessions/{device}` of a device this host does not hold: ended wherever
    /// it is (see `tether_end`).
    pub(crate) fn end(&mut self, device: String, reply: oneshot::Sender<Option<EndedSession>>) {
        self.batch.add(Op::End { device }, Context::End { reply });
    }

    /// A session this host holds, as the sessions API shows it in a fleet.
    pub(crate) fn here(&self, view: SessionView) -> SessionView {
        SessionView {
            host: Some(self.settings.host.clone()),
            ..view
        }
    }

    /// A session this host held and ended, as the sessions API answers it in a fleet.
    pub(crate) fn ended_here(&self, ended: EndedSession) -> EndedSession {
        EndedSession {
            host: Some(self.settings.host.clone()),
            ..ended
        }
    }

    /// What the iteration's journal records mean for the router table.
    pub(crate) fn observe(&mut self, store: &Store) {
        for bytes in store.records() {
            let Ok(record) = Record::decode(bytes) else {
                continue;
            };
            match record {
                Record::Login {
                    session, replaces, ..
                } => {
                    if replaces != 0 {
                        self.bound.remove(&replaces);
                    }
                    if self.claimed.remove(&session) {
                        if let Some(local) = store.local_session(session) {
                            self.bound.insert(session, local);
                        }
                    } else {
                        self.bind(store, session);
                    }
                }
                Record::Attach { session, .. } | Record::Detach { session, .. } => {
                    self.bind(store, session)
                }
                Record::Remove { session } => {
                    if let Some(gone) = self.bound.remove(&session) {
                        self.batch.add(
                            Op::Forget {
                                device: gone.device,
                                session,
                            },
                            Context::Quiet,
                        );
                    }
                }
                Record::Ack { session, msg } => {
                    if let Some(s) = self.bound.get(&session) {
                        let device = s.device.clone();
                        self.batch.add(Op::Ack { device, msg }, Context::Quiet);
                    }
                }
                // Rooms are this host's alone for now (doc/fleet.md, "Limits").
                Record::Push { .. }
                | Record::Counters { .. }
                | Record::Gateway { .. }
                | Record::Join { .. }
                | Record::Leave { .. }
                | Record::Grants { .. } => {}
            }
        }
    }

    fn bind(&mut self, store: &Store, session: u64) {
        let Some(local) = store.local_session(session) else {
            return;
        };
        self.batch
            .add(bind_op(&local, false), Context::Bind { session });
        self.bound.insert(session, local);
    }

    /// Refreshes the routes' TTL — one round over every session each `refresh_ms`, spread
    /// evenly over the round so that no batch carries them all — and hands the iteration's
    /// batch to the engine.
    pub(crate) fn tick(&mut self, now: Now) {
        self.refresh_some(now.mono_ms);
        if !self.batch.is_empty() {
            self.worker.submit(std::mem::take(&mut self.batch));
        }
    }

    /// The share of the current refresh round due by `now_ms` (at most [`REFRESH_BATCH`]
    /// per iteration); a new round starts when one ends, or at once after the engine or
    /// the bus came back (see [`Fleet::refresh_soon`]).
    fn refresh_some(&mut self, now_ms: u64) {
        let since = now_ms.saturating_sub(self.last_tick_ms);
        self.last_tick_ms = now_ms;
        let started = match self.round_started_ms {
            Some(started) => started,
            None if now_ms >= self.next_round_ms => {
                self.refresh_queue = self.bound.keys().copied().collect();
                self.round_size = self.refresh_queue.len();
                self.round_started_ms = Some(now_ms);
                now_ms
            }
            None => return,
        };
        let period = self.settings.refresh_ms.max(1);
        let share = (self.round_size as u64 * since.max(1)).div_ceil(period) as usize;
        let late = now_ms.saturating_sub(started) >= period;
        let count = if late {
            REFRESH_BATCH
        } else {
            share.clamp(1, REFRESH_BATCH)
        };
        for _ in 0..count {
            let Some(session) = self.refresh_queue.pop() else {
                break;
            };
            if let Some(local) = self.bound.get(&session) {
                self.batch
                    .add(bind_op(local, true), Context::Bind { session });
            }
        }
        if self.refresh_queue.is_empty() {
            self.round_started_ms = None;
            self.next_round_ms = started.saturating_add(period).max(now_ms);
        }
    }

    /// Starts a refresh round at the next iteration (unless one runs): the engine or the bus
    /// came back, and routes may have been lost or taken meanwhile.
    fn refresh_soon(&mut self, at_ms: u64) {
        if self.round_started_ms.is_none() {
            self.next_round_ms = self.next_round_ms.min(at_ms);
        }
    }

    /// Carries out the engine's answers and the bus's messages.
    pub(crate) fn take_events(&mut self, store: &mut Store, now: Now, answers: &mut Vec<Answer>) {
        while let Ok(event) = self.events.try_recv() {
            match event {
                FleetEvent::Answered { batch, results } => {
                    for ((op, context), result) in
                        batch.ops.into_iter().zip(batch.contexts).zip(results)
                    {
                        self.answered(store, op, context, result, now, answers);
                    }
                }
                FleetEvent::Bus(message) => {
                    self.metrics.fleet_bus_messages.inc();
                    self.on_bus(store, message, now);
                }
                FleetEvent::BusUp(up) => {
                    self.metrics.fleet_bus_up.set(u64::from(up));
                    if up {
                        self.refresh_soon(now.mono_ms);
                    }
                }
            }
        }
    }

    fn answered(
        &mut self,
        store: &mut Store,
        op: Op,
        context: Context,
        result: Result<Outcome, EngineError>,
        now: Now,
        answers: &mut Vec<Answer>,
    ) {
        if result.is_err() {
            self.metrics.fleet_engine_errors.inc();
        }
        match (context, op) {
            (
                Context::Login {
                    gw,
                    id,
                    route,
                    reserved,
                    rooms,
                },
                Op::Login { device, .. },
            ) => {
                let held = self.settle_claim(&device);
                match decide::login(result) {
                    Verdict::Proceed { pushes, stale } => {
                        for msg in stale {
                            let device = device.clone();
                            self.batch.add(Op::Ack { device, msg }, Context::Quiet);
                        }
                        let verified = Verified {
                            device: device.clone(),
                            rooms,
                        };
                        if store.login_claimed(gw, id, route, verified, reserved, now) {
                            self.claimed.insert(reserved.session);
                            store.carry_over(&device, &pushes, now);
                            store.carry_over(&device, &held, now);
                        } else {
                            // Refused here after all: the route the claim wrote goes.
                            let session = reserved.session;
                            self.batch
                                .add(Op::Forget { device, session }, Context::Quiet);
                        }
                    }
                    Verdict::Fail(code, reason) => store.refuse_login(gw, id, route, code, &reason),
                    Verdict::Adopt { .. } => {}
                }
            }
            (Context::Resume { gw, id, route }, _) => match decide::takeover(result) {
                Verdict::Adopt { device, pushes } => {
                    self.metrics.fleet_takeovers.inc();
                    store.adopt(gw, id, route, device, &pushes, now);
                }
                Verdict::Fail(code, reason) => store.refuse_resume(gw, id, route, code, &reason),
                Verdict::Proceed { .. } => {}
            },
            (
                Context::Push { reply },
                Op::Push {
                    device,
                    payload,
                    expires_unix_ms,
                    ..
                },
            ) => {
                let answer = match decide::push(result, &self.settings.host) {
                    PushDecision::DeliverHere(msg) => {
                        let status = store
                            .deliver(&device, msg, &payload, expires_unix_ms, now)
                            .unwrap_or(PushStatus::Queued);
                        Ok((Some(msg), status))
                    }
                    PushDecision::Answer(answer) => answer,
                };
                answers.push(Answer::Push(reply, answer));
            }
            (Context::View { reply }, Op::Lookup { device }) => {
                let view = match result {
                    Ok(Outcome::Located {
                        owner,
                        gateway,
                        pending,
                    }) => Some(SessionView {
                        session: owner.session,
                        device_id: device,
                        host: Some(owner.host),
                        gateway,
                        route: None,
                        state: if owner.online { "online" } else { "detached" },
                        login_unix_ms: None,
                        last_heartbeat_unix_ms: None,
                        resume_until_unix_ms: None,
                        pending,
                    }),
                    // Unreachable engine: this host cannot know; it says what it holds.
                    _ => None,
                };
                answers.push(Answer::View(reply, view));
            }
            (Context::End { reply }, Op::End { device }) => {
                let ended = match result {
                    Ok(Outcome::Removed { owner, pending }) => {
                        tracing::info!(device = %device, host = %owner.host, session = %owner.session, "session ended through the push API, at its host");
                        Some(EndedSession {
                            session: owner.session,
                            device_id: device,
                            host: Some(owner.host),
                            was_online: owner.online,
                            dropped_pushes: pending,
                        })
                    }
                    _ => None,
                };
                answers.push(Answer::End(reply, ended));
            }
            (Context::Bind { session }, _) => {
                if let Ok(Outcome::Bound { pushes, .. }) = &result {
                    if let Some(local) = self.bound.get(&session).filter(|_| !pushes.is_empty()) {
                        let carried: Vec<(u64, u64, Vec<u8>)> = pushes
                            .iter()
                            .map(|p| (p.msg, p.expires_unix_ms, p.payload.clone()))
                            .collect();
                        store.carry_over(&local.device, &carried, now);
                    }
                }
                self.bound_answered(store, session, &result, now);
            }
            (_, _) => {}
        }
    }

    /// A login's claim of `device` answered: the pushes the bus brought for it meanwhile.
    fn settle_claim(&mut self, device: &str) -> Vec<BusPush> {
        let Some(claiming) = self.claiming.get_mut(device) else {
            return Vec::new();
        };
        claiming.logins = claiming.logins.saturating_sub(1);
        let held = std::mem::take(&mut claiming.pushes);
        if claiming.logins == 0 {
            self.claiming.remove(device);
        }
        held
    }

    fn bound_answered(
        &mut self,
        store: &mut Store,
        session: u64,
        result: &Result<Outcome, EngineError>,
        now: Now,
    ) {
        match decide::bind(result) {
            BindDecision::Drop(reason) => {
                if let Some(local) = self.bound.get(&session).cloned() {
                    tracing::info!(device = %local.device, reason, "fleet: dropping the session here");
                    store.drop_session(&local.device, Some(session), reason);
                }
            }
            BindDecision::Rewrite => {
                tracing::debug!(
                    session,
                    "fleet: the route was lost by the engine and written again"
                );
            }
            // Unreachable, or a cluster not formed yet (a Redis restarted empty): another
            // round in a second.
            BindDecision::Retry => self.refresh_soon(now.mono_ms + 1000),
            BindDecision::Keep => {}
        }
    }

    fn on_bus(&mut self, store: &mut Store, message: BusMessage, now: Now) {
        match message {
            BusMessage::Push {
                device,
                msg,
                expires_unix_ms,
                payload,
                ..
            } => {
                if store
                    .deliver(&device, msg, &payload, expires_unix_ms, now)
                    .is_none()
                {
                    if let Some(claiming) = self.claiming.get_mut(&device) {
                        claiming.pushes.push((msg, expires_unix_ms, payload));
                    }
                }
            }
            BusMessage::Drop {
                device,
                session,
                reason,
            } => {
                let session = u64::from_str_radix(&session, 16).ok();
                if store.drop_session(&device, session, &reason) {
                    self.metrics.fleet_drops.inc();
                    tracing::info!(device = %device, reason = %reason, "fleet: session dropped at another host's word");
                }
            }
        }
    }
}

fn bind_op(local: &LocalSession, refresh: bool) -> Op {
    Op::Bind {
        device: local.device.clone(),
        gateway: local.gateway.clone(),
        session: local.session,
        token_hash: keys::token_hash(local.resume_token.as_bytes()),
        online: local.online,
        refresh,
    }
}
