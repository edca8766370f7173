//! The service's counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Request counters are bumped by every worker thread, so they are [`Sharded`]: each thread
//! keeps to one shard (cache-line aligned) from the first time it counts, and a scrape sums
//! the shards. The gateway gauges are written by the rebuild task only. Each family is
//! declared once, in page order, in one of the two [`tether_daemon::metric_set!`]s below.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `tether_ipconfig_http_requests_total` | counter | `endpoint` (ip_list, report, healthz, metrics, other), `class` (1xx…5xx) |
//! | `tether_ipconfig_http_request_duration_seconds` | histogram | `endpoint`; explicit buckets, 1 µs … 1 s |
//! | `tether_ipconfig_reports_accepted_total` | counter | |
//! | `tether_ipconfig_reports_rejected_total` | counter | `reason` (malformed, invalid, too_large, full; with `report_keys_file`: unsigned, bad_headers, unknown_id, bad_signature, expired, replayed, forbidden) |
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

use std::time::{Duration, Instant};

use tether_daemon::metrics::{Counter, Family, Gauge, Histogram, Sharded};

/// Every metric name starts with this.
pub const PREFIX: &str = "tether_ipconfig_";

/// Shards of the request counters: more than the worker threads there usually are.
const SHARDS: usize = 16;

tether_daemon::label_set! {
    /// Which route a request took.
    pub enum Endpoint: "endpoint" {
        IpList = "ip_list",
        Report = "report",
        Healthz = "healthz",
        Metrics = "metrics",
        /// 404s and 405s.
        Other = "other",
    }
}

tether_daemon::label_set! {
    /// A response's status class.
    pub(crate) enum StatusClass: "class" {
        Informational = "1xx",
        Success = "2xx",
        Redirection = "3xx",
        ClientError = "4xx",
        ServerError = "5xx",
    }
}

impl StatusClass {
    /// The class of `status`; below 100 counts as 1xx, 600 and above as 5xx.
    pub(crate) fn of(status: u16) -> StatusClass {
        let i = usize::from(status / 100).clamp(1, StatusClass::COUNT) - 1;
        StatusClass::ALL[i]
    }
}

tether_daemon::label_set! {
    /// Why a report was refused.
    pub enum Rejection: "reason" {
        /// Not a JSON object (400).
        Malformed = "malformed",
        /// A field missing, of the wrong type or out of range (400).
        Invalid = "invalid",
        /// Body over `max_report_bytes` (413).
        TooLarge = "too_large",
        /// `max_gateways` reached (503).
        Full = "full",
        /// With `report_keys_file`: no signature headers at all (401).
        Unsigned = "unsigned",
        /// A signature header missing or unreadable (401).
        BadHeaders = "bad_headers",
        /// No key for the gateway id in `report_keys_file` (401).
        UnknownId = "unknown_id",
        /// The signature verifies with none of the id's keys (401).
        BadSignature = "bad_signature",
        /// The timestamp is more than 30 s from this host's clock (401).
        Expired = "expired",
        /// The timestamp is not later than the last accepted one of that id (401).
        Replayed = "replayed",
        /// Signed for one gateway, the body names another (403).
        Forbidden = "forbidden",
    }
}

impl Rejection {
    /// A report that does not parse: malformed JSON, or a bad field.
    pub fn of(e: &crate::report::ReportError) -> Rejection {
        if e.is_malformed() {
            Rejection::Malformed
        } else {
            Rejection::Invalid
        }
    }
}

tether_daemon::label_set! {
    /// A tracked gateway's state at the last rebuild.
    pub(crate) enum GatewayState: "state" {
        /// Listable.
        Live = "live",
        Draining = "draining",
        Full = "full",
    }
}

tether_daemon::buckets! {
    /// Upper bounds of the request-duration buckets, in nanoseconds (what is recorded):
    /// 1 µs … 1 s, printed in seconds; `+Inf` is implicit.
    pub(crate) enum RequestNs: Nanos = [
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
}

tether_daemon::metric_set! {
    /// One shard of the request counters. Several threads may share it: every write is a
    /// read-modify-write.
    #[derive(Debug)]
    #[repr(align(128))]
    struct Requests;

    #[derive(Debug, Clone, Default)]
    struct RequestsSnapshot;

    families {
        requests: Family<Endpoint, Family<StatusClass>>
            => "http_requests_total", "HTTP requests answered, by endpoint and status class.";
        latency: Family<Endpoint, Histogram<RequestNs>>
            => "http_request_duration_seconds",
               "Time from a handler's start to its response being ready, by endpoint.";
        reports_accepted: Counter => "reports_accepted_total", "Gateway reports recorded.";
        reports_rejected: Family<Rejection>
            => "reports_rejected_total", "Gateway reports refused, by reason.";
    }
}

tether_daemon::metric_set! {
    /// What the rebuilds leave, and the gateways dropped for going stale.
    #[derive(Debug)]
    struct Listing;

    #[derive(Debug, Clone, Default)]
    struct ListingSnapshot;

    families {
        gateways: Family<GatewayState, Gauge>
            => "gateways",
               "Tracked gateways by state at the last rebuild: live (listed), draining, full.";
        /// Bumped by the handlers and the rebuild task: shared writes.
        stale_dropped: Counter
            => "gateways_stale_dropped_total",
               "Gateways dropped after stale_after_ms without a report.";
        list_entries: Gauge
            => "list_entries", "Entries an /ip_list answer has now (at most top_n).";
        rebuilds: Counter => "snapshot_rebuilds_total", "Times the list was rebuilt.";
    }

    unexported {
        /// Printed in seconds, last on the page.
        generated_at_ms: Gauge,
    }
}

/// Every counter of one service.
#[derive(Debug)]
pub struct Metrics {
    requests: Sharded<Requests>,
    listing: Listing,
    started: Instant,
    version: &'static str,
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
            requests: Sharded::new(SHARDS),
            listing: Listing::default(),
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Counts one request on `endpoint` answered `status` after `elapsed`.
    #[inline]
    pub fn request(&self, endpoint: Endpoint, status: u16, elapsed: Duration) {
        let shard = self.requests.local();
        shard
            .requests
            .get(endpoint)
            .inc_shared(StatusClass::of(status));
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.latency.get(endpoint).record_shared(ns);
    }

    pub fn report_accepted(&self) {
        self.requests.local().reports_accepted.inc_shared();
    }

    pub fn report_rejected(&self, why: Rejection) {
        self.requests.local().reports_rejected.inc_shared(why);
    }

    /// Gateways dropped for going stale.
    pub fn stale_dropped(&self, n: usize) {
        self.listing.stale_dropped.add_shared(n as u64);
    }

    /// Records a rebuild's counts.
    pub fn rebuilt(&self, counts: GatewayCounts, generated_at_ms: u64) {
        let gateways = &self.listing.gateways;
        gateways.set(GatewayState::Live, counts.live as u64);
        gateways.set(GatewayState::Draining, counts.draining as u64);
        gateways.set(GatewayState::Full, counts.full as u64);
        self.listing.list_entries.set(counts.listed as u64);
        self.listing.generated_at_ms.set(generated_at_ms);
        self.listing.rebuilds.add_shared(1);
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
        let requests: RequestsSnapshot = self.requests.iter().map(Requests::snapshot).sum();
        requests.write_prometheus(&mut p);
        self.listing.snapshot().write_prometheus(&mut p);
        p.single(
            "snapshot_generated_at_seconds",
            "gauge",
            "Unix time the current list was built.",
            self.listing.generated_at_ms.get() as f64 / 1000.0,
        );
        p.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_daemon::metrics::Buckets;

    /// `name{labels} value` → value, for the one sample with exactly this series.
    fn value(text: &str, series: &str) -> f64 {
        tether_daemon::prometheus::read_sample(text, series)
            .unwrap_or_else(|| panic!("{series} is not exactly one sample in\n{text}"))
    }

    #[test]
    fn bucket_bounds_agree() {
        for (i, &ns) in RequestNs::BOUNDS.iter().enumerate() {
            let s: f64 = RequestNs::le(i).parse().unwrap();
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(RequestNs::BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(0), StatusClass::Informational);
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(308), StatusClass::Redirection);
        assert_eq!(StatusClass::of(499), StatusClass::ClientError);
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
        assert_eq!(StatusClass::of(u16::MAX), StatusClass::ServerError);
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
