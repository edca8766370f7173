//! `/metrics` and `/stats` are byte-for-byte what they were: both pages are rendered from a
//! fixture that gives every counter, label and histogram bucket its own non-zero value, and
//! compared with the committed pages in `tests/golden/`. Uptime is the one value that moves;
//! it is masked.
//!
//! After a deliberate change of the pages, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tether-gateway --test golden` and review the diff.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tether_gateway::metrics::{
    render_prometheus, render_stats, BackendDrop, CloseReason, GatewayInfo, Metrics, NodeStatus,
    SessionEvent,
};
use tether_proto::ErrorCode;

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file under `UPDATE_GOLDEN`.
fn assert_golden(name: &str, actual: &str) {
    tether_daemon::golden::assert_golden(env!("CARGO_MANIFEST_DIR"), name, actual);
}

fn node(addr: &str, up: bool, connected: bool, outstanding: u64, requests: u64) -> NodeStatus {
    NodeStatus {
        addr: addr.into(),
        up,
        connected,
        outstanding,
        requests,
    }
}

/// Two reactors in which every counter has a value of its own, and process-wide facts.
fn fixture() -> (Vec<Arc<Metrics>>, GatewayInfo) {
    let a = Arc::new(Metrics::new());
    let b = Arc::new(Metrics::new());
    for (k, m) in [&a, &b].into_iter().enumerate() {
        let k = k as u64 + 1; // 1 for reactor 0, 2 for reactor 1
        m.accepted.add(1000 * k);
        for (i, r) in CloseReason::ALL.into_iter().enumerate() {
            for _ in 0..(i as u64 + 1) * k {
                m.close(r);
            }
        }
        m.frames_in.add(3001 * k);
        m.frames_out.add(3002 * k);
        m.bytes_in.add(400_003 * k);
        m.bytes_out.add(400_004 * k);
        m.backend_requests.add(2005 * k);
        m.backend_responses.add(2006 * k);
        m.retries.add(7 * k);
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            for _ in 0..(i as u64 + 2) * k {
                m.error(code);
            }
        }
        for (i, d) in BackendDrop::ALL.into_iter().enumerate() {
            for _ in 0..(i as u64 + 3) * k {
                m.drop_backend(d);
            }
        }
        for (i, e) in SessionEvent::ALL.into_iter().enumerate() {
            for _ in 0..(i as u64 + 4) * k {
                m.session(e);
            }
        }
        m.ticks.add(99);
    }
    a.state_link_up.add(1);
    // Every bucket, its bounds inclusive, and above the largest.
    for us in [
        0, 50, 51, 100, 250, 499, 1_000, 2_500, 4_999, 10_000, 25_000,
    ] {
        a.latency.record_us(us);
    }
    for us in [
        50_000, 100_000, 250_001, 500_000, 1_000_000, 2_500_000, 5_000_000, 5_000_001,
    ] {
        b.latency.record_us(us);
    }
    b.latency.record_us(123_456_789);
    a.set_nodes(vec![
        node("127.0.0.1:8890", true, true, 3, 41),
        node("127.0.0.1:8891", true, true, 0, 17),
        node("weird\"host\\\n:1", false, false, 0, 0),
    ]);
    b.set_nodes(vec![
        node("127.0.0.1:8891", false, true, 2, 9),
        node("127.0.0.1:8890", true, false, 5, 30),
    ]);
    let info = GatewayInfo::new(
        "1.2.3",
        vec!["0.0.0.0:8900".into(), "[::]:8900".into()],
        2,
        50_000,
    );
    info.rejected_at_accept.add_shared(11);
    info.shed_out_of_descriptors.add_shared(13);
    info.draining.store(true, Relaxed);
    (vec![a, b], info)
}

/// The text page with the uptime sample's value masked.
fn masked_metrics(reactors: &[Arc<Metrics>], info: &GatewayInfo) -> String {
    let text = render_prometheus(reactors, info);
    tether_daemon::prometheus::mask_sample(&text, "tether_gateway_uptime_seconds")
        .expect("an uptime sample")
}

#[test]
fn metrics_page_is_unchanged() {
    let (reactors, info) = fixture();
    assert_golden("metrics.txt", &masked_metrics(&reactors, &info));
    let empty = [Arc::new(Metrics::new())];
    let info = GatewayInfo::new("1.2.3", vec![], 1, 10);
    assert_golden("metrics_empty.txt", &masked_metrics(&empty, &info));
}

/// Compares `/stats` with `tests/golden/<name>`, uptime masked, pretty-printed (keys sorted,
/// as the page sends them).
fn assert_golden_stats(name: &str, mut stats: serde_json::Value) {
    assert!(stats["uptime_s"].as_f64().is_some_and(|s| s >= 0.0));
    stats["uptime_s"] = "<masked>".into();
    let pretty = serde_json::to_string_pretty(&stats).expect("serialize");
    assert_golden(name, &format!("{pretty}\n"));
}

#[test]
fn stats_page_is_unchanged() {
    let (reactors, info) = fixture();
    assert_golden_stats("stats.json", render_stats(&reactors, &info));
    let empty = [Arc::new(Metrics::new())];
    assert_golden_stats("stats_empty.json", render_stats(&empty, &info));
}
