//! The fleet engine's vocabulary: what the event loop asks of the engine ([`Op`]), what it
//! answers ([`Outcome`]), and the [`Engine`] trait a backend implements (Redis Cluster in
//! `redis.rs`; a test double in the tests). The engine runs on its own thread (`worker.rs`):
//! the loop hands it one batch of operations per iteration and reads the answers back.

use thiserror::Error;

/// One operation on the fleet's shared state. Every one names a device: it is decided in that
/// device's slot of the engine, atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A login on this host: claim the device for the session about to open as `session`
    /// with a resume token hashing to `token_hash` (kick or refuse a session elsewhere).
    Login {
        device: String,
        gateway: String,
        session: u64,
        token_hash: String,
        refuse: bool,
    },
    /// A resume on this host of a token this host does not hold.
    Takeover { token_hash: String, gateway: String },
    /// This host holds `session` of `device` (written at login, attach, detach, and by the
    /// periodic refresh of the route's TTL when `refresh`).
    Bind {
        device: String,
        gateway: String,
        session: u64,
        token_hash: String,
        online: bool,
        refresh: bool,
    },
    /// This host's `session` of `device` ended: its route and durable pushes go.
    Forget { device: String, session: u64 },
    /// A push accepted through this host's API for `device`, wherever it is.
    Push {
        device: String,
        payload: Vec<u8>,
        expires_unix_ms: u64,
        id_floor: u64,
    },
    /// `device` acknowledged (or let expire) message `msg`: it leaves the durable queue.
    Ack { device: String, msg: u64 },
    /// `GET /v1/sessions/{device}` on this host, which holds no session of it: where is it?
    Lookup { device: String },
    /// `DELETE /v1/sessions/{device}` on this host, which holds no session of it: end it
    /// wherever it is.
    End { device: String },
    /// This host's session of `device` is in these rooms with these grants (a
    /// `keys::rooms_value`; empty: none), for whichever host takes it over.
    Rooms { device: String, value: String },
    /// A message for `room` ("" for the broadcast): numbered fleet-wide (never below
    /// `floor`), then published to the hosts with a member in it.
    Publish {
        room: String,
        payload: Vec<u8>,
        floor: u64,
    },
}

/// A durable push as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPush {
    pub msg: u64,
    pub expires_unix_ms: u64,
    pub payload: Vec<u8>,
}

/// Where the fleet's router table has a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    /// The owning host's session id (hex), empty while a login is being bound.
    pub session: String,
    pub online: bool,
}

/// What the engine answered to one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Login: the router table names the new session; `previous`, another host, held the
    /// device before (it is told to drop it); `pushes` are durable pushes to carry over
    /// (the previous host's, or any stored for the new session already); `stale` are ids
    /// of pushes left by a session whose window passed, to remove.
    Claimed {
        previous: Option<String>,
        /// The previous host's session id (hex), told to drop.
        previous_session: String,
        pushes: Vec<StoredPush>,
        stale: Vec<u64>,
        /// The previous host's rooms and grants for the device (a `keys::rooms_value`).
        rooms: String,
    },
    /// Login refused: `owner` holds the device and the rule is `refuse`.
    Refused { owner: String },
    /// Takeover: the device and session whose token this was, now this host's.
    TakenOver {
        device: String,
        previous: String,
        previous_session: String,
        pushes: Vec<StoredPush>,
        /// Its rooms and grants (a `keys::rooms_value`).
        rooms: String,
    },
    /// Takeover: no session of the fleet has this token (or its window passed).
    UnknownToken,
    /// Bind: written; `recreated` when the route had been lost and was written anew;
    /// `pushes`: the device's durable pushes (those stored between a claim and its bind
    /// reached no local session yet).
    Bound {
        recreated: bool,
        pushes: Vec<StoredPush>,
    },
    /// Bind: another session or host holds the device now.
    Moved,
    /// Bind: an operator ended this session through another host.
    Ended,
    /// Lookup: the device's session is at `owner`, connected through `gateway`, with
    /// `pending` durable pushes.
    Located {
        owner: Owner,
        gateway: String,
        pending: usize,
    },
    /// End: the session at `owner` was removed from the router table with its `pending`
    /// durable pushes (its host is told to drop it).
    Removed { owner: Owner, pending: usize },
    /// Forget and Ack: done.
    Done,
    /// Push, lookup, end: no session for the device anywhere.
    Offline,
    /// Push: the device's durable queue is full.
    Full { pending: usize },
    /// Push: stored durably as `msg`, for the session at `owner`.
    Stored { msg: u64, owner: Owner },
    /// Publish: numbered `seq` and published; `hosts` subscribers (hosts with a member)
    /// received it.
    Published { seq: u64, hosts: usize },
}

/// Why the engine could not answer.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum EngineError {
    /// The engine cannot be reached (or timed out): nothing can be promised fleet-wide.
    #[error("fleet engine unavailable: {0}")]
    Unavailable(String),
    /// The engine answered something this daemon does not understand.
    #[error("fleet engine answered unexpectedly: {0}")]
    Protocol(String),
}

/// A backend that runs batches of operations, in order, on the calling thread.
pub trait Engine: Send {
    /// Connects ahead of the first batch (so that the first login or push does not pay for
    /// the connection and the function load); an error here is retried by the first batch.
    fn connect(&mut self) -> Result<(), EngineError> {
        Ok(())
    }

    /// One answer per operation, in the same order; a batch that could not run at all is one
    /// error for every operation.
    fn run(&mut self, ops: &[Op]) -> Vec<Result<Outcome, EngineError>>;
}
