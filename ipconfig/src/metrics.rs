//! The service's counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Request counters are bumped by every worker thread, so they are sharded: each thread
//! picks a shard (cache-line aligned) the first time it counts, and a scrape sums the shards.
//! The gateway gauges are written by the rebuild task only.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tether_ipconfig_http_requests_total` | counter | `endpoint` (ip_list, report, healthz, metrics, other), `class` (1xx…5xx) |
//! | `tether_ipconfig_http_request_duration_seconds` | histogram | `endpoint`; explicit buckets, 1 µs … 1 s |
//! | `tether_ipconfig_reports_accepted_total` | counter | |
//! | `tether_ipconfig_reports_rejected_total` | counter | `reason` (malformed, invalid, too_large, full) |
//! | `tether_ipconfig_gateways` | gauge | `state` (live, draining, full) |
//! | `tether_ipconfig_gateways_stale_dropped_total` | counter | |
//! | `tether_ipconfig_list_entries` | gauge | entries an `/ip_list` answer has now |
//! | `tether_ipconfig_snapshot_rebuilds_total` | counter | |
//! | `tether_ipconfig_snapshot_generated_at_seconds` | gauge | Unix time of the current list |
//! | `tether_ipconfig_uptime_seconds`, `tether_ipconfig_build_info` | gauge | `version` |
//!
//! Request duration is measured inside the handler: from the handler's start (for a report,
//! before its body is read) to the response being ready, not counting HTTP parsing and
//! writing in hyper.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Every metric name starts with this.
pub const PREFIX: &str = "tether_ipconfig_";

/// Which route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    IpList,
    Report,
    Healthz,
    Metrics,
    /// 404s and 405s.
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::IpList,
        Endpoint::Report,
        Endpoint::Healthz,
        Endpoint::Metrics,
        Endpoint::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::IpList => "ip_list",
            Endpoint::Report => "report",
            Endpoint::Healthz => "healthz",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JSON object (400).
    Malformed,
    /// A field missing, of the wrong type or out of range (400).
    Invalid,
    /// Body over `max_report_bytes` (413).
    TooLarge,
    /// `max_gateways` reached (503).
    Full,
}

impl Rejection {
    pub const ALL: [Rejection; 4] = [
        Rejection::Malformed,
        Rejection::Invalid,
        Rejection::TooLarge,
        Rejection::Full,
    ];

    /// A report that does not parse: malformed JSON, or a bad field.
    pub fn of(e: &crate::report::ReportError) -> Rejection {
        if e.is_malformed() {
            Rejection::Malformed
        } else {
            Rejection::Invalid
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::Invalid => "invalid",
            Rejection::TooLarge => "too_large",
            Rejection::Full => "full",
        }
    }
}

/// Upper bounds (seconds) of the request-duration buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS_S: [f64; 19] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
];

/// [`LATENCY_BUCKETS_S`] in nanoseconds, which is what is recorded.
const LATENCY_BUCKETS_NS: [u64; 19] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

const SLOTS: usize = LATENCY_BUCKETS_NS.len() + 1;
const ENDPOINTS: usize = Endpoint::ALL.len();
const CLASSES: usize = 5;
const SHARDS: usize = 16;

/// One thread's share of the request counters.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; CLASSES]; ENDPOINTS],
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    latency: [[AtomicU64; SLOTS]; ENDPOINTS],
    latency_sum_ns: [AtomicU64; ENDPOINTS],
    reports_accepted: AtomicU64,
    reports_rejected: [AtomicU64; Rejection::ALL.len()],
}

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The shard of the calling thread.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT.fetch_add(1, Relaxed) % SHARDS;
            s.set(Some(i));
            i
        }
    })
}

/// Every counter of one service.
pub struct Metrics {
    shards: Box<[Shard]>,
    started: Instant,
    version: &'static str,
    live: AtomicU64,
    draining: AtomicU64,
    full: AtomicU64,
    stale_dropped: AtomicU64,
    list_entries: AtomicU64,
    rebuilds: AtomicU64,
    generated_at_ms: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Gateway counts after a rebuild.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounts {
    pub live: usize,
    pub draining: usize,
    pub full: usize,
    pub listed: usize,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            live: AtomicU64::new(0),
            draining: AtomicU64::new(0),
            full: AtomicU64::new(0),
            stale_dropped: AtomicU64::new(0),
            list_entries: AtomicU64::new(0),
            rebuilds: AtomicU64::new(0),
            generated_at_ms: AtomicU64::new(0),
        }
    }

    fn shard(&self) -> &Shard {
        &self.shards[shard_index() % self.shards.len()]
    }

    /// Counts one request on `endpoint` answered `status` after `elapsed`.
    #[inline]
    pub fn request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let shard = self.shard();
        let e = endpoint as usize;
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        shard.requests[e][class].fetch_add(1, Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_NS.partition_point(|&bound| bound < ns);
        shard.latency[e][slot].fetch_add(1, Relaxed);
        shard.latency_sum_ns[e].fetch_add(ns, Relaxed);
    }

    pub fn report_accepted(&self) {
        self.shard().reports_accepted.fetch_add(1, Relaxed);
    }

    pub fn report_rejected(&self, why: Rejection) {
        self.shard().reports_rejected[why as usize].fetch_add(1, Relaxed);
    }

    /// Gateways dropped for going stale.
    pub fn stale_dropped(&self, n: usize) {
        self.stale_dropped.fetch_add(n as u64, Relaxed);
    }

    /// Records a rebuild's counts.
    pub fn rebuilt(&self, counts: GatewayCounts, generated_at_ms: u64) {
        self.live.store(counts.live as u64, Relaxed);
        self.draining.store(counts.draining as u64, Relaxed);
        self.full.store(counts.full as u64, Relaxed);
        self.list_entries.store(counts.listed as u64, Relaxed);
        self.generated_at_ms.store(generated_at_ms, Relaxed);
        self.rebuilds.fetch_add(1, Relaxed);
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(f(s).load(Relaxed)))
    }

    /// Requests on `endpoint` answered with a status of `class` (2 for 2xx…).
    pub fn requests(&self, endpoint: Endpoint, class: u16) -> u64 {
        let c = usize::from(class).clamp(1, CLASSES) - 1;
        self.sum(|s| &s.requests[endpoint as usize][c])
    }

    pub fn reports_accepted(&self) -> u64 {
        self.sum(|s| &s.reports_accepted)
    }

    pub fn reports_rejected(&self, why: Rejection) -> u64 {
        self.sum(|s| &s.reports_rejected[why as usize])
    }

    pub fn stale_dropped_total(&self) -> u64 {
        self.stale_dropped.load(Relaxed)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut p = tether_daemon::prometheus::Text::new(PREFIX, 16 * 1024);
        p.build_info(self.version);
        p.single(
            "uptime_seconds",
            "gauge",
            "Seconds since the service started.",
            self.started.elapsed().as_secs_f64(),
        );

        p.header(
            "http_requests_total",
            "counter",
            "HTTP requests answered, by endpoint and status class.",
        );
        for e in Endpoint::ALL {
            for class in 1..=CLASSES as u16 {
                let label = format!("{class}xx");
                p.sample(
                    "http_requests_total",
                    &[("endpoint", e.label()), ("class", &label)],
                    self.requests(e, class),
                );
            }
        }

        p.header(
            "http_request_duration_seconds",
            "histogram",
            "Time from a handler's start to its response being ready, by endpoint.",
        );
        for e in Endpoint::ALL {
            let i = e as usize;
            let mut cumulative = 0u64;
            for (slot, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                cumulative = cumulative.wrapping_add(self.sum(|s| &s.latency[i][slot]));
                p.sample(
                    "http_request_duration_seconds_bucket",
                    &[("endpoint", e.label()), ("le", &bound.to_string())],
                    cumulative,
                );
            }
            cumulative = cumulative.wrapping_add(self.sum(|s| &s.latency[i][SLOTS - 1]));
            p.sample(
                "http_request_duration_seconds_bucket",
                &[("endpoint", e.label()), ("le", "+Inf")],
                cumulative,
            );
            let sum_ns = self.sum(|s| &s.latency_sum_ns[i]);
            p.sample(
                "http_request_duration_seconds_sum",
                &[("endpoint", e.label())],
                sum_ns as f64 / 1e9,
            );
            p.sample(
                "http_request_duration_seconds_count",
                &[("endpoint", e.label())],
                cumulative,
            );
        }

        p.single(
            "reports_accepted_total",
            "counter",
            "Gateway reports recorded.",
            self.reports_accepted(),
        );
        p.header(
            "reports_rejected_total",
            "counter",
            "Gateway reports refused, by reason.",
        );
        for r in Rejection::ALL {
            p.sample(
                "reports_rejected_total",
                &[("reason", r.label())],
                self.reports_rejected(r),
            );
        }

        p.header(
            "gateways",
            "gauge",
            "Tracked gateways by state at the last rebuild: live (listed), draining, full.",
        );
        p.sample("gateways", &[("state", "live")], self.live.load(Relaxed));
        p.sample(
            "gateways",
            &[("state", "draining")],
            self.draining.load(Relaxed),
        );
        p.sample("gateways", &[("state", "full")], self.full.load(Relaxed));
        p.single(
            "gateways_stale_dropped_total",
            "counter",
            "Gateways dropped after stale_after_ms without a report.",
            self.stale_dropped_total(),
        );
        p.single(
            "list_entries",
            "gauge",
            "Entries an /ip_list answer has now (at most top_n).",
            self.list_entries.load(Relaxed),
        );
        p.single(
            "snapshot_rebuilds_total",
            "counter",
            "Times the list was rebuilt.",
            self.rebuilds.load(Relaxed),
        );
        p.single(
            "snapshot_generated_at_seconds",
            "gauge",
            "Unix time the current list was built.",
            self.generated_at_ms.load(Relaxed) as f64 / 1000.0,
        );
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name{labels} value` → value, for the one sample with exactly this series.
    fn value(text: &str, series: &str) -> f64 {
        tether_daemon::prometheus::read_sample(text, series)
            .unwrap_or_else(|| panic!("{series} is not exactly one sample in\n{text}"))
    }

    #[test]
    fn bucket_bounds_agree() {
        for (s, ns) in LATENCY_BUCKETS_S.iter().zip(LATENCY_BUCKETS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(LATENCY_BUCKETS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn requests_are_counted_by_endpoint_class_and_bucket_across_threads() {
        let m = Metrics::new();
        m.request(Endpoint::IpList, 200, Duration::from_nanos(800));
        m.request(Endpoint::IpList, 200, Duration::from_micros(3));
        std::thread::scope(|s| {
            s.spawn(|| m.request(Endpoint::IpList, 503, Duration::from_millis(2)));
            s.spawn(|| m.request(Endpoint::Report, 413, Duration::from_secs(2)));
        });
        m.report_accepted();
        m.report_rejected(Rejection::TooLarge);
        m.stale_dropped(3);
        m.rebuilt(
            GatewayCounts {
                live: 4,
                draining: 1,
                full: 2,
                listed: 4,
            },
            1_700_000_000_000,
        );
        let text = m.render_prometheus();
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v(r#"tether_ipconfig_http_requests_total{endpoint="ip_list",class="2xx"}"#),
            2.0
        );
        assert_eq!(
            v(r#"tether_ipconfig_http_requests_total{endpoint="ip_list",class="5xx"}"#),
            1.0
        );
        assert_eq!(
            v(r#"tether_ipconfig_http_requests_total{endpoint="report",class="4xx"}"#),
            1.0
        );
        let bucket = |ep: &str, le: &str| {
            v(&format!(
                "tether_ipconfig_http_request_duration_seconds_bucket{{endpoint=\"{ep}\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(bucket("ip_list", "0.000001"), 1.0);
        assert_eq!(bucket("ip_list", "0.000005"), 2.0);
        assert_eq!(bucket("ip_list", "0.0025"), 3.0);
        assert_eq!(bucket("ip_list", "+Inf"), 3.0);
        assert_eq!(bucket("report", "1"), 0.0);
        assert_eq!(bucket("report", "+Inf"), 1.0);
        assert_eq!(
            v(r#"tether_ipconfig_http_request_duration_seconds_count{endpoint="ip_list"}"#),
            3.0
        );
        let sum = v(r#"tether_ipconfig_http_request_duration_seconds_sum{endpoint="ip_list"}"#);
        assert!((sum - 0.0020038).abs() < 1e-12, "{sum}");
        assert_eq!(v("tether_ipconfig_reports_accepted_total"), 1.0);
        assert_eq!(
            v(r#"tether_ipconfig_reports_rejected_total{reason="too_large"}"#),
            1.0
        );
        assert_eq!(
            v(r#"tether_ipconfig_reports_rejected_total{reason="full"}"#),
            0.0
        );
        assert_eq!(v(r#"tether_ipconfig_gateways{state="live"}"#), 4.0);
        assert_eq!(v(r#"tether_ipconfig_gateways{state="draining"}"#), 1.0);
        assert_eq!(v(r#"tether_ipconfig_gateways{state="full"}"#), 2.0);
        assert_eq!(v("tether_ipconfig_gateways_stale_dropped_total"), 3.0);
        assert_eq!(v("tether_ipconfig_list_entries"), 4.0);
        assert_eq!(v("tether_ipconfig_snapshot_rebuilds_total"), 1.0);
        assert_eq!(
            v("tether_ipconfig_snapshot_generated_at_seconds"),
            1_700_000_000.0
        );
    }

    /// Every family has HELP and TYPE before its samples; counters end in `_total`.
    #[test]
    fn prometheus_text_format() {
        let text = Metrics::new().render_prometheus();
        assert!(text.ends_with('\n'));
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                family = it.next().unwrap().to_string();
                let kind = it.next().unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert_eq!(kind == "counter", family.ends_with("_total"), "{line}");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with(PREFIX), "{line}");
            assert!(
                name == family
                    || name
                        .strip_prefix(family.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                "{name} under {family}"
            );
        }
    }
}
