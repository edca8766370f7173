//! The reactor's side of layered clients (TLS, WebSocket, WebSocket over TLS): reading
//! through their layers into the ordinary frame handling, writing what the layers made of
//! the queued v1 frames, and the per-iteration budget of TLS handshakes.
//!
//! A layered client is an ordinary [`Client`](crate::client::Client) marked
//! [`Marks::LAYERED`](crate::client::Marks::LAYERED), whose [`Session`](crate::transport::Session) lives in the reactor's
//! [`Layers`](crate::transport::Layers). Reading and writing take the session out for the
//! duration, so the frames it yields can act on the whole reactor.

use std::io;
use std::ops::ControlFlow;

use tether_daemon::nonblocking::{read_chunks, ReadEnd};

use super::{Reactor, Verdict};
use crate::metrics::CloseReason;
use crate::transport::{Env, Received};

impl Reactor {
    /// [`Reactor::read_client`] for a layered client: every read goes through its layers,
    /// and each v1 frame they yield to the same handling as a TCP client's. A TLS client
    /// still in its handshake is read only while this iteration's handshake budget lasts;
    /// past it, the read waits for the next iteration.
    pub(super) fn read_layered(&mut self, slot: usize, until_eagain: bool) -> Verdict {
        let Some(generation) = self.clients.get(slot).map(|c| c.generation) else {
            return Verdict::Keep;
        };
        let Some(mut session) = self.layers.take(slot) else {
            return Verdict::Close(CloseReason::Reset);
        };
        if session.handshaking() && !self.layers.spend_handshake() {
            self.metrics.tls_deferred.inc();
            self.layers.defer(&mut session, slot, generation);
            self.layers.put(slot, session);
            return Verdict::Keep;
        }
        let mut partial = self
            .clients
            .get_mut(slot)
            .and_then(|c| c.io.as_mut())
            .map(|io| std::mem::take(&mut io.partial))
            .unwrap_or_default();
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut pool = std::mem::take(&mut self.layers.pool);
        let mut plain = std::mem::take(&mut self.layers.plain);
        let policy = self.layers.ws.clone();
        let metrics = self.metrics.clone();
        let decoder = self.decoder;
        let max_inflight = self.settings.max_inflight;
        let mut completed = false;
        let mut outcome = Received::More;
        let reading = read_chunks(
            self,
            |r| r.readable(slot, max_inflight),
            &mut scratch,
            until_eagain,
            |r, chunk| {
                let env = Env {
                    ws: &policy,
                    decoder: &decoder,
                    metrics: &metrics,
                };
                let received =
                    session.receive(&mut pool, &env, chunk, &mut partial, &mut plain, |frame| {
                        completed = true;
                        r.metrics.frames_in.inc();
                        r.on_client_frame(slot, frame);
                        r.clients.get(slot).is_some_and(|c| c.closing.is_none())
                    });
                match received {
                    Received::More => ControlFlow::Continue(()),
                    other => {
                        outcome = other;
                        ControlFlow::Break(())
                    }
                }
            },
        );
        self.scratch = scratch;
        self.layers.pool = pool;
        self.layers.plain = plain;
        if reading.bytes > 0 {
            if let Some(client) = self.clients.get_mut(slot) {
                client.quiet = 0;
            }
            self.metrics.bytes_in.add(reading.bytes as u64);
        }
        let output = session.has_output();
        let input_pending = session.has_partial();
        self.layers.put(slot, session);
        match outcome {
            Received::More | Received::Stopped => {}
            Received::Close(reason) => self.close_when_flushed(slot, reason),
            Received::BadMessage(e) => {
                self.client_error(slot, e.offending_id(), e.code(), &e.to_string())
            }
        }
        if output {
            self.mark_client(slot);
        }
        // A record, frame or head still cut keeps its clock running: dribbling bytes does
        // not restart it, only a whole v1 frame does.
        let since = self.clients.get(slot).map_or(0, |c| c.since_ms);
        self.keep_partial(slot, partial, completed);
        if input_pending {
            if let Some(client) = self.clients.get_mut(slot) {
                if !completed && client.since_ms == 0 {
                    client.since_ms = since;
                }
            }
            self.watch_partial(slot);
        }
        match reading.end {
            ReadEnd::Eof => Verdict::Close(CloseReason::PeerClosed),
            ReadEnd::Failed(_) => Verdict::Close(CloseReason::Reset),
            _ => Verdict::Keep,
        }
    }

    /// [`Client::flush`](crate::client::Client::flush) for a layered client: the queued v1
    /// frames go through its layers (with the closing handshake once it is closing), then
    /// what they made is written. Returns the bytes written.
    pub(super) fn flush_layered(&mut self, slot: usize) -> io::Result<usize> {
        let Some(mut session) = self.layers.take(slot) else {
            return Ok(0);
        };
        let Some(client) = self.clients.get_mut(slot) else {
            return Ok(0);
        };
        let v1 = client
            .io
            .as_ref()
            .map_or(&[][..], |io| &io.out[io.written..]);
        let taken = session.send(
            &mut self.layers.pool,
            v1,
            client.closing,
            &mut self.layers.plain,
            &self.metrics,
        );
        if let Some(io) = client.io.as_mut() {
            io.written += taken;
            if io.written == io.out.len() {
                io.out.clear();
                io.written = 0;
            }
        }
        let wrote = session.write(&mut self.layers.pool, &mut client.stream);
        self.layers.put(slot, session);
        wrote
    }

    /// Bytes a layered client's layers have for the socket (0 for a TCP client).
    pub(super) fn layer_pending(&self, slot: usize) -> usize {
        self.layers.get(slot).map_or(0, |s| s.pending())
    }

    /// Whether a layered client's layers hold the start of something (a record, a frame,
    /// the upgrade request) that a stalled client never finishes.
    pub(super) fn layer_partial(&self, slot: usize) -> bool {
        self.layers.get(slot).is_some_and(|s| s.has_partial())
    }

    /// A closing layered client whose last bytes are written and whose write side is shut:
    /// reads and drops what it still sends until its EOF, then closes. Closing at once
    /// would answer its unread bytes with a reset, which can destroy the close frame or
    /// close_notify it has not read yet; a client that never closes goes at the linger.
    pub(super) fn linger(&mut self, slot: usize) -> Verdict {
        let mut scratch = std::mem::take(&mut self.scratch);
        let reading = read_chunks(
            self,
            |r| r.clients.get_mut(slot).map(|c| &mut c.stream),
            &mut scratch,
            true,
            |_, _| ControlFlow::<()>::Continue(()),
        );
        self.scratch = scratch;
        let reason = self
            .clients
            .get(slot)
            .and_then(|c| c.closing)
            .unwrap_or(CloseReason::Reset);
        match reading.end {
            ReadEnd::Eof | ReadEnd::Failed(_) => Verdict::Close(reason),
            _ => Verdict::Keep,
        }
    }

    /// Reads the TLS handshakes deferred from the last iteration, as many as this
    /// iteration's budget allows; the budget starts afresh.
    pub(super) fn read_deferred(&mut self) {
        for (slot, generation) in self.layers.next_iteration() {
            if self
                .clients
                .get(slot)
                .is_some_and(|c| c.generation == generation)
            {
                // No new edge will announce what is already queued.
                if let Verdict::Close(reason) = self.read_client(slot, true) {
                    self.close_client(slot, reason);
                }
            }
        }
    }
}
