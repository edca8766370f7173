//! Which echo nodes the reactors forward to, from a [`Discovery`]: the `nodes` list
//! ([`StaticDiscovery`], the default), or the nodes registered in etcd under
//! `/tether/nodes/` (`etcd` set; `nodes` is then ignored).
//!
//! Every change goes through the reload path: the reactors get new [`Settings`] whose `nodes`
//! is the discovered set (`Command::Reload`), so nodes added get a link, nodes removed lose
//! theirs and their in-flight requests are re-sent once to another node, and no client
//! connection is touched. A SIGHUP replaces the rest of the settings the same way and keeps
//! the discovered nodes.
//!
//! Static nodes keep the order of the list (balancing sees them in that order); nodes from
//! etcd are ordered by address, so every gateway sees the same order.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::Waker;
use tether_discovery::{
    Discovery, DiscoveryError, Endpoints, EtcdDiscovery, Event, Member, Role, StaticDiscovery,
    Watch,
};

use crate::config::Settings;
use crate::reactor::Command;

/// Where the nodes come from.
enum Source {
    Static(StaticDiscovery),
    Etcd,
}

/// The node set, kept current from a discovery source.
pub(crate) struct Fleet {
    source: Source,
    state: Arc<(Mutex<State>, Condvar)>,
    watch: Option<Watch>,
}

struct State {
    /// The settings last loaded from the configuration (their `nodes` are not used).
    base: Arc<Settings>,
    /// Members by id, in arrival order for a static list.
    members: Vec<Member>,
    /// The node set the reactors were last given.
    nodes: Vec<SocketAddr>,
    /// Etcd members by id (kept sorted), for etcd sources.
    by_id: BTreeMap<String, Member>,
    reactors: Vec<(Sender<Command>, Arc<Waker>)>,
    /// The first Reset arrived.
    synced: bool,
    /// The reactors need the settings again even if the nodes did not change.
    dirty: bool,
    etcd: bool,
}

impl Fleet {
    /// Nodes from the static list in `settings.nodes`.
    pub(crate) fn fixed(settings: Arc<Settings>) -> Result<Fleet, DiscoveryError> {
        let discovery = StaticDiscovery::new(members_of(&settings.nodes));
        Fleet::start(Source::Static(discovery), settings)
    }

    /// Nodes registered in the etcd cluster at `endpoints`.
    pub(crate) fn etcd(
        endpoints: Endpoints,
        settings: Arc<Settings>,
    ) -> Result<Fleet, DiscoveryError> {
        Fleet::start(Source::Etcd, settings).and_then(|mut fleet| {
            let discovery = EtcdDiscovery::new(endpoints, Role::Node);
            fleet.watch = Some(fleet.watch_with(&discovery)?);
            Ok(fleet)
        })
    }

    fn start(source: Source, base: Arc<Settings>) -> Result<Fleet, DiscoveryError> {
        let etcd = matches!(source, Source::Etcd);
        let state = Arc::new((
            Mutex::new(State {
                base,
                members: Vec::new(),
                nodes: Vec::new(),
                by_id: BTreeMap::new(),
                reactors: Vec::new(),
                synced: false,
                dirty: false,
                etcd,
            }),
            Condvar::new(),
        ));
        let mut fleet = Fleet {
            source,
            state,
            watch: None,
        };
        if let Source::Static(discovery) = &fleet.source {
            let discovery = discovery.clone();
            fleet.watch = Some(fleet.watch_with(&discovery)?);
        }
        Ok(fleet)
    }

    fn watch_with(&self, discovery: &dyn Discovery) -> Result<Watch, DiscoveryError> {
        let state = self.state.clone();
        discovery.watch(Box::new(move |event| {
            let (lock, synced) = &*state;
            let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.apply(event);
            synced.notify_all();
        }))
    }

    /// Waits up to `timeout` for the first complete set (etcd answering), so the reactors
    /// start with the nodes instead of none.
    pub(crate) fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.synced {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = cvar
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// The settings the reactors should run with now: the configuration's, with the
    /// discovered nodes.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.lock().effective()
    }

    /// From now on every change is sent to these reactors, which were built with `built_with`;
    /// they get the current settings at once if a change arrived since.
    pub(crate) fn attach(
        &self,
        reactors: Vec<(Sender<Command>, Arc<Waker>)>,
        built_with: &Settings,
    ) {
        let mut s = self.lock();
        s.reactors = reactors;
        s.dirty = *s.effective() != *built_with;
        s.push();
    }

    /// A configuration reload: new settings for everything, the nodes from the source (a
    /// static source takes the new list).
    pub(crate) fn reload(&self, settings: Arc<Settings>) {
        {
            let mut s = self.lock();
            s.base = settings.clone();
            s.dirty = true;
        }
        if let Source::Static(discovery) = &self.source {
            discovery.set(members_of(&settings.nodes));
        }
        self.lock().push();
    }

    /// The nodes the reactors were last given.
    pub(crate) fn nodes(&self) -> Vec<SocketAddr> {
        self.lock().nodes.clone()
    }

    /// Stops watching.
    pub(crate) fn stop(mut self) {
        if let Some(watch) = self.watch.take() {
            watch.stop();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Reset(members) => {
                self.synced = true;
                self.by_id = members.iter().map(|m| (m.id.clone(), m.clone())).collect();
                self.members = members;
            }
            Event::Put(member) => {
                tracing::debug!(id = %member.id, addr = %member.addr, "node registered");
                self.by_id.insert(member.id.clone(), member);
            }
            Event::Delete { id, .. } => {
                self.by_id.remove(&id);
            }
        }
        let nodes = self.discovered();
        if nodes != self.nodes {
            tracing::info!(nodes = ?nodes, "node set changed");
            self.nodes = nodes;
            self.dirty = true;
        }
        self.push();
    }

    /// The node addresses the members give, resolved, without duplicates.
    fn discovered(&self) -> Vec<SocketAddr> {
        let mut nodes = Vec::new();
        let members: Box<dyn Iterator<Item = &Member>> = if self.etcd {
            Box::new(self.by_id.values())
        } else {
            Box::new(self.members.iter())
        };
        for member in members {
            match resolve(&member.addr) {
                Some(addr) if !nodes.contains(&addr) => nodes.push(addr),
                Some(_) => {}
                None => {
                    tracing::warn!(id = %member.id, addr = %member.addr, "cannot resolve a node's address; skipped")
                }
            }
        }
        if self.etcd {
            nodes.sort();
        }
        nodes
    }

    fn effective(&self) -> Arc<Settings> {
        if self.base.nodes == self.nodes {
            return self.base.clone();
        }
        Arc::new(Settings {
            nodes: self.nodes.clone(),
            ..(*self.base).clone()
        })
    }

    /// Sends the settings to every reactor if anything changed since the last time.
    fn push(&mut self) {
        if !self.dirty || self.reactors.is_empty() {
            return;
        }
        self.dirty = false;
        let settings = self.effective();
        for (commands, waker) in &self.reactors {
            let _ = commands.send(Command::Reload(settings.clone()));
            let _ = waker.wake();
        }
    }
}

fn members_of(nodes: &[SocketAddr]) -> Vec<Member> {
    nodes
        .iter()
        .map(|n| Member::new(&n.to_string(), &n.to_string()))
        .collect()
}

fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(addr) = addr.parse() {
        return Some(addr);
    }
    addr.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn reactor() -> (
        crossbeam_channel::Receiver<Command>,
        (Sender<Command>, Arc<Waker>),
        mio::Poll,
    ) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        (rx, (tx, waker), poll)
    }

    fn nodes_sent(rx: &crossbeam_channel::Receiver<Command>) -> Vec<Vec<SocketAddr>> {
        rx.try_iter()
            .filter_map(|c| match c {
                Command::Reload(s) => Some(s.nodes.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_static_list_is_the_configured_nodes_and_follows_reloads() {
        let config = Config::default();
        let fleet = Fleet::fixed(Arc::new(config.settings())).unwrap();
        assert!(fleet.wait_synced(Duration::ZERO));
        assert_eq!(fleet.settings().nodes, config.nodes);
        let (rx, handle, _poll) = reactor();
        fleet.attach(vec![handle], &fleet.settings());
        assert_eq!(
            nodes_sent(&rx),
            Vec::<Vec<SocketAddr>>::new(),
            "nothing changed"
        );

        let fewer = Config {
            nodes: config.nodes[..2].to_vec(),
            ..Config::default()
        };
        fleet.reload(Arc::new(fewer.settings()));
        assert_eq!(nodes_sent(&rx), vec![fewer.nodes.clone()]);
        assert_eq!(fleet.nodes(), fewer.nodes);

        // A reload that changes something else still reaches the reactors.
        let other = Config {
            fall: 9,
            ..fewer.clone()
        };
        fleet.reload(Arc::new(other.settings()));
        assert_eq!(nodes_sent(&rx), vec![fewer.nodes]);
    }

    #[test]
    fn discovered_nodes_replace_the_list_and_changes_reach_the_reactors() {
        let fleet = Fleet::start(Source::Etcd, Arc::new(Config::default().settings())).unwrap();
        let (rx, handle, _poll) = reactor();
        fleet.attach(vec![handle], &Config::default().settings());
        assert_eq!(nodes_sent(&rx), vec![Vec::<SocketAddr>::new()]);
        let apply = |e| {
            let mut s = fleet.lock();
            s.apply(e);
        };
        apply(Event::Reset(vec![
            Member::new("b", "127.0.0.1:2"),
            Member::new("a", "127.0.0.1:1"),
        ]));
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert_eq!(nodes_sent(&rx), vec![vec![a, b]]);
        apply(Event::Put(Member::new("c", "127.0.0.1:3")));
        apply(Event::Put(Member::new("c", "127.0.0.1:3"))); // a refresh: nothing to send
        apply(Event::Delete {
            id: "a".into(),
            previous: None,
        });
        assert_eq!(nodes_sent(&rx), vec![vec![a, b, c], vec![b, c]]);
        assert_eq!(fleet.settings().nodes, vec![b, c]);
    }
}
