//! The reactor's links to nodes: connecting with backoff, health probes and transitions,
//! reading replies, flushing the coalesced REQUESTs, and taking a node list from a reload.
//!
//! A link is reset when it fails, when a connect times out, or when the node has not read a
//! byte of it for longer than health checking takes to call it down (it does not read its
//! link); never for how much is queued on it: a full queue only stops the dispatcher from
//! giving that node new requests.

use std::io;
use std::ops::ControlFlow;

use mio::net::TcpStream;
use mio::{Interest, Token};
use tether_daemon::nonblocking::{read_frames, ReadEnd};
use tether_proto::{encode, ErrorCode, Frame, Kind, NodeErrorBody, Routed};

use super::{LinkVerdict, Reactor};
use crate::backend::{Backend, Link};
use crate::dispatch::Cause;
use crate::health::Transition;
use crate::metrics::{BackendDrop, NodeStatus};

impl Reactor {
    fn backend_index(&self, token: Token) -> Option<usize> {
        self.backends.iter().position(|b| b.token == token)
    }

    pub(super) fn backend_event(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(node) = self.backend_index(token) else {
            return;
        };
        let verdict = if matches!(self.backends[node].link, Link::Connecting { .. }) {
            if writable || readable {
                self.finish_connect(node)
            } else {
                LinkVerdict::Keep
            }
        } else {
            if writable {
                self.mark_backend(node);
            }
            if readable {
                self.read_backend(node)
            } else {
                LinkVerdict::Keep
            }
        };
        if let LinkVerdict::Lost(reason) = verdict {
            self.link_lost(node, &reason);
        }
    }

    fn connect(&mut self, node: usize) -> LinkVerdict {
        let addr = self.backends[node].addr;
        let token = self.backends[node].token;
        let mut stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(e) => return LinkVerdict::Lost(e.to_string()),
        };
        let _ = stream.set_nodelay(true);
        if self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .is_err()
        {
            return LinkVerdict::Lost("cannot register".into());
        }
        self.backends[node].writable = true;
        self.backends[node].link = Link::Connecting {
            stream,
            since: self.now,
        };
        LinkVerdict::Keep
    }

    fn finish_connect(&mut self, node: usize) -> LinkVerdict {
        let backend = &mut self.backends[node];
        let Link::Connecting { stream, .. } = &mut backend.link else {
            return LinkVerdict::Keep;
        };
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => return LinkVerdict::Lost(e.to_string()),
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return LinkVerdict::Keep, // not yet
            Err(e) => return LinkVerdict::Lost(e.to_string()),
        }
        let Link::Connecting { stream, .. } =
            std::mem::replace(&mut backend.link, Link::Idle { retry_at: self.now })
        else {
            return LinkVerdict::Keep;
        };
        backend.link = Link::Connected { stream };
        backend.backoff = self.settings.reconnect_min;
        backend.progress = self.now;
        tracing::info!(reactor = self.index, node = %backend.addr, "node link connected");
        let transition = backend.health.on_connected(self.now);
        self.on_transition(node, transition);
        self.mark_backend(node);
        LinkVerdict::Keep
    }

    /// The link broke (or never came up): node down, its requests leave it, reconnect later.
    fn link_lost(&mut self, node: usize, reason: &str) {
        let backend = &mut self.backends[node];
        let retry_at = self.now + backend.backoff;
        let was_connected = backend.is_connected();
        if let Some(mut stream) = backend.reset(retry_at) {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        backend.backoff = (backend.backoff * 2).min(self.settings.reconnect_max);
        if was_connected {
            tracing::warn!(reactor = self.index, node = %backend.addr, reason, "node link lost");
        } else {
            tracing::debug!(reactor = self.index, node = %backend.addr, reason, "node connect failed");
        }
        let transition = backend.health.on_disconnected();
        self.on_transition(node, transition);
        // Whatever was in flight there will not be answered on this link.
        self.evacuate(node, Cause::LinkLost);
        self.dispatcher.set_queued(node, 0);
    }

    fn on_transition(&mut self, node: usize, transition: Transition) {
        match transition {
            Transition::None => return,
            Transition::Up => {
                tracing::info!(reactor = self.index, node = %self.backends[node].addr, "node up");
                self.node_health(node, true);
            }
            Transition::Down => {
                tracing::warn!(reactor = self.index, node = %self.backends[node].addr, "node down");
                self.node_health(node, false);
            }
        }
        self.publish_nodes();
    }

    /// Reads everything the node has sent, handling each complete frame, until the socket
    /// would block (no short-read shortcut on node links) or the link fails.
    fn read_backend(&mut self, node: usize) -> LinkVerdict {
        let token = self.backends[node].token;
        let mut partial = std::mem::take(&mut self.backends[node].partial);
        let mut scratch = std::mem::take(&mut self.scratch);
        // Node replies carry a route before the client's payload.
        let decoder = tether_proto::Decoder::new(self.settings.max_body.saturating_add(8 + 64));
        let reading = read_frames(
            self,
            |r| r.backends[node].connected(),
            &mut scratch,
            &mut partial,
            &decoder,
            true,
            |r, frame| {
                r.on_backend_frame(node, frame);
                if r.backends[node].is_connected() {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        );
        self.scratch = scratch;
        match reading.end {
            ReadEnd::Eof => LinkVerdict::Lost("node closed the link".into()),
            ReadEnd::Failed(e) => LinkVerdict::Lost(e.to_string()),
            ReadEnd::Malformed(e) => {
                self.metrics.drop_backend(BackendDrop::Malformed);
                LinkVerdict::Lost(format!("bad frame from node: {e}"))
            }
            ReadEnd::Drained | ReadEnd::Withheld | ReadEnd::Stopped(()) => {
                // Keep the tail only if this is still the same, live link.
                if let Some(b) = self.backends.get_mut(node).filter(|b| b.token == token) {
                    if b.is_connected() {
                        b.partial = partial;
                    }
                }
                LinkVerdict::Keep
            }
        }
    }

    fn on_backend_frame(&mut self, node: usize, frame: Frame<'_>) {
        match frame.kind {
            Kind::Response => match Routed::parse(frame.body) {
                Ok(routed) => self.answered(node, frame.id, routed.route, Ok(routed.payload)),
                Err(_) => self.metrics.drop_backend(BackendDrop::Malformed),
            },
            Kind::NodeError => match NodeErrorBody::parse(frame.body) {
                Ok(err) if err.code == ErrorCode::Overloaded.as_u16() => {
                    // Not processed there: worth one try elsewhere.
                    self.overloaded(node, frame.id, err.route);
                }
                Ok(err) => {
                    let reason = format!("node error {}: {}", err.code, err.reason);
                    self.answered(node, frame.id, err.route, Err(&reason));
                }
                Err(_) => self.metrics.drop_backend(BackendDrop::Malformed),
            },
            Kind::NodePublish => self.node_publish(frame.body),
            Kind::NodePong => {
                let transition = self.backends[node].health.on_pong(frame.id, &self.policy);
                self.on_transition(node, transition);
            }
            _ => self.metrics.drop_backend(BackendDrop::UnexpectedKind),
        }
    }

    pub(super) fn mark_backend(&mut self, node: usize) {
        if !self.backends[node].dirty {
            self.backends[node].dirty = true;
            self.dirty_backends.push(node);
        }
    }

    pub(super) fn flush_backends(&mut self) {
        let dirty = std::mem::take(&mut self.dirty_backends);
        for &node in &dirty {
            if node < self.backends.len() {
                if let LinkVerdict::Lost(reason) = self.flush_backend(node) {
                    self.link_lost(node, &reason);
                }
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty_backends.is_empty() {
            self.dirty_backends = dirty;
        }
    }

    fn flush_backend(&mut self, node: usize) -> LinkVerdict {
        let now = self.now;
        let backend = &mut self.backends[node];
        backend.dirty = false;
        if !backend.is_connected() {
            return LinkVerdict::Keep;
        }
        if let Err(e) = backend.flush(now) {
            return LinkVerdict::Lost(e.to_string());
        }
        let pending = backend.pending();
        self.dispatcher.set_queued(node, pending);
        let backend = &mut self.backends[node];
        let want = pending > 0;
        if want != backend.writable {
            backend.writable = want;
            let token = backend.token;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let failed = match backend.stream() {
                Some(stream) => self
                    .poll
                    .registry()
                    .reregister(stream, token, interest)
                    .is_err(),
                None => false,
            };
            if failed {
                return LinkVerdict::Lost("cannot reregister".into());
            }
        }
        LinkVerdict::Keep
    }

    /// Per tick: reconnect when due, time out connects, probe, and reset a link the node
    /// has not read for as long as health checking takes to call a node down.
    pub(super) fn tick_nodes(&mut self) {
        let stall = self.policy.interval * self.policy.fall + self.policy.timeout;
        for node in 0..self.backends.len() {
            let verdict = match self.backends[node].link {
                Link::Idle { retry_at } if self.now >= retry_at => self.connect(node),
                Link::Connecting { since, .. }
                    if self.now.duration_since(since) >= self.policy.timeout =>
                {
                    LinkVerdict::Lost("connect timed out".into())
                }
                Link::Connected { .. } if self.backends[node].stalled(self.now, stall) => {
                    LinkVerdict::Lost("node does not read its requests".into())
                }
                Link::Connected { .. } => {
                    let (transition, probe) =
                        self.backends[node].health.poll(self.now, &self.policy);
                    self.on_transition(node, transition);
                    if let Some(id) = probe {
                        encode::frame(&mut self.backends[node].out, Kind::NodePing, id, &[]);
                        self.mark_backend(node);
                    }
                    LinkVerdict::Keep
                }
                _ => LinkVerdict::Keep,
            };
            if let LinkVerdict::Lost(reason) = verdict {
                self.link_lost(node, &reason);
            }
        }
    }

    /// A new node list (reload): nodes added get a link, nodes removed lose theirs (their
    /// requests leave as from a lost link), the rest keep theirs.
    pub(super) fn set_nodes(&mut self, nodes: &[std::net::SocketAddr]) {
        // Indices change below: write what is queued first.
        self.flush_backends();
        let old: Vec<Backend> = std::mem::take(&mut self.backends);
        let mut moved: Vec<Option<usize>> = vec![None; old.len()];
        let mut old: Vec<Option<Backend>> = old.into_iter().map(Some).collect();
        let mut kept = Vec::with_capacity(nodes.len());
        for &addr in nodes {
            let found = old
                .iter()
                .position(|b| b.as_ref().is_some_and(|b| b.addr == addr));
            match found.and_then(|i| old[i].take().map(|b| (i, b))) {
                Some((i, backend)) => {
                    moved[i] = Some(kept.len());
                    kept.push(backend);
                }
                None => {
                    let token = Token(self.next_backend_token);
                    self.next_backend_token += 1;
                    kept.push(Backend::new(
                        addr,
                        token,
                        self.now,
                        self.settings.reconnect_min,
                    ));
                }
            }
        }
        self.backends = kept;
        let addrs: Vec<_> = self.backends.iter().map(|b| b.addr).collect();
        let up: Vec<bool> = self.backends.iter().map(|b| b.health.is_up()).collect();
        self.renumber_nodes(&addrs, &up, &moved);
        // Nodes no longer configured: their links close.
        for mut removed in old.into_iter().flatten() {
            if let Some(mut stream) = removed.reset(self.now) {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            tracing::info!(reactor = self.index, node = %removed.addr, "node removed");
        }
    }

    pub(super) fn publish_nodes(&self) {
        let nodes = self
            .backends
            .iter()
            .zip(self.dispatcher.nodes())
            .map(|(b, c)| NodeStatus {
                addr: b.addr.to_string(),
                up: c.up,
                connected: b.is_connected(),
                outstanding: u64::from(c.outstanding),
                requests: b.requests,
            })
            .collect();
        self.metrics.set_nodes(nodes);
    }
}
