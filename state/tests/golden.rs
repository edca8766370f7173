//! `GET /metrics` is byte-for-byte what it was: the page is rendered from a fixture that
//! gives every counter and gauge its own non-zero value, and compared with the committed page
//! in `tests/golden/metrics.txt`.
//!
//! After a deliberate change of the page, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tether-state --test golden` and review the diff.

use tether_state::metrics::Metrics;

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file under `UPDATE_GOLDEN`.
fn assert_golden(name: &str, actual: &str) {
    tether_daemon::golden::assert_golden(env!("CARGO_MANIFEST_DIR"), name, actual);
}

#[test]
fn metrics_page_is_unchanged() {
    let m = Metrics::default();
    let mut n = 0u64;
    let mut next = || {
        n += 1;
        n * 101
    };
    m.sessions_online.set(next());
    m.sessions_detached.set(next());
    m.pushes_pending.set(next());
    m.links_open.set(next());
    m.gateways.set(next());
    m.logins_ok.add(next());
    m.logins_auth_failed.add(next());
    m.logins_overloaded.add(next());
    m.resumes_ok.add(next());
    m.resumes_failed.add(next());
    m.kicks_timeout.add(next());
    m.kicks_replaced.add(next());
    m.closed.add(next());
    m.vanished.add(next());
    m.sessions_expired.add(next());
    m.heartbeats.add(next());
    m.unknown_route.add(next());
    m.pushes_delivered.add(next());
    m.pushes_queued.add(next());
    m.pushes_offline.add(next());
    m.pushes_full.add(next());
    m.push_sends.add(next());
    m.push_retransmits.add(next());
    m.acks.add(next());
    m.pushes_expired.add(next());
    m.link_errors.add(next());
    m.frames_in.add(next());
    m.journal_bytes.set(next());
    m.journal_generation.set(next());
    m.compactions.add(next());
    m.compaction_failures.inc();
    m.kicks_operator.add(next());
    m.peers_refused.add(next());
    m.hellos_refused.add(next());
    m.api_tokens.set(next());
    m.api_denied_missing.add(next());
    m.api_denied_unknown.add(next());
    m.api_denied_scope.add(next());
    assert_golden("metrics.txt", &m.render("1.2.3"));
    assert_golden("metrics_empty.txt", &Metrics::default().render("0.1.0"));
}
