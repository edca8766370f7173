//! The daemon's counters and gauges, and their Prometheus page.
//!
//! The event loop is the only writer; the HTTP thread reads. Relaxed atomics suffice: every
//! value is a count that is exact once the loop is quiet.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tether_daemon::prometheus::Text;

/// A counter or gauge written by the loop.
#[derive(Default)]
pub struct Value(AtomicU64);

impl Value {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

#[derive(Default)]
pub struct Metrics {
    pub sessions_online: Value,
    pub sessions_detached: Value,
    pub pushes_pending: Value,
    pub links_open: Value,
    pub gateways: Value,

    pub logins_ok: Value,
    pub logins_auth_failed: Value,
    pub logins_overloaded: Value,
    pub resumes_ok: Value,
    pub resumes_failed: Value,
    pub kicks_timeout: Value,
    pub kicks_replaced: Value,
    pub closed: Value,
    pub vanished: Value,
    pub sessions_expired: Value,
    pub heartbeats: Value,
    pub unknown_route: Value,

    pub pushes_delivered: Value,
    pub pushes_queued: Value,
    pub pushes_offline: Value,
    pub pushes_full: Value,
    pub push_sends: Value,
    pub push_retransmits: Value,
    pub acks: Value,
    pub pushes_expired: Value,

    pub link_errors: Value,
    pub frames_in: Value,
    pub journal_bytes: Value,
    pub journal_generation: Value,
    pub compactions: Value,
    pub compaction_failures: Value,
}

impl Metrics {
    /// The Prometheus text page.
    pub fn render(&self, version: &str) -> String {
        let mut p = Text::new("tether_state_", 6 * 1024);
        p.build_info(version);

        p.header("sessions", "gauge", "Sessions held, by presence.");
        p.sample(
            "sessions",
            &[("state", "online")],
            self.sessions_online.get(),
        );
        p.sample(
            "sessions",
            &[("state", "detached")],
            self.sessions_detached.get(),
        );
        p.single(
            "pushes_pending",
            "gauge",
            "Pushes waiting for an ACK, all sessions.",
            self.pushes_pending.get(),
        );
        p.single(
            "links_open",
            "gauge",
            "Gateway links open.",
            self.links_open.get(),
        );
        p.single(
            "gateways_known",
            "gauge",
            "Gateway ids seen since the journal began.",
            self.gateways.get(),
        );

        p.header("logins_total", "counter", "STATE_LOGIN answers, by result.");
        p.sample("logins_total", &[("result", "ok")], self.logins_ok.get());
        p.sample(
            "logins_total",
            &[("result", "auth_failed")],
            self.logins_auth_failed.get(),
        );
        p.sample(
            "logins_total",
            &[("result", "overloaded")],
            self.logins_overloaded.get(),
        );
        p.header(
            "resumes_total",
            "counter",
            "STATE_RESUME answers, by result.",
        );
        p.sample("resumes_total", &[("result", "ok")], self.resumes_ok.get());
        p.sample(
            "resumes_total",
            &[("result", "failed")],
            self.resumes_failed.get(),
        );
        p.header("kicks_total", "counter", "KICKs sent, by reason.");
        p.sample(
            "kicks_total",
            &[("reason", "timeout")],
            self.kicks_timeout.get(),
        );
        p.sample(
            "kicks_total",
            &[("reason", "replaced")],
            self.kicks_replaced.get(),
        );
        p.header("detached_total", "counter", "Sessions detached, by cause.");
        p.sample("detached_total", &[("cause", "closed")], self.closed.get());
        p.sample(
            "detached_total",
            &[("cause", "vanished")],
            self.vanished.get(),
        );
        p.sample(
            "detached_total",
            &[("cause", "timeout")],
            self.kicks_timeout.get(),
        );
        p.single(
            "sessions_expired_total",
            "counter",
            "Sessions removed when their resume window passed.",
            self.sessions_expired.get(),
        );
        p.single(
            "heartbeats_total",
            "counter",
            "Routes heartbeated (HEARTBEAT entries and announced routes).",
            self.heartbeats.get(),
        );
        p.single(
            "unknown_route_total",
            "counter",
            "Commands for a route with no session, ignored.",
            self.unknown_route.get(),
        );

        p.header(
            "pushes_total",
            "counter",
            "POST /v1/push answers, by status.",
        );
        p.sample(
            "pushes_total",
            &[("status", "delivered")],
            self.pushes_delivered.get(),
        );
        p.sample(
            "pushes_total",
            &[("status", "queued")],
            self.pushes_queued.get(),
        );
        p.sample(
            "pushes_total",
            &[("status", "offline")],
            self.pushes_offline.get(),
        );
        p.sample(
            "pushes_total",
            &[("status", "full")],
            self.pushes_full.get(),
        );
        p.single(
            "push_sends_total",
            "counter",
            "STATE_PUSH frames sent, retransmits included.",
            self.push_sends.get(),
        );
        p.single(
            "push_retransmits_total",
            "counter",
            "STATE_PUSH frames sent again for want of an ACK.",
            self.push_retransmits.get(),
        );
        p.single(
            "acks_total",
            "counter",
            "Pushes acknowledged.",
            self.acks.get(),
        );
        p.single(
            "pushes_expired_total",
            "counter",
            "Pushes dropped unacknowledged: TTL passed or session removed.",
            self.pushes_expired.get(),
        );

        p.single(
            "link_errors_total",
            "counter",
            "Gateway links closed for bad input.",
            self.link_errors.get(),
        );
        p.single(
            "frames_received_total",
            "counter",
            "Frames received from gateways.",
            self.frames_in.get(),
        );
        p.single(
            "journal_bytes",
            "gauge",
            "Bytes in the current journal file.",
            self.journal_bytes.get(),
        );
        p.single(
            "journal_generation",
            "gauge",
            "The journal's generation (bumped by each compaction).",
            self.journal_generation.get(),
        );
        p.single(
            "journal_compactions_total",
            "counter",
            "Snapshots written.",
            self.compactions.get(),
        );
        p.single(
            "journal_compaction_failures_total",
            "counter",
            "Compactions whose snapshot could not be written; nothing was lost, the next one retries.",
            self.compaction_failures.get(),
        );
        p.finish()
    }
}
