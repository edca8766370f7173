//! `GET /metrics` is byte-for-byte what it was: the page is rendered from a fixture that
//! gives every endpoint, status class, histogram bucket and counter its own value, counted
//! from several threads, and compared with the committed page in `tests/golden/metrics.txt`.
//! Uptime is the one value that moves; it is masked.
//!
//! After a deliberate change of the page, regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p tether-ipconfig --test golden` and review the diff.

use std::time::Duration;

use tether_ipconfig::metrics::{Endpoint, GatewayCounts, Metrics, Rejection};

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file under `UPDATE_GOLDEN`.
fn assert_golden(name: &str, actual: &str) {
    tether_daemon::golden::assert_golden(env!("CARGO_MANIFEST_DIR"), name, actual);
}

/// The page with the uptime sample's value masked.
fn masked(m: &Metrics) -> String {
    let text = m.render_prometheus();
    tether_daemon::prometheus::mask_sample(&text, "tether_ipconfig_uptime_seconds")
        .expect("an uptime sample")
}

#[test]
fn metrics_page_is_unchanged() {
    let m = Metrics::new();
    // Each endpoint, each class, and durations on, between and above the bucket bounds.
    let durations = [
        Duration::ZERO,
        Duration::from_nanos(1_000),
        Duration::from_nanos(1_001),
        Duration::from_nanos(7_500),
        Duration::from_micros(250),
        Duration::from_micros(999),
        Duration::from_millis(3),
        Duration::from_millis(100),
        Duration::from_millis(999),
        Duration::from_secs(1),
        Duration::from_secs(3),
    ];
    let statuses = [101, 200, 204, 302, 404, 413, 503, 599];
    std::thread::scope(|s| {
        for (t, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            let m = &m;
            s.spawn(move || {
                for (i, status) in statuses.into_iter().enumerate() {
                    for k in 0..=(t + i) {
                        m.request(endpoint, status, durations[(t + i + k) % durations.len()]);
                    }
                }
            });
        }
    });
    for _ in 0..7 {
        m.report_accepted();
    }
    for (i, r) in Rejection::ALL.into_iter().enumerate() {
        for _ in 0..=i * 2 {
            m.report_rejected(r);
        }
    }
    m.stale_dropped(3);
    m.stale_dropped(2);
    m.rebuilt(
        GatewayCounts {
            live: 4,
            draining: 1,
            full: 2,
            listed: 3,
        },
        1_600_000_000_000,
    );
    m.rebuilt(
        GatewayCounts {
            live: 5,
            draining: 2,
            full: 3,
            listed: 4,
        },
        1_700_000_123_456,
    );
    assert_golden("metrics.txt", &masked(&m));
    assert_golden("metrics_empty.txt", &masked(&Metrics::new()));
}
