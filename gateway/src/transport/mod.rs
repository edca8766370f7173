//! Client transports: how a client's bytes on the wire become v1 frames and back. A client
//! speaks v1 frames over plain TCP, TLS, WebSocket (`ws`) or WebSocket over TLS (`wss`);
//! this module is the one place that knows which.
//!
//! A plain TCP client has no entry here: the reactor reads and writes its v1 frames
//! directly, and its slab slot stays 48 bytes. Every other client has a [`Session`] in its
//! reactor's [`Layers`], keyed by its slot: a stack of layers ([`TlsLayer`], [`WsLayer`],
//! both for `wss`) and, only while bytes are pending, a pooled [`LayerIo`] holding them.
//! Receiving runs the layers bottom-up over each read ([`Session::receive`]): TLS records
//! into plaintext, WebSocket frames into binary messages, messages into v1 frames handed to
//! the reactor's ordinary frame handling. Sending runs them top-down over the v1 frames the
//! reactor queued ([`Session::send`]): into binary messages, into TLS records, into the
//! bytes the reactor writes. Behind this — sessions, pushes, routing, limits, errors —
//! nothing knows which transport a client used.
//!
//! TLS handshakes cost CPU, so each reactor processes at most `tls_handshakes_per_loop`
//! handshake reads per loop iteration and defers the rest to the next ([`Layers::defer`]),
//! so a storm of new connections does not stall the established ones.

mod certs;
mod table;
mod tls;
mod ws;

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use rustls::ServerConfig;
use tether_daemon::nonblocking::write_queued;
use tether_proto::ws::{CloseCode, MessageError};
use tether_proto::{Decoder, Frame};

pub use certs::CertError;
pub(crate) use certs::{check as check_certs, server_config, Resumption};
pub(crate) use tls::TlsLayer;
pub(crate) use ws::{WsLayer, WsPolicy};

use crate::metrics::{CloseReason, Metrics};
use table::SessionTable;
use tls::TlsRead;
use ws::WsRead;

/// What a client listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub(crate) fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// The bytes a layered connection has pending, pooled per reactor: borrowed while any is
/// non-empty, given back once all are.
#[derive(Debug, Default)]
pub(crate) struct LayerIo {
    /// The start of a TLS record cut by the end of a read.
    tls_in: Vec<u8>,
    /// The WebSocket request head so far, or a cut frame and an open message's fragments.
    ws_in: Vec<u8>,
    /// What the WebSocket layer answered itself (101, refusal, pongs, close), not yet sent.
    ctl_out: Vec<u8>,
    /// Bytes for the socket.
    wire_out: Vec<u8>,
    /// How much of `wire_out` the socket has taken.
    wire_written: usize,
}

impl LayerIo {
    fn is_idle(&self) -> bool {
        self.tls_in.is_empty()
            && self.ws_in.is_empty()
            && self.ctl_out.is_empty()
            && self.wire_written == self.wire_out.len()
    }

    /// Bytes for the socket not yet written.
    fn pending(&self) -> usize {
        self.wire_out.len() - self.wire_written
    }
}

/// A layered connection's stack.
#[derive(Debug)]
enum Stack {
    Tls(Box<TlsLayer>),
    Ws(WsLayer),
    Wss(Box<(TlsLayer, WsLayer)>),
}

/// What a read did to a layered connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Go on reading.
    More,
    /// `on_frame` asked to stop (the connection is closing).
    Stopped,
    /// The connection ends for this reason once what is queued is written (a peer's close
    /// answered, a refused upgrade, a broken frame or record with its close code or alert).
    Close(CloseReason),
    /// A binary message was not a run of whole v1 frames: answer with a v1 ERROR (which
    /// closes).
    BadMessage(MessageError),
}

/// One layered connection: its layers and, while bytes are pending, their buffers.
#[derive(Debug)]
pub(crate) struct Session {
    stack: Stack,
    io: Option<Box<LayerIo>>,
}

/// What the layers of every connection of a reactor share.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub ws: &'a WsPolicy,
    pub decoder: &'a Decoder,
    pub metrics: &'a Metrics,
}

impl Session {
    /// The TLS layer, if there is one.
    fn tls_mut(&mut self) -> Option<&mut TlsLayer> {
        match &mut self.stack {
            Stack::Tls(tls) => Some(tls),
            Stack::Wss(both) => Some(&mut both.0),
            Stack::Ws(_) => None,
        }
    }

    /// Whether a TLS handshake is still going on.
    pub(crate) fn handshaking(&self) -> bool {
        match &self.stack {
            Stack::Tls(tls) => tls.handshaking(),
            Stack::Wss(both) => both.0.handshaking(),
            Stack::Ws(_) => false,
        }
    }

    /// Bytes for the socket not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.io.as_ref().map_or(0, |io| io.pending())
    }

    /// Whether received bytes wait for the rest of a record, frame, message or head.
    pub(crate) fn has_partial(&self) -> bool {
        self.io
            .as_ref()
            .is_some_and(|io| !io.tls_in.is_empty() || !io.ws_in.is_empty())
    }

    /// Whether anything waits to be encoded or written.
    pub(crate) fn has_output(&self) -> bool {
        self.io
            .as_ref()
            .is_some_and(|io| !io.ctl_out.is_empty() || io.pending() > 0)
    }

    /// Writes the bytes for the socket until done or it would block; returns how many were
    /// written. The buffers go back to the pool once nothing is pending.
    pub(crate) fn write(
        &mut self,
        pool: &mut IoPool,
        socket: &mut impl std::io::Write,
    ) -> std::io::Result<usize> {
        let Some(io) = self.io.as_mut() else {
            return Ok(0);
        };
        let before = io.wire_written;
        let wrote = write_queued(socket, &io.wire_out, &mut io.wire_written);
        let n = io.wire_written - before;
        if io.wire_written == io.wire_out.len() {
            io.wire_out.clear();
            io.wire_written = 0;
        }
        self.release(pool);
        wrote.map(|()| n)
    }

    /// Takes newly read bytes (changed in place: decrypted, unmasked) through every layer;
    /// each v1 frame goes to `on_frame`, which returns `false` to stop. `v1_partial` holds a
    /// v1 frame cut by the end of a TLS read (plain TLS carries a v1 byte stream), `plain`
    /// is the reactor's scratch for decrypted bytes.
    pub(crate) fn receive(
        &mut self,
        pool: &mut IoPool,
        env: &Env<'_>,
        data: &mut [u8],
        v1_partial: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        mut on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> Received {
        let io = self.io.get_or_insert_with(|| pool.take());
        let received = match &mut self.stack {
            Stack::Ws(ws) => from_ws(ws.receive(
                env.ws,
                env.decoder,
                data,
                &mut io.ws_in,
                &mut io.ctl_out,
                env.metrics,
                on_frame,
            )),
            Stack::Tls(tls) => {
                plain.clear();
                let read = tls.receive(data, &mut io.tls_in, plain, &mut io.wire_out, env.metrics);
                let mut stopped = false;
                let fed = tether_proto::feed(env.decoder, v1_partial, plain, |frame| {
                    stopped = !on_frame(frame);
                    !stopped
                });
                match (fed, read) {
                    (_, TlsRead::Failed(why)) => tls_failed(&why),
                    (Err(e), _) => Received::BadMessage(MessageError::Decode(e)),
                    _ if stopped => Received::Stopped,
                    (Ok(()), TlsRead::PeerClosed) => Received::Close(CloseReason::PeerClosed),
                    (Ok(()), TlsRead::Open) => Received::More,
                }
            }
            Stack::Wss(both) => {
                let (tls, ws) = &mut **both;
                plain.clear();
                let read = tls.receive(data, &mut io.tls_in, plain, &mut io.wire_out, env.metrics);
                let upper = if plain.is_empty() {
                    WsRead::Open
                } else {
                    ws.receive(
                        env.ws,
                        env.decoder,
                        plain,
                        &mut io.ws_in,
                        &mut io.ctl_out,
                        env.metrics,
                        on_frame,
                    )
                };
                match (upper, read) {
                    (_, TlsRead::Failed(why)) => tls_failed(&why),
                    (WsRead::Open, TlsRead::PeerClosed) => Received::Close(CloseReason::PeerClosed),
                    (upper, _) => from_ws(upper),
                }
            }
        };
        self.release(pool);
        received
    }

    /// Encodes the v1 frames `v1` (and what the layers answered themselves) into bytes for
    /// the socket, adding the closing handshake when `closing` (a WebSocket close with its
    /// code, TLS close_notify) once `v1` is all taken. Returns how much of `v1` was taken:
    /// none while a handshake or upgrade is pending (unless closing: then it is dropped).
    pub(crate) fn send(
        &mut self,
        pool: &mut IoPool,
        v1: &[u8],
        closing: Option<CloseReason>,
        plain: &mut Vec<u8>,
        metrics: &Metrics,
    ) -> usize {
        if v1.is_empty() && closing.is_none() && !self.has_output() {
            return 0;
        }
        let io = self.io.get_or_insert_with(|| pool.take());
        let close_code = closing.map(close_code);
        let taken = match &mut self.stack {
            Stack::Ws(ws) => {
                io.wire_out.append(&mut io.ctl_out);
                let taken = ws.send(v1, &mut io.wire_out);
                if let Some(code) = close_code {
                    ws.close(&mut io.wire_out, code, "", metrics);
                }
                if closing.is_some() {
                    v1.len()
                } else {
                    taken
                }
            }
            Stack::Tls(tls) => tls.send(v1, closing.is_some(), &mut io.tls_in, &mut io.wire_out),
            Stack::Wss(both) => {
                let (tls, ws) = &mut **both;
                plain.clear();
                plain.append(&mut io.ctl_out);
                let mut taken = ws.send(v1, plain);
                if let Some(code) = close_code {
                    ws.close(plain, code, "", metrics);
                    taken = v1.len();
                }
                if tls.send(plain, closing.is_some(), &mut io.tls_in, &mut io.wire_out)
                    < plain.len()
                {
                    // The handshake is not done: WebSocket bytes cannot exist yet.
                    plain.clear();
                }
                taken
            }
        };
        self.release(pool);
        taken
    }

    /// Gives the buffers back once nothing is pending.
    fn release(&mut self, pool: &mut IoPool) {
        if self.io.as_ref().is_some_and(|io| io.is_idle()) {
            if let Some(io) = self.io.take() {
                pool.give(io);
            }
        }
    }
}

fn from_ws(read: WsRead) -> Received {
    match read {
        WsRead::Open => Received::More,
        WsRead::Stopped => Received::Stopped,
        WsRead::PeerClosed => Received::Close(CloseReason::PeerClosed),
        WsRead::Refused => Received::Close(CloseReason::WsRefused),
        WsRead::Failed(_) => Received::Close(CloseReason::WsError),
        WsRead::BadMessage(e) => Received::BadMessage(e),
    }
}

fn tls_failed(why: &str) -> Received {
    tracing::debug!(error = why, "TLS connection failed");
    Received::Close(CloseReason::TlsError)
}

/// The WebSocket close code for a connection closing for `reason` (see doc/protocol.md).
fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::PeerClosed => CloseCode::NORMAL,
        CloseReason::Shutdown => CloseCode::GOING_AWAY,
        CloseReason::FrameTooLarge => CloseCode::MESSAGE_TOO_BIG,
        CloseReason::Overloaded => CloseCode::TRY_AGAIN_LATER,
        CloseReason::WsError | CloseReason::WsRefused | CloseReason::TlsError => {
            CloseCode::PROTOCOL_ERROR
        }
        _ => CloseCode::POLICY_VIOLATION,
    }
}

/// A free list of [`LayerIo`] boxes, per reactor.
#[derive(Debug)]
pub(crate) struct IoPool {
    // Boxed on purpose: a box moves into a session and back as one pointer.
    #[allow(clippy::vec_box)]
    free: Vec<Box<LayerIo>>,
    keep: usize,
    max_capacity: usize,
}

impl Default for IoPool {
    /// At most 64 boxes kept after a burst, each buffer trimmed to 16 KiB: a layered
    /// connection borrows one only for the reads and writes that leave bytes pending, so a
    /// few cover a reactor's busy connections at any moment.
    fn default() -> IoPool {
        IoPool {
            free: Vec::new(),
            keep: 64,
            max_capacity: 16 * 1024,
        }
    }
}

impl IoPool {
    fn take(&mut self) -> Box<LayerIo> {
        self.free.pop().unwrap_or_default()
    }

    fn give(&mut self, mut io: Box<LayerIo>) {
        if self.free.len() >= self.keep {
            return;
        }
        for buf in [
            &mut io.tls_in,
            &mut io.ws_in,
            &mut io.ctl_out,
            &mut io.wire_out,
        ] {
            if buf.capacity() > self.max_capacity {
                *buf = Vec::new();
            }
            buf.clear();
        }
        io.wire_written = 0;
        self.free.push(io);
    }
}

/// One reactor's layered connections and what they share.
#[derive(Debug)]
pub(crate) struct Layers {
    sessions: SessionTable,
    pub(crate) pool: IoPool,
    /// The current certificate (replaced on SIGHUP; connections keep the one they began with).
    tls: Option<Arc<ServerConfig>>,
    /// Shared with each read (it runs beside the reactor, which the frames need).
    pub(crate) ws: Rc<WsPolicy>,
    /// TLS connections whose handshake reads wait for the next loop iteration.
    deferred: VecDeque<(usize, u32)>,
    /// Handshake reads left in this loop iteration.
    budget: u32,
    per_loop: u32,
    /// Scratch for decrypted bytes and WebSocket bytes on their way into TLS.
    pub(crate) plain: Vec<u8>,
}

impl Layers {
    pub(crate) fn new(ws: WsPolicy, handshakes_per_loop: u32) -> Layers {
        Layers {
            sessions: SessionTable::default(),
            pool: IoPool::default(),
            tls: None,
            ws: Rc::new(ws),
            deferred: VecDeque::new(),
            budget: handshakes_per_loop,
            per_loop: handshakes_per_loop,
            plain: Vec::new(),
        }
    }

    pub(crate) fn set_tls(&mut self, config: Arc<ServerConfig>) {
        self.tls = Some(config);
    }

    pub(crate) fn set_policy(&mut self, ws: &WsPolicy, handshakes_per_loop: u32) {
        if *self.ws != *ws {
            self.ws = Rc::new(ws.clone());
        }
        self.per_loop = handshakes_per_loop;
    }

    /// Starts the layers of a new connection on `slot`. `Ok(false)` for plain TCP (no
    /// session); an error when TLS is asked for and no certificate is loaded.
    pub(crate) fn open(&mut self, slot: usize, transport: Transport) -> Result<bool, String> {
        let tls = || -> Result<TlsLayer, String> {
            let config = self.tls.clone().ok_or("no TLS certificate loaded")?;
            TlsLayer::new(config).map_err(|e| e.to_string())
        };
        let stack = match transport {
            Transport::Tcp => return Ok(false),
            Transport::Tls => Stack::Tls(Box::new(tls()?)),
            Transport::Ws => Stack::Ws(WsLayer::default()),
            Transport::Wss => Stack::Wss(Box::new((tls()?, WsLayer::default()))),
        };
        self.sessions.insert(slot, Session { stack, io: None });
        Ok(true)
    }

    /// Takes a connection's session out (to run it beside the reactor); put it back with
    /// [`Layers::put`].
    pub(crate) fn take(&mut self, slot: usize) -> Option<Session> {
        self.sessions.remove(slot)
    }

    pub(crate) fn put(&mut self, slot: usize, session: Session) {
        self.sessions.insert(slot, session);
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Session> {
        self.sessions.get(slot)
    }

    /// A connection closed: its session goes, its buffers back to the pool.
    pub(crate) fn close(&mut self, slot: usize) {
        if let Some(mut session) = self.take(slot) {
            if let Some(io) = session.io.take() {
                self.pool.give(io);
            }
        }
    }

    /// One handshake read from this iteration's budget, or `false` when it is spent.
    pub(crate) fn spend_handshake(&mut self) -> bool {
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        true
    }

    /// Defers a handshake read of `session` (on `slot`, `generation`) to the next iteration.
    pub(crate) fn defer(&mut self, session: &mut Session, slot: usize, generation: u32) {
        if let Some(tls) = session.tls_mut().filter(|tls| !tls.deferred) {
            tls.deferred = true;
            self.deferred.push_back((slot, generation));
        }
    }

    /// A new loop iteration: a fresh budget, and the deferred handshakes to read first (as
    /// many as it allows; the rest stay queued).
    pub(crate) fn next_iteration(&mut self) -> Vec<(usize, u32)> {
        self.budget = self.per_loop;
        let n = self.deferred.len().min(self.per_loop as usize);
        let due: Vec<(usize, u32)> = self.deferred.drain(..n).collect();
        for &(slot, _) in &due {
            if let Some(tls) = self.sessions.get_mut(slot).and_then(Session::tls_mut) {
                tls.deferred = false;
            }
        }
        due
    }

    /// Whether handshakes wait for the next iteration (the loop must not sleep).
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Layered connections open on this reactor.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests;
