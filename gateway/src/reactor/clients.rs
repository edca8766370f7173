//! The reactor's client connections: adopting sockets from the acceptors, reading frames,
//! replies and errors, flushing, closing, and the timers of a client's input (stalled
//! partial frames, idleness, a close that is not taken).
//!
//! A client's input timers run only while the gateway reads it: a client paused at
//! `max_inflight` (backpressure) is not timed out for the partial frame it could not finish.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use mio::net::TcpStream;
use mio::{Interest, Token};
use tether_daemon::nonblocking::{read_frames, ReadEnd};
use tether_proto::{encode, ErrorCode, Frame, Kind};

use super::{Reactor, Verdict, BACKEND_BASE, GOAWAY_BODY};
use crate::client::{Client, Login, Marks};
use crate::metrics::CloseReason;
use crate::rate_limit::TokenBucket;
use crate::route::next_generation;

/// A client that cannot take its closing ERROR within this is dropped anyway.
const CLOSE_LINGER_MS: u32 = 1000;
/// Idle sweeps run every `idle_timeout / IDLE_SWEEPS`; a client silent through one more
/// than that many is idle, so it goes after 1 to 1.25 times `idle_timeout`.
pub(super) const IDLE_SWEEPS: u32 = 4;

impl Reactor {
    /// Takes the sockets the acceptors handed over.
    pub(super) fn adopt(&mut self) {
        let now_ms = self.now_ms();
        while let Ok((mut stream, key, transport)) = self.incoming.try_recv() {
            let bucket = TokenBucket::full(self.settings.rate_burst, now_ms);
            let entry = self.clients.vacant_entry();
            let slot = entry.key();
            if slot >= BACKEND_BASE
                || self
                    .poll
                    .registry()
                    .register(&mut stream, Token(slot), Interest::READABLE)
                    .is_err()
            {
                self.open.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            self.generation = next_generation(self.generation);
            let login = if self.state.is_some() {
                let deadline = now_ms.wrapping_add(self.settings.login_timeout_ms);
                self.logins.push_back((slot, self.generation, deadline));
                Login::Awaiting
            } else {
                Login::Anonymous
            };
            let mut client = Client::new(stream, self.generation, key, bucket, login);
            match self.layers.open(slot, transport) {
                Ok(layered) => client.marks.set(Marks::LAYERED, layered),
                Err(why) => {
                    tracing::warn!(transport = transport.name(), why, "connection dropped");
                    let _ = self.poll.registry().deregister(&mut client.stream);
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            }
            entry.insert(client);
            self.metrics.accepted.inc();
            if self.draining.is_some() {
                self.reply(slot, Kind::GoAway, 0, GOAWAY_BODY);
            }
        }
    }

    /// Reads everything the client has sent, handling each complete frame (complete frames
    /// in place, only a frame split across reads buffered: see [`read_frames`], which also
    /// states the short-read rule `until_eagain` is for). Reading stops once the client is
    /// closing, and pauses at `max_inflight` until replies come back. An incomplete tail is
    /// kept in a pooled buffer only while a frame is split.
    pub(super) fn read_client(&mut self, slot: usize, until_eagain: bool) -> Verdict {
        let Some(client) = self.clients.get_mut(slot) else {
            return Verdict::Keep;
        };
        if client.marks.has(Marks::SHUT) {
            return self.linger(slot);
        }
        if client.marks.has(Marks::LAYERED) {
            return self.read_layered(slot, until_eagain);
        }
        let mut partial = match client.io.as_mut() {
            Some(io) => std::mem::take(&mut io.partial),
            None => Vec::new(),
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        let decoder = self.decoder;
        let max_inflight = self.settings.max_inflight;
        let mut completed = false;
        let reading = read_frames(
            self,
            |r| r.readable(slot, max_inflight),
            &mut scratch,
            &mut partial,
            &decoder,
            until_eagain,
            |r, frame| {
                completed = true;
                r.metrics.frames_in.inc();
                r.on_client_frame(slot, frame);
                match r.clients.get(slot) {
                    Some(client) if client.closing.is_none() => ControlFlow::Continue(()),
                    _ => ControlFlow::Break(()),
                }
            },
        );
        self.scratch = scratch;
        if reading.bytes > 0 {
            if let Some(client) = self.clients.get_mut(slot) {
                client.quiet = 0;
            }
            self.metrics.bytes_in.add(reading.bytes as u64);
        }
        if let ReadEnd::Malformed(e) = &reading.end {
            self.client_error(slot, e.offending_id(), e.code(), &e.to_string());
        }
        self.keep_partial(slot, partial, completed);
        match reading.end {
            ReadEnd::Eof => Verdict::Close(CloseReason::PeerClosed),
            ReadEnd::Failed(_) => Verdict::Close(CloseReason::Reset),
            _ => Verdict::Keep,
        }
    }

    /// The client's socket for one more read, or `None` to read no more: it is closing,
    /// gone, or paused at `max_inflight` (marked so, to be read again as replies come back).
    pub(super) fn readable(&mut self, slot: usize, max_inflight: u32) -> Option<&mut TcpStream> {
        let client = self.clients.get_mut(slot)?;
        if client.closing.is_some() {
            return None;
        }
        if client.inflight >= max_inflight {
            client.marks.set(Marks::PAUSED, true);
            return None;
        }
        Some(&mut client.stream)
    }

    /// After a read: keeps an incomplete tail in a pooled buffer (watched, so a stalled one
    /// times out), or gives the buffers back once nothing is pending.
    pub(super) fn keep_partial(&mut self, slot: usize, partial: Vec<u8>, completed: bool) {
        let now_ms = self.now_ms();
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.closing.is_some() {
            return;
        }
        if partial.is_empty() {
            client.since_ms = 0;
            if let Some(io) = client.io.as_mut() {
                io.partial = partial; // keep the buffer's capacity with the pooled box
            }
            self.release_io(slot);
            return;
        }
        if client.since_ms == 0 || completed {
            client.since_ms = now_ms;
        }
        let io = client.io.get_or_insert_with(|| self.io_pool.take());
        io.partial = partial;
        self.watch_partial(slot);
    }

    /// Puts a client with an unfinished input in the timeout watch list (its clock starts
    /// now unless it already runs).
    pub(super) fn watch_partial(&mut self, slot: usize) {
        let now_ms = self.now_ms();
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.since_ms == 0 {
            client.since_ms = now_ms;
        }
        if !client.marks.has(Marks::WATCHED) {
            client.marks.set(Marks::WATCHED, true);
            self.watch.push((slot, client.generation));
        }
    }

    pub(super) fn on_client_frame(&mut self, slot: usize, frame: Frame<'_>) {
        if self.state.is_some() && self.gate(slot, &frame) {
            return;
        }
        if self.settings.rate_limit > 0 {
            let now_ms = self.now_ms();
            let (rate, burst) = (self.settings.rate_limit, self.settings.rate_burst);
            if let Some(client) = self.clients.get_mut(slot) {
                if !client.bucket.allow(now_ms, rate, burst) {
                    self.client_error(slot, frame.id, ErrorCode::RateLimited, "rate limit");
                    return;
                }
            }
        }
        match frame.kind {
            Kind::Data => self.forward(slot, &frame),
            Kind::Ping => self.reply(slot, Kind::Pong, frame.id, &[]),
            Kind::Login => {
                // Without a state daemon every connection is anonymous.
                let body = format!(
                    r#"{{"session":"anon-{}-{}","resume_token":"","heartbeat_s":30}}"#,
                    self.index, slot
                );
                self.reply(slot, Kind::LoginOk, frame.id, body.as_bytes());
            }
            Kind::Ack => {}
            Kind::Resume | Kind::Join | Kind::Leave => self.client_error(
                slot,
                frame.id,
                ErrorCode::Unavailable,
                "this gateway has no state daemon",
            ),
            other => {
                let reason = format!("a gateway does not accept {} from clients", other.name());
                self.client_error(slot, frame.id, ErrorCode::UnknownKind, &reason);
            }
        }
    }

    /// Appends a frame to the client's output.
    pub(super) fn reply(&mut self, slot: usize, kind: Kind, id: u64, body: &[u8]) {
        if let Some(out) = self.client_output(slot) {
            encode::frame(out, kind, id, body);
            self.metrics.frames_out.inc();
            self.mark_client(slot);
        }
    }

    /// Sends ERROR; for codes that close, reads nothing more and closes once written.
    pub(super) fn client_error(&mut self, slot: usize, id: u64, code: ErrorCode, reason: &str) {
        let Some(out) = self.client_output(slot) else {
            return;
        };
        encode::error(out, id, code, reason);
        self.metrics.frames_out.inc();
        self.metrics.error(code);
        if code.closes_connection() {
            let reason = CloseReason::from_error(code).unwrap_or(CloseReason::Reset);
            self.close_when_flushed(slot, reason);
        }
        self.mark_client(slot);
    }

    /// Reads nothing more from the client and closes it, for `reason`, once what is queued
    /// is written (or after a linger).
    pub(super) fn close_when_flushed(&mut self, slot: usize, reason: CloseReason) {
        let now_ms = self.now_ms();
        if let Some(client) = self.clients.get_mut(slot) {
            client.closing = Some(reason);
            client.since_ms = now_ms;
            if let Some(io) = client.io.as_mut() {
                io.partial.clear();
            }
            if !client.marks.has(Marks::WATCHED) {
                client.marks.set(Marks::WATCHED, true);
                self.watch.push((slot, client.generation));
            }
        }
        self.mark_client(slot);
    }

    pub(super) fn client_output(&mut self, slot: usize) -> Option<&mut Vec<u8>> {
        let client = self.clients.get_mut(slot)?;
        if client.io.is_none() {
            client.io = Some(self.io_pool.take());
        }
        client.io.as_mut().map(|io| &mut io.out)
    }

    pub(super) fn mark_client(&mut self, slot: usize) {
        if let Some(client) = self.clients.get_mut(slot) {
            if !client.marks.has(Marks::DIRTY) {
                client.marks.set(Marks::DIRTY, true);
                self.dirty_clients.push(slot);
            }
        }
    }

    /// Gives an idle client's buffers back to the pool.
    fn release_io(&mut self, slot: usize) {
        let Some(client) = self.clients.get_mut(slot) else {
            return;
        };
        if client.io.as_ref().is_some_and(|io| io.is_idle()) {
            if let Some(io) = client.io.take() {
                self.io_pool.give(io);
            }
        }
    }

    pub(super) fn flush_clients(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_clients);
        for &slot in &dirty {
            if let Verdict::Close(reason) = self.flush_client(slot) {
                self.close_client(slot, reason);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty_clients.is_empty() {
            self.dirty_clients = dirty;
        }
    }

    fn flush_client(&mut self, slot: usize) -> Verdict {
        let max_queued = self.settings.max_queued_bytes;
        let Some(client) = self.clients.get_mut(slot) else {
            return Verdict::Keep;
        };
        client.marks.set(Marks::DIRTY, false);
        let layered = client.marks.has(Marks::LAYERED);
        let flushed = if layered {
            self.flush_layered(slot)
        } else {
            client.flush()
        };
        match flushed {
            Ok(n) => self.metrics.bytes_out.add(n as u64),
            Err(_) => return Verdict::Close(CloseReason::Reset),
        }
        let pending = self.layer_pending(slot);
        let Some(client) = self.clients.get_mut(slot) else {
            return Verdict::Keep;
        };
        let pending = pending + client.pending();
        if pending > max_queued && client.closing.is_none() {
            // It does not read: drop what is queued, say why once (a layered client's
            // layers are behind on it already: it is only counted), close.
            if let Some(io) = client.io.as_mut() {
                io.out.clear();
                io.written = 0;
                encode::error(&mut io.out, 0, ErrorCode::SlowConsumer, "replies not read");
            }
            if !layered {
                let _ = client.flush();
            }
            self.metrics.error(ErrorCode::SlowConsumer);
            return Verdict::Close(CloseReason::SlowConsumer);
        }
        if pending == 0 {
            if let Some(reason) = client.closing {
                if !layered {
                    return Verdict::Close(reason);
                }
                // A layered client's last words (a close frame, close_notify) must be read
                // before the socket goes: see `Reactor::linger`.
                if !client.marks.has(Marks::SHUT) {
                    client.marks.set(Marks::SHUT, true);
                    if client.stream.shutdown(std::net::Shutdown::Write).is_err() {
                        return Verdict::Close(reason);
                    }
                }
            }
        }
        let want = pending > 0;
        if want != client.marks.has(Marks::WRITABLE) {
            client.marks.set(Marks::WRITABLE, want);
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut client.stream, Token(slot), interest)
                .is_err()
            {
                return Verdict::Close(CloseReason::Reset);
            }
        }
        self.release_io(slot);
        Verdict::Keep
    }

    pub(super) fn close_client(&mut self, slot: usize, reason: CloseReason) {
        if let Some(mut client) = self.clients.try_remove(slot) {
            if client.login == Login::In {
                self.send_closed(slot, client.generation, reason);
                self.room_members.remove_client(slot as u32);
            }
            let _ = self.poll.registry().deregister(&mut client.stream);
            if let Some(io) = client.io.take() {
                self.io_pool.give(io);
            }
            if client.marks.has(Marks::LAYERED) {
                self.layers.close(slot);
            }
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.metrics.close(reason);
        }
    }

    /// Reads again the paused clients whose replies came back. Their partial-frame clock
    /// restarts now: it did not run while the gateway was not reading them.
    pub(super) fn resume_paused(&mut self) {
        let now_ms = self.now_ms();
        while let Some(slot) = self.resume.pop() {
            let resumable = self.clients.get_mut(slot).is_some_and(|c| {
                let go = c.marks.has(Marks::PAUSED) && c.closing.is_none();
                c.marks.set(Marks::PAUSED, false);
                if go && c.since_ms != 0 {
                    c.since_ms = now_ms;
                }
                go
            });
            if resumable {
                // Reading stopped part-way: no edge will announce what is queued.
                if let Verdict::Close(reason) = self.read_client(slot, true) {
                    self.close_client(slot, reason);
                }
            }
        }
    }

    /// Counts one more sweep of silence for every client and closes those silent for longer
    /// than the idle timeout with ERROR TIMEOUT. A client waiting for replies from the nodes
    /// is not idle. O(clients), a few times per `idle_timeout`.
    pub(super) fn sweep_idle(&mut self) {
        let mut idle = Vec::new();
        for (slot, client) in self.clients.iter_mut() {
            if client.closing.is_some() {
                continue;
            }
            if client.inflight > 0 {
                client.quiet = 0;
                continue;
            }
            client.quiet = client.quiet.saturating_add(1);
            if u32::from(client.quiet) > IDLE_SWEEPS {
                idle.push(slot);
            }
        }
        for slot in idle {
            self.client_error(slot, 0, ErrorCode::Timeout, "idle");
            if let Some(client) = self.clients.get_mut(slot) {
                client.closing = Some(CloseReason::Idle);
            }
        }
    }

    /// Times out stalled partial frames (slowloris) and closes clients that would not take
    /// their closing error. A paused client's partial frame is not timed: the gateway is
    /// the one not reading it.
    pub(super) fn check_watched(&mut self) {
        let now_ms = self.now_ms();
        let frame_timeout = self.settings.frame_timeout_ms;
        let mut watch = std::mem::take(&mut self.watch);
        watch.retain(|&(slot, generation)| {
            let layer_partial = self.layer_partial(slot);
            let Some(client) = self
                .clients
                .get_mut(slot)
                .filter(|c| c.generation == generation)
            else {
                return false;
            };
            let age = now_ms.wrapping_sub(client.since_ms);
            if let Some(reason) = client.closing {
                if age >= CLOSE_LINGER_MS {
                    self.close_client(slot, reason);
                    return false;
                }
                return true;
            }
            if !client.has_partial() && !layer_partial {
                client.marks.set(Marks::WATCHED, false);
                client.since_ms = 0;
                return false;
            }
            if client.marks.has(Marks::PAUSED) {
                return true;
            }
            if age >= frame_timeout {
                self.client_error(slot, 0, ErrorCode::Timeout, "partial frame stalled");
            }
            true
        });
        watch.append(&mut self.watch);
        self.watch = watch;
    }
}
