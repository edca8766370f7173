//! A fixed, in-memory set of members: the default when no etcd is configured (a gateway's
//! `--node` list). [`StaticDiscovery::set`] replaces the set and tells every watcher, which is
//! what a SIGHUP with a new list amounts to, and what tests use to drive a consumer.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::DiscoveryError;
use crate::member::Member;
use crate::{Discovery, Event, Sink, Watch};

/// Members known in advance.
#[derive(Clone, Default)]
pub struct StaticDiscovery {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    members: Vec<Member>,
    sinks: Vec<(u64, Sink)>,
    next: u64,
}

/// The members and how many watches there are (a sink is a closure, it does not print);
/// nothing when the set is locked at that moment, so printing never waits.
impl fmt::Debug for StaticDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("StaticDiscovery");
        if let Ok(inner) = self.inner.try_lock() {
            out.field("members", &inner.members)
                .field("watches", &inner.sinks.len());
        }
        out.finish_non_exhaustive()
    }
}

impl StaticDiscovery {
    pub fn new(members: Vec<Member>) -> StaticDiscovery {
        StaticDiscovery {
            inner: Arc::new(Mutex::new(Inner {
                members,
                ..Inner::default()
            })),
        }
    }

    /// The current set.
    pub fn members(&self) -> Vec<Member> {
        self.lock().members.clone()
    }

    /// Replaces the set; every watcher gets it as a [`Event::Reset`].
    pub fn set(&self, members: Vec<Member>) {
        let mut inner = self.lock();
        inner.members = members;
        let event = Event::Reset(inner.members.clone());
        for (_, sink) in &mut inner.sinks {
            sink(event.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Discovery for StaticDiscovery {
    /// Delivers the set at once, on the caller's thread, then every [`StaticDiscovery::set`].
    fn watch(&self, mut sink: Sink) -> Result<Watch, DiscoveryError> {
        let mut inner = self.lock();
        sink(Event::Reset(inner.members.clone()));
        let id = inner.next;
        inner.next += 1;
        inner.sinks.push((id, sink));
        let weak = Arc::downgrade(&self.inner);
        Ok(Watch::new(move || {
            if let Some(inner) = weak.upgrade() {
                let mut inner = inner.lock().unwrap_or_else(PoisonError::into_inner);
                inner.sinks.retain(|(i, _)| *i != id);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_get_the_set_then_each_change_until_stopped() {
        let d = StaticDiscovery::new(vec![Member::new("a", "h:1")]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let watch = d
            .watch(Box::new(move |e| log.lock().unwrap().push(e)))
            .unwrap();
        d.set(vec![Member::new("b", "h:2")]);
        watch.stop();
        d.set(vec![]);
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                Event::Reset(vec![Member::new("a", "h:1")]),
                Event::Reset(vec![Member::new("b", "h:2")])
            ]
        );
    }
}
