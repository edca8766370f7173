//! Gateways registered in etcd (`--etcd`): each replica watches `/tether/gateways/` and feeds
//! what it sees into the same registry that HTTP reports fill.
//!
//! - A PUT is a report (a gateway's record is exactly the body of `POST /v1/report`, put again
//!   every report interval): it is validated and recorded like one, so scoring, staleness,
//!   draining and the list are the same either way.
//! - A DELETE (the gateway revoked its lease when it started draining, or died and its lease
//!   expired) drops the gateway at once, and the list is rebuilt.
//! - A Reset (the first sync, and every re-sync after an etcd failure) records every member
//!   and drops the gateways learned from etcd that are no longer there; gateways that report
//!   over HTTP are left alone.
//!
//! Every replica watching the same cluster therefore tracks the same gateways.
//!
//! A record is authenticated by etcd, not here: with etcd authentication on and one role per
//! gateway (doc/operations.md, Security), only gateway `id`'s credential can write
//! `/tether/gateways/{id}`, so the key names the gateway and the record's own `id` is
//! ignored. This watch connects as `etcd_user`, whose role should only read.

use std::collections::HashSet;
use std::sync::PoisonError;

use tether_discovery::{
    Discovery, DiscoveryError, Endpoints, EtcdDiscovery, Event, Member, Role, Watch,
};

use crate::http::Shared;
use crate::metrics::Rejection;
use crate::report::Report;

/// Starts watching the gateways registered in the etcd cluster at `endpoints`.
pub(crate) fn watch(endpoints: Endpoints, state: Shared) -> Result<Watch, DiscoveryError> {
    let mut fleet = Fleet {
        state,
        known: HashSet::new(),
    };
    EtcdDiscovery::new(endpoints, Role::Gateway).watch(Box::new(move |event| fleet.apply(event)))
}

/// The gateways learned from etcd, and the registry they go into.
struct Fleet {
    state: Shared,
    known: HashSet<String>,
}

impl Fleet {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Reset(members) => {
                let now: HashSet<String> = members.iter().map(|m| m.id.clone()).collect();
                for gone in self.known.difference(&now) {
                    self.remove(gone);
                }
                for member in &members {
                    self.record(member);
                }
                self.known = now;
            }
            Event::Put(member) => {
                self.record(&member);
                self.known.insert(member.id);
            }
            Event::Delete { id, .. } => {
                self.remove(&id);
                self.known.remove(&id);
            }
        }
        self.state.rebuild.notify_one();
    }

    fn record(&self, member: &Member) {
        let s = &self.state;
        let mut report = match Report::parse(&member.value) {
            Ok(report) => report,
            Err(e) => {
                s.metrics.report_rejected(Rejection::of(&e));
                tracing::warn!(id = %member.id, error = %e, "etcd: gateway record refused");
                return;
            }
        };
        // The key names the gateway: one key, one gateway, whatever the record says.
        report.id.clone_from(&member.id);
        match s.accept_report(report, s.clock.now_ms()) {
            Ok(recorded) if recorded.new => {
                tracing::info!(id = %member.id, addr = %member.addr, "new gateway (etcd)");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(id = %member.id, error = %e, "etcd: gateway not tracked"),
        }
    }

    fn remove(&self, id: &str) {
        let removed = self
            .state
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if removed {
            tracing::info!(id, "gateway left (etcd)");
        }
    }
}
