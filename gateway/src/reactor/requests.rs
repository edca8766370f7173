//! The reactor's glue to its [`Dispatcher`](crate::dispatch::Dispatcher): a client's DATA
//! becomes a REQUEST on the node it picks, a node's answer goes back to the client it
//! names, and whatever else the dispatcher decides (re-send, refuse, time out) is acted on
//! here. Where a request goes and what becomes of it is the dispatcher's business; writing
//! frames and counting is this file's.

use std::net::SocketAddr;

use slab::Slab;

use tether_proto::{encode, ErrorCode, Frame, Kind};

use super::Reactor;
use crate::client::{Client, Marks};
use crate::dispatch::{Action, Cause, Request};
use crate::metrics::BackendDrop;
use crate::route::Route;

impl Reactor {
    /// DATA → REQUEST to the node the dispatcher picks, or the refusal it gives.
    pub(super) fn forward(&mut self, slot: usize, frame: &Frame<'_>) {
        let Some(client) = self.clients.get(slot) else {
            return;
        };
        let Some(route) = Route::new(self.index, client.generation, slot).map(Route::pack) else {
            return;
        };
        let request = Request {
            route,
            client_id: frame.id,
            client_key: client.key,
            flags: frame.flags,
            client_bytes: u64::from(client.inflight_bytes),
            payload: frame.body,
            now: self.now,
        };
        match self.dispatcher.forward(&request) {
            Ok(sent) => {
                self.write_request(sent.node, sent.id, route, frame.body);
                if let Some(client) = self.clients.get_mut(slot) {
                    client.inflight += 1;
                    client.inflight_bytes = client
                        .inflight_bytes
                        .saturating_add(u32::try_from(frame.body.len()).unwrap_or(u32::MAX));
                }
            }
            Err(refused) => self.client_error(slot, frame.id, refused.code, refused.reason),
        }
    }

    /// Queues REQUEST(`id`, `route`, `payload`) on `node`.
    fn write_request(&mut self, node: usize, id: u64, route: u64, payload: &[u8]) {
        let backend = &mut self.backends[node];
        encode::routed(&mut backend.out, Kind::Request, id, route, payload);
        backend.requests += 1;
        self.metrics.backend_requests.inc();
        self.mark_backend(node);
    }

    /// `node` answered request `id`: its payload (RESPONSE) or an error reason (NODE_ERROR
    /// other than OVERLOADED), delivered if the request is at that node.
    pub(super) fn answered(
        &mut self,
        node: usize,
        id: u64,
        route: u64,
        reply: Result<&[u8], &str>,
    ) {
        let Ok(done) = self.dispatcher.complete(node, id, route) else {
            // Re-sent elsewhere, timed out, or never ours.
            self.metrics.drop_backend(BackendDrop::UnknownRoute);
            return;
        };
        self.metrics.backend_responses.inc();
        let Some(slot) = self.give_back(done.route, done.bytes) else {
            // Its connection closed while the node worked on it.
            self.metrics.drop_backend(BackendDrop::StaleRoute);
            return;
        };
        match reply {
            Ok(payload) => {
                self.reply(slot, Kind::Data, done.client_id, payload);
                let us = self.now.saturating_duration_since(done.since).as_micros();
                self.metrics.latency.record_us(us as u64);
            }
            Err(reason) => {
                self.client_error(slot, done.client_id, ErrorCode::Unavailable, reason);
            }
        }
    }

    /// NODE_ERROR OVERLOADED for request `id`: re-sent elsewhere or answered BUSY.
    pub(super) fn overloaded(&mut self, node: usize, id: u64, route: u64) {
        let mut actions = std::mem::take(&mut self.actions);
        {
            let clients = client_keys(&self.clients, self.index);
            let matched = self
                .dispatcher
                .overloaded(node, id, route, &clients, &mut actions);
            if matched.is_err() {
                self.metrics.drop_backend(BackendDrop::UnknownRoute);
            } else {
                self.metrics.backend_responses.inc();
            }
        }
        self.act(actions);
    }

    /// Requests leave `node` for `cause`.
    pub(super) fn evacuate(&mut self, node: usize, cause: Cause) {
        let mut actions = std::mem::take(&mut self.actions);
        {
            let clients = client_keys(&self.clients, self.index);
            self.dispatcher
                .evacuate(node, cause, &clients, &mut actions);
        }
        self.act(actions);
    }

    /// Health turned `node` up or down.
    pub(super) fn node_health(&mut self, node: usize, up: bool) {
        let mut actions = std::mem::take(&mut self.actions);
        {
            let clients = client_keys(&self.clients, self.index);
            self.dispatcher.set_up(node, up, &clients, &mut actions);
        }
        self.act(actions);
    }

    /// The node list changed (reload): `moved[old]` is each old node's new index.
    pub(super) fn renumber_nodes(
        &mut self,
        addrs: &[SocketAddr],
        up: &[bool],
        moved: &[Option<usize>],
    ) {
        let mut actions = std::mem::take(&mut self.actions);
        {
            let clients = client_keys(&self.clients, self.index);
            self.dispatcher
                .set_nodes(addrs, up, moved, &clients, &mut actions);
        }
        self.act(actions);
    }

    /// Requests past `request_timeout_ms` are answered REQUEST_TIMEOUT.
    pub(super) fn expire_requests(&mut self) {
        let mut actions = std::mem::take(&mut self.actions);
        self.dispatcher.expire(self.now, &mut actions);
        self.act(actions);
    }

    /// Does what the dispatcher asked, then keeps the vector for next time.
    fn act(&mut self, mut actions: Vec<Action>) {
        for action in actions.drain(..) {
            match action {
                Action::Resend { node, id, route } => {
                    self.metrics.retries.inc();
                    let backend = &mut self.backends[node];
                    encode::routed(
                        &mut backend.out,
                        Kind::Request,
                        id,
                        route,
                        self.dispatcher.payload(id),
                    );
                    backend.requests += 1;
                    self.metrics.backend_requests.inc();
                    self.mark_backend(node);
                }
                Action::Fail {
                    route,
                    client_id,
                    bytes,
                    code,
                    reason,
                } => {
                    if let Some(slot) = self.give_back(route, bytes) {
                        self.client_error(slot, client_id, code, reason);
                    }
                }
            }
        }
        if self.actions.is_empty() {
            self.actions = actions;
        }
    }

    /// A request of `route` is over: the client's counts go down (and a paused client is
    /// read again once half its requests are answered). The client's slot, if it is still
    /// the same connection.
    fn give_back(&mut self, route: u64, bytes: u32) -> Option<usize> {
        let r = Route::unpack(route);
        if usize::from(r.reactor) != self.index {
            return None;
        }
        let slot = r.slot as usize;
        let max_inflight = self.settings.max_inflight;
        let client = self
            .clients
            .get_mut(slot)
            .filter(|c| c.generation == r.generation)?;
        client.inflight = client.inflight.saturating_sub(1);
        client.inflight_bytes = client.inflight_bytes.saturating_sub(bytes);
        if client.marks.has(Marks::PAUSED) && client.inflight <= max_inflight / 2 {
            self.resume.push(slot);
        }
        Some(slot)
    }
}

/// The balancing key of the live client a route names, for re-sends (a closed client's
/// requests are dropped instead). Borrows only the slab, so the dispatcher can be used
/// beside it.
fn client_keys(clients: &Slab<Client>, index: usize) -> impl Fn(u64) -> Option<u64> + '_ {
    move |route| {
        let r = Route::unpack(route);
        if usize::from(r.reactor) != index {
            return None;
        }
        clients
            .get(r.slot as usize)
            .filter(|c| c.generation == r.generation)
            .map(|c| c.key)
    }
}
