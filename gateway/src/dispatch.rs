//! The dispatcher: one reactor's routing of client requests to nodes, without sockets.
//!
//! It owns what routing decides with — the nodes as the balancer sees them (health,
//! outstanding requests, whether a node's queue is full), the balancer — and the in-flight
//! table: every client request from the moment it is forwarded to a node until its reply,
//! its refusal, its re-send or its deadline. The reactor feeds it events (a DATA to forward,
//! a node's RESPONSE or NODE_ERROR, a node going down or losing its link, time passing) and
//! acts on what it returns: write a REQUEST to a node, answer a client. It never touches a
//! socket and never reads a clock, so every fault is a unit test (`gateway/tests/dispatch.rs`).
//!
//! **Ids.** A REQUEST on a node link carries an id the dispatcher assigns (one counter per
//! reactor, never reused), not the client's. A reply completes only the request it answers,
//! and only if it comes from the node that request is at now: a late reply from a node the
//! request has left, or from any node for a client id that was reused since, matches nothing
//! and is dropped. One client may reuse an id while a request with it is outstanding; each
//! request is answered once, with the client's id.
//!
//! **Re-sending.** A request may be re-sent once, to a node other than the one that failed or
//! refused it, when it is safe to run twice: flagged by the client ([`FLAG_RESEND_SAFE`])
//! under [`Retry::Flagged`], or any request under [`Retry::All`]. Only such a request has its
//! payload copied (the copy is what a re-send sends); any other request costs no copy.
//! - A node's link is lost: what may be re-sent goes to another node; the rest is answered
//!   UNAVAILABLE (the node may have run it).
//! - Health checks mark a node down while its link stays open: what may be re-sent goes
//!   elsewhere; the rest stays, since the node may still answer before the deadline.
//! - A node answers NODE_ERROR OVERLOADED (it did not run the request): re-sent elsewhere when
//!   a copy exists, else answered BUSY.
//! - With no other node to take it, the client gets the error of the cause (UNAVAILABLE for
//!   a failure, BUSY for an overload), never NO_BACKEND while a node is up.
//!
//! **Bounds.** A request older than the policy's `request_timeout` is answered
//! REQUEST_TIMEOUT and forgotten, copy and all. A client may have at most
//! `max_client_bytes` of payload at the nodes, the reactor at most `max_copied_bytes` of
//! copies, and a node's unwritten queue at most `max_node_queue` bytes: past any of these the
//! request is answered BUSY and the connection stays; no client can make a shared link reset.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tether_proto::ErrorCode;

use crate::balance::{self, Balance, Balancer, Candidate};
use crate::buffer_pool::BufferPool;

/// Header flag bit a client sets on DATA that is safe to run twice (doc/protocol.md).
pub const FLAG_RESEND_SAFE: u8 = 0x01;

/// Unwritten bytes on one node link past which that node takes no new request until its
/// queue drains (the link is never reset for its size: see the module comment).
pub(crate) const MAX_NODE_QUEUE: usize = 64 << 20;

/// Which requests may be re-sent to another node (`retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retry {
    /// Only DATA with [`FLAG_RESEND_SAFE`] set.
    #[default]
    Flagged,
    /// Every request (each is kept until answered).
    All,
}

impl std::str::FromStr for Retry {
    type Err = String;

    fn from_str(s: &str) -> Result<Retry, String> {
        match s {
            "flagged" => Ok(Retry::Flagged),
            "all" => Ok(Retry::All),
            _ => Err(format!("unknown retry `{s}`; valid values: flagged, all")),
        }
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Retry::Flagged => "flagged",
            Retry::All => "all",
        })
    }
}

/// The limits the dispatcher enforces; replaced whole on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retry: Retry,
    /// A request not answered within this is REQUEST_TIMEOUT.
    pub request_timeout: Duration,
    /// Payload bytes one client may have at the nodes.
    pub max_client_bytes: u64,
    /// Payload copies (kept for re-sends) one reactor may hold.
    pub max_copied_bytes: usize,
    /// Unwritten bytes on one node link past which the node takes no new request.
    pub max_node_queue: usize,
}

/// A client's DATA to forward.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The client connection's route key.
    pub route: u64,
    /// The client's request id (answers carry it).
    pub client_id: u64,
    /// The client's stable key, for ip-hash.
    pub client_key: u64,
    /// The DATA frame's header flags.
    pub flags: u8,
    /// Payload bytes this client already has at the nodes.
    pub client_bytes: u64,
    pub payload: &'a [u8],
    /// When the DATA arrived.
    pub now: Instant,
}

/// Where a forwarded request went: encode REQUEST(`id`, route, payload) on node `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub node: usize,
    pub id: u64,
}

/// A request that was not forwarded: answer the client with this and forget it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub reason: &'static str,
}

/// A request a node answered: deliver the answer to `route` with `client_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub route: u64,
    pub client_id: u64,
    /// When the client's DATA arrived.
    pub since: Instant,
    /// Its payload length, to give back to the client's share.
    pub bytes: u32,
}

/// What the reactor must do after an event that touches several requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write REQUEST(`id`, `route`, [`Dispatcher::payload`]`(id)`) to `node`.
    Resend { node: usize, id: u64, route: u64 },
    /// Answer the client's request with this error; the request is over.
    Fail {
        route: u64,
        client_id: u64,
        bytes: u32,
        code: ErrorCode,
        reason: &'static str,
    },
}

/// Why requests leave a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its link closed or failed: nothing more will come from it.
    LinkLost,
    /// Health checks marked it down; its link is open and it may still answer.
    Down,
}

/// A reply that matched no request at its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmatched;

/// One request at a node.
#[derive(Debug)]
struct Entry {
    since: Instant,
    route: u64,
    client_id: u64,
    /// The payload, kept only when the request may be re-sent.
    copy: Option<Vec<u8>>,
    bytes: u32,
    /// The node it is at.
    node: u32,
    /// Re-sent once already: the next failure is final.
    resent: bool,
}

/// One reactor's routing state.
pub struct Dispatcher {
    nodes: Vec<Candidate>,
    /// Per node: its unwritten queue is past `max_node_queue`.
    full: Vec<bool>,
    balance: Balance,
    balancer: Box<dyn Balancer>,
    seed: u64,
    table: FxHashMap<u64, Entry>,
    next_id: u64,
    copies: BufferPool,
    copied_bytes: usize,
    policy: Policy,
    next_sweep: Option<Instant>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("nodes", &self.nodes)
            .field("inflight", &self.table.len())
            .field("copied_bytes", &self.copied_bytes)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher with no nodes; `seed` seeds the balancer's randomness.
    pub fn new(policy: Policy, balance: Balance, seed: u64) -> Dispatcher {
        Dispatcher {
            nodes: Vec::new(),
            full: Vec::new(),
            balance,
            balancer: balance::new(balance, seed),
            seed,
            table: FxHashMap::default(),
            next_id: 1,
            // At most 4,096 × 4 KiB of copies kept after a burst.
            copies: BufferPool::new(4096, 4 * 1024),
            copied_bytes: 0,
            policy,
            next_sweep: None,
        }
    }

    /// The nodes, as the balancer sees them.
    pub fn nodes(&self) -> &[Candidate] {
        &self.nodes
    }

    /// Requests at the nodes.
    pub fn inflight(&self) -> usize {
        self.table.len()
    }

    /// Bytes of payload copies held for re-sends.
    pub fn copied_bytes(&self) -> usize {
        self.copied_bytes
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Gives back what a burst left (the reactor calls this about once a second): payload
    /// copies unused since the last trim, and the in-flight table's room when a quarter of it
    /// or less is used. Returns the bytes freed.
    pub fn trim(&mut self) -> usize {
        let mut freed = self.copies.trim();
        let capacity = self.table.capacity();
        if capacity > 64 && self.table.len() * 4 <= capacity {
            self.table.shrink_to(self.table.len() * 2);
            let slot = size_of::<(u64, Entry)>() + 1;
            freed += capacity.saturating_sub(self.table.capacity()) * slot;
        }
        freed
    }

    /// New limits (reload); a shorter timeout applies to requests already in flight.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.next_sweep = None;
    }

    /// A new balancing algorithm (reload); the same one keeps its state.
    pub(crate) fn set_balance(&mut self, balance: Balance) {
        if balance != self.balance {
            self.balance = balance;
            self.balancer = balance::new(balance, self.seed);
            self.balancer.nodes_changed(&self.nodes);
        }
    }

    /// A new node list (reload). `moved[old]` is the new index of each old node, or `None`
    /// for a node removed, whose requests leave as if its link were lost (into `out`).
    /// `up[new]` is each new node's health.
    pub fn set_nodes(
        &mut self,
        addrs: &[SocketAddr],
        up: &[bool],
        moved: &[Option<usize>],
        clients: &impl Fn(u64) -> Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let removed: Vec<usize> = (0..self.nodes.len())
            .filter(|&old| moved.get(old).copied().flatten().is_none())
            .collect();
        // Requests of removed nodes go first, while the old indices still hold; nowhere to
        // go but to a node that stays.
        for &node in &removed {
            self.nodes[node].up = false;
        }
        for &node in &removed {
            self.evacuate(node, Cause::LinkLost, clients, out);
        }
        // Renumber what stays. Actions above name old indices: map them too.
        let renumber = |old: usize| moved.get(old).copied().flatten();
        for entry in self.table.values_mut() {
            if let Some(new) = renumber(entry.node as usize) {
                entry.node = new as u32;
            }
        }
        for action in out.iter_mut() {
            if let Action::Resend { node, .. } = action {
                if let Some(new) = renumber(*node) {
                    *node = new;
                }
            }
        }
        self.nodes = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| Candidate {
                addr,
                up: up.get(i).copied().unwrap_or(false),
                outstanding: 0,
            })
            .collect();
        self.full = vec![false; self.nodes.len()];
        for entry in self.table.values() {
            if let Some(n) = self.nodes.get_mut(entry.node as usize) {
                n.outstanding += 1;
            }
        }
        self.balancer.nodes_changed(&self.nodes);
    }

    /// Health says `node` is up or down. Going down, the requests that may be re-sent leave
    /// it (into `out`); the others wait for its answer or their deadline.
    pub fn set_up(
        &mut self,
        node: usize,
        up: bool,
        clients: &impl Fn(u64) -> Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        n.up = up;
        if !up {
            self.evacuate(node, Cause::Down, clients, out);
        }
    }

    /// The reactor's count of unwritten bytes on `node`'s link, after a flush.
    pub fn set_queued(&mut self, node: usize, queued: usize) {
        if let Some(full) = self.full.get_mut(node) {
            *full = queued > self.policy.max_node_queue;
        }
    }

    /// A client's DATA: picks a node and records the request there.
    pub fn forward(&mut self, req: &Request<'_>) -> Result<Sent, Refused> {
        let bytes = req.payload.len();
        if req.client_bytes.saturating_add(bytes as u64) > self.policy.max_client_bytes {
            return Err(Refused {
                code: ErrorCode::Busy,
                reason: "too many request bytes of this connection at the nodes",
            });
        }
        let resendable = match self.policy.retry {
            Retry::All => true,
            Retry::Flagged => req.flags & FLAG_RESEND_SAFE != 0,
        };
        if resendable && self.copied_bytes + bytes > self.policy.max_copied_bytes {
            return Err(Refused {
                code: ErrorCode::Busy,
                reason: "too many re-sendable request bytes in flight",
            });
        }
        let Some(node) = self.pick(req.client_key, None) else {
            return Err(if self.nodes.iter().any(|n| n.up) {
                Refused {
                    code: ErrorCode::Busy,
                    reason: "every node's queue is full",
                }
            } else {
                Refused {
                    code: ErrorCode::NoBackend,
                    reason: "no healthy node",
                }
            });
        };
        let copy = resendable.then(|| {
            let mut copy = self.copies.take();
            copy.extend_from_slice(req.payload);
            self.copied_bytes += bytes;
            copy
        });
        let id = self.next_id;
        self.next_id += 1;
        self.table.insert(
            id,
            Entry {
                since: req.now,
                route: req.route,
                client_id: req.client_id,
                copy,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                node: node as u32,
                resent: false,
            },
        );
        self.nodes[node].outstanding += 1;
        Ok(Sent { node, id })
    }

    /// The payload of a request to re-send (empty if it is gone).
    pub fn payload(&self, id: u64) -> &[u8] {
        self.table
            .get(&id)
            .and_then(|e| e.copy.as_deref())
            .unwrap_or(&[])
    }

    /// `node` answered request `id` (RESPONSE, or a NODE_ERROR that ends it) for `route`:
    /// the request is over if it is at that node now.
    pub fn complete(&mut self, node: usize, id: u64, route: u64) -> Result<Done, Unmatched> {
        let mut entry = self.take_at(node, id, route)?;
        self.drop_copy(&mut entry);
        Ok(Done {
            route: entry.route,
            client_id: entry.client_id,
            since: entry.since,
            bytes: entry.bytes,
        })
    }

    /// `node` answered NODE_ERROR OVERLOADED for request `id`: it did not run it. Re-sent to
    /// another node when it can be, else answered BUSY (into `out`).
    pub fn overloaded(
        &mut self,
        node: usize,
        id: u64,
        route: u64,
        clients: &impl Fn(u64) -> Option<u64>,
        out: &mut Vec<Action>,
    ) -> Result<(), Unmatched> {
        let entry = self.take_at(node, id, route)?;
        self.leave(id, entry, node, Failure::Overloaded, clients, out);
        Ok(())
    }

    /// Requests leave `node` for `cause` (into `out`).
    ///
    /// `clients` gives the balancing key of a live client connection by route, or `None` for
    /// one that has closed: its requests are dropped, with nothing to answer.
    pub fn evacuate(
        &mut self,
        node: usize,
        cause: Cause,
        clients: &impl Fn(u64) -> Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let ids: Vec<u64> = self
            .table
            .iter()
            .filter(|(_, e)| e.node as usize == node)
            .filter(|(_, e)| cause == Cause::LinkLost || (e.copy.is_some() && !e.resent))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let Some(entry) = self.table.remove(&id) else {
                continue;
            };
            if let Some(n) = self.nodes.get_mut(node) {
                n.outstanding = n.outstanding.saturating_sub(1);
            }
            let failure = match cause {
                Cause::LinkLost => Failure::LinkLost,
                Cause::Down => Failure::Down,
            };
            self.leave(id, entry, node, failure, clients, out);
        }
    }

    /// Requests past their deadline are answered REQUEST_TIMEOUT (into `out`). Looks at the
    /// table at most every tenth of the timeout (at least every second, at most every 50 ms
    /// of `now`), so a deadline fires up to that late.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        let timeout = self.policy.request_timeout;
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        let every = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        self.next_sweep = Some(now + every);
        let Dispatcher {
            table,
            nodes,
            copies,
            copied_bytes,
            ..
        } = self;
        table.retain(|_, e| {
            if now.saturating_duration_since(e.since) < timeout {
                return true;
            }
            if let Some(n) = nodes.get_mut(e.node as usize) {
                n.outstanding = n.outstanding.saturating_sub(1);
            }
            if let Some(copy) = e.copy.take() {
                *copied_bytes -= copy.len();
                copies.give(copy);
            }
            out.push(Action::Fail {
                route: e.route,
                client_id: e.client_id,
                bytes: e.bytes,
                code: ErrorCode::RequestTimeout,
                reason: "no reply from the nodes within request_timeout_ms",
            });
            false
        });
    }

    /// Removes request `id` if it is at `node` for `route`.
    fn take_at(&mut self, node: usize, id: u64, route: u64) -> Result<Entry, Unmatched> {
        match self.table.get(&id) {
            Some(e) if e.node as usize == node && e.route == route => {}
            _ => return Err(Unmatched),
        }
        let entry = self.table.remove(&id).ok_or(Unmatched)?;
        if let Some(n) = self.nodes.get_mut(node) {
            n.outstanding = n.outstanding.saturating_sub(1);
        }
        Ok(entry)
    }

    /// A request removed from `from` for `failure`: re-sent elsewhere, or failed.
    fn leave(
        &mut self,
        id: u64,
        mut entry: Entry,
        from: usize,
        failure: Failure,
        clients: &impl Fn(u64) -> Option<u64>,
        out: &mut Vec<Action>,
    ) {
        let Some(client_key) = clients(entry.route) else {
            // Its connection is gone: nobody to answer.
            self.drop_copy(&mut entry);
            return;
        };
        if entry.copy.is_some() && !entry.resent {
            if let Some(to) = self.pick(client_key, Some(from)) {
                entry.resent = true;
                entry.node = to as u32;
                self.nodes[to].outstanding += 1;
                let route = entry.route;
                self.table.insert(id, entry);
                out.push(Action::Resend {
                    node: to,
                    id,
                    route,
                });
                return;
            }
        }
        if failure == Failure::Down {
            // Health only: the node may still answer. Back where it was.
            self.nodes[from].outstanding += 1;
            self.table.insert(id, entry);
            return;
        }
        let (code, reason) = match failure {
            Failure::Overloaded => (ErrorCode::Busy, "the node was overloaded"),
            _ if entry.resent => (ErrorCode::Unavailable, "request failed on two nodes"),
            _ if entry.copy.is_none() => (
                ErrorCode::Unavailable,
                "node failed; the request was not flagged safe to re-send",
            ),
            _ => (
                ErrorCode::Unavailable,
                "node failed and no other node could take it",
            ),
        };
        self.drop_copy(&mut entry);
        out.push(Action::Fail {
            route: entry.route,
            client_id: entry.client_id,
            bytes: entry.bytes,
            code,
            reason,
        });
    }

    fn drop_copy(&mut self, entry: &mut Entry) {
        if let Some(copy) = entry.copy.take() {
            self.copied_bytes -= copy.len();
            self.copies.give(copy);
        }
    }

    /// The balancer's pick among up nodes whose queue is not full, never `except`.
    fn pick(&mut self, client_key: u64, except: Option<usize>) -> Option<usize> {
        let any_full = self.full.iter().any(|&f| f);
        if except.is_none() && !any_full {
            return self.balancer.pick(&self.nodes, client_key);
        }
        // Hide the excluded and the full nodes from the balancer for this one pick.
        let saved: Vec<bool> = self.nodes.iter().map(|n| n.up).collect();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if Some(i) == except || self.full.get(i).copied().unwrap_or(false) {
                n.up = false;
            }
        }
        let pick = self.balancer.pick(&self.nodes, client_key);
        for (n, up) in self.nodes.iter_mut().zip(saved) {
            n.up = up;
        }
        pick
    }
}

/// What made a request leave its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    LinkLost,
    Down,
    Overloaded,
}
