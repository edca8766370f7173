//! One worker's results: connection and frame counters, session events (logins, resumes,
//! reconnects, heartbeats), pushes, errors by name, and the DATA and push latency
//! histograms. Owned by the worker thread (no sharing on the hot path) and merged into the
//! run's totals at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::{AdditionError, CreationError, Histogram, RecordError};
use serde::{Deserialize, Serialize};

use crate::rooms::RoomCounts;

/// Latencies are recorded in microseconds from 1 µs to 60 s with 3 significant figures.
pub(crate) const LATENCY_MAX_US: u64 = 60_000_000;

/// The part of the run whose frames are recorded: `[measure_start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub measure_start: Instant,
    pub end: Instant,
}

impl Window {
    /// Whether a frame sent (or scheduled) at `at` belongs to the measured window.
    pub fn measures(&self, at: Instant) -> bool {
        at >= self.measure_start
    }

    /// Whether `at` is inside the window (for throughput).
    pub fn contains(&self, at: Instant) -> bool {
        at >= self.measure_start && at < self.end
    }
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub established: u64,
    pub failed: u64,
    pub dropped: u64,
    /// DATA frames sent (or scheduled) inside the measured window.
    pub sent: u64,
    /// Verified replies to frames counted in `sent`, drain included.
    pub received: u64,
    /// Verified replies that arrived inside the window (throughput's numerator).
    pub received_in_window: u64,
    /// Every DATA frame sent, warmup included (progress line).
    pub total_sent: u64,
    /// Every verified reply, warmup included (progress line, CPU per frame).
    pub total_received: u64,
    pub verify_failures: u64,
    /// Sum of `errors`' counts (progress line).
    pub error_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Histogram<u64>,
    pub session: SessionCounts,
    pub push: PushCounts,
    /// Push latency in µs (receive time − the payload's stamp), first deliveries only.
    pub push_latency: Histogram<u64>,
    /// What became of every DATA frame sent, warmup included.
    pub requests: RequestCounts,
    /// From the first dial until every connection was ready or given up (the connect
    /// phase); the longest of the workers' when merged.
    pub setup: Duration,
    /// Room messages (`--rooms`, `--peer`) and what the publisher sent.
    pub rooms: RoomCounts,
    /// Publish → client latency in µs (receive time − the payload's stamp), new messages only.
    pub room_latency: Histogram<u64>,
}

/// What became of every DATA frame sent, warmup included: each ends in exactly one of
/// `answered`, `errored`, `lost` or `unanswered`, so `sent` is their sum once the run is
/// over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// DATA frames written to a connection's queue.
    pub sent: u64,
    /// Answered by DATA with their id (verified or not: `verify_failures` tells).
    pub answered: u64,
    /// Answered by an ERROR with their id (REQUEST_TIMEOUT, BUSY, UNAVAILABLE, …).
    pub errored: u64,
    /// In flight on a connection that went away before the end (closed by the server, reset,
    /// told GOAWAY): the client saw its connection end, so nothing was silent.
    pub lost: u64,
    /// Still in flight at the very end, after the drain, on a connection that stayed up:
    /// never answered at all.
    pub unanswered: u64,
}

impl RequestCounts {
    fn add(&mut self, o: &RequestCounts) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.errored += o.errored;
        self.lost += o.lost;
        self.unanswered += o.unanswered;
    }

    /// Whether every request sent is accounted for.
    pub fn balanced(&self) -> bool {
        self.sent == self.answered + self.errored + self.lost + self.unanswered
    }
}

/// Logins, resumes, reconnects and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCounts {
    /// Connections whose first login succeeded.
    pub logged_in: u64,
    /// LOGIN_OK answers to LOGIN (first logins and fresh logins after a failed resume).
    pub logins_ok: u64,
    /// LOGINs answered with a closing ERROR, timed out or cut off.
    pub logins_failed: u64,
    /// RESUMEs answered LOGIN_OK with the same session.
    pub resumes_ok: u64,
    /// RESUMEs refused, timed out or cut off.
    pub resumes_failed: u64,
    /// RESUMEs answered LOGIN_OK with a different session (not in `resumes_ok`; the
    /// connection carries on with the new session).
    pub resumes_new_session: u64,
    /// GOAWAY frames received.
    pub goaways: u64,
    /// Connections back on a gateway after a GOAWAY.
    pub reconnects_ok: u64,
    /// Connections that did not get back within `--reconnect-timeout`.
    pub reconnects_failed: u64,
    /// LOGINs and RESUMEs answered BUSY (admission control) and sent again after the hint.
    pub logins_busy: u64,
    /// PINGs sent.
    pub pings: u64,
    /// PONGs received.
    pub pongs: u64,
    /// Open-loop sends that came due while their connection was not ready (reconnecting):
    /// not sent, not in `sent`.
    pub skipped: u64,
    /// `--hold` check PINGs sent at the end of the hold.
    pub checks_sent: u64,
    /// Of those, answered by a PONG in time.
    pub checks_answered: u64,
}

impl SessionCounts {
    fn add(&mut self, o: &SessionCounts) {
        self.logged_in += o.logged_in;
        self.logins_ok += o.logins_ok;
        self.logins_failed += o.logins_failed;
        self.resumes_ok += o.resumes_ok;
        self.resumes_failed += o.resumes_failed;
        self.resumes_new_session += o.resumes_new_session;
        self.goaways += o.goaways;
        self.reconnects_ok += o.reconnects_ok;
        self.reconnects_failed += o.reconnects_failed;
        self.logins_busy += o.logins_busy;
        self.pings += o.pings;
        self.pongs += o.pongs;
        self.skipped += o.skipped;
        self.checks_sent += o.checks_sent;
        self.checks_answered += o.checks_answered;
    }
}

/// PUSH frames received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushCounts {
    /// Every PUSH frame, redeliveries included.
    pub received: u64,
    /// Message ids seen for the first time on their connection.
    pub unique: u64,
    /// Redeliveries of a message id already seen on the same connection.
    pub duplicates: u64,
    /// First deliveries with an id below one already seen on the connection.
    pub out_of_order: u64,
    /// First deliveries too short to carry a send time.
    pub unstamped: u64,
    /// ACKs sent (one per PUSH frame).
    pub acked: u64,
}

impl PushCounts {
    fn add(&mut self, o: &PushCounts) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unstamped += o.unstamped;
        self.acked += o.acked;
    }
}

impl Stats {
    pub fn new() -> Result<Stats, CreationError> {
        Ok(Stats {
            established: 0,
            failed: 0,
            dropped: 0,
            sent: 0,
            received: 0,
            received_in_window: 0,
            total_sent: 0,
            total_received: 0,
            verify_failures: 0,
            error_total: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
            session: SessionCounts::default(),
            push: PushCounts::default(),
            push_latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
            requests: RequestCounts::default(),
            setup: Duration::ZERO,
            rooms: RoomCounts::default(),
            room_latency: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?,
        })
    }

    /// Counts one error under `name`.
    pub fn error(&mut self, name: &str) {
        self.errors_n(name, 1);
    }

    /// Counts `n` errors under `name` (nothing when `n` is 0).
    pub fn errors_n(&mut self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.error_total += n;
        match self.errors.get_mut(name) {
            Some(count) => *count += n,
            None => {
                self.errors.insert(name.to_string(), n);
            }
        }
    }

    /// Counts a DATA frame sent (or scheduled) at `at`.
    pub fn sent(&mut self, at: Instant, window: &Window) {
        self.total_sent += 1;
        self.requests.sent += 1;
        if window.measures(at) {
            self.sent += 1;
        }
    }

    /// Records a verified reply to a frame measured from `since`, arriving at `now`.
    pub fn reply(&mut self, since: Instant, now: Instant, window: &Window) {
        self.total_received += 1;
        if window.contains(now) {
            self.received_in_window += 1;
        }
        if window.measures(since) {
            self.received += 1;
            let us = micros(now.saturating_duration_since(since));
            self.latency.saturating_record(us.max(1));
        }
    }

    /// Records the latency of a first delivery stamped `stamp_us` and received at `now_us`
    /// (both µs since the Unix epoch), if it arrived in the measured part of the run.
    pub fn push_latency(&mut self, stamp_us: u64, now_us: u64, at: Instant, window: &Window) {
        if window.measures(at) {
            let us = now_us.saturating_sub(stamp_us);
            self.push_latency.saturating_record(us.max(1));
        }
    }

    /// Adds another worker's results to these.
    pub fn merge(&mut self, other: &Stats) -> Result<(), AdditionError> {
        self.established += other.established;
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.sent += other.sent;
        self.received += other.received;
        self.received_in_window += other.received_in_window;
        self.total_sent += other.total_sent;
        self.total_received += other.total_received;
        self.verify_failures += other.verify_failures;
        for (name, &n) in &other.errors {
            self.errors_n(name, n);
        }
        self.session.add(&other.session);
        self.push.add(&other.push);
        self.requests.add(&other.requests);
        self.setup = self.setup.max(other.setup);
        self.rooms.add(&other.rooms);
        self.room_latency.add(&other.room_latency)?;
        self.push_latency.add(&other.push_latency)?;
        self.latency.add(&other.latency)
    }
}

/// A worker process's [`Stats`] as it travels to the parent (`--procs`): every counter,
/// and each histogram as its non-empty buckets — (highest equivalent value, count) pairs —
/// so that the parent's merge puts every sample back in the very bucket it came from, and
/// the merged percentiles are those of one histogram over all samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireStats {
    pub established: u64,
    pub failed: u64,
    pub dropped: u64,
    pub sent: u64,
    pub received: u64,
    pub received_in_window: u64,
    pub total_sent: u64,
    pub total_received: u64,
    pub verify_failures: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Vec<(u64, u64)>,
    pub session: SessionCounts,
    pub push: PushCounts,
    pub push_latency: Vec<(u64, u64)>,
    #[serde(default)]
    pub requests: RequestCounts,
    #[serde(default)]
    pub setup_s: f64,
    #[serde(default)]
    pub rooms: RoomCounts,
    #[serde(default)]
    pub room_latency: Vec<(u64, u64)>,
}

fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn refill(h: &mut Histogram<u64>, buckets: &[(u64, u64)]) -> Result<(), RecordError> {
    for &(value, count) in buckets {
        h.record_n(value, count)?;
    }
    Ok(())
}

impl WireStats {
    pub(crate) fn of(s: &Stats) -> WireStats {
        WireStats {
            established: s.established,
            failed: s.failed,
            dropped: s.dropped,
            sent: s.sent,
            received: s.received,
            received_in_window: s.received_in_window,
            total_sent: s.total_sent,
            total_received: s.total_received,
            verify_failures: s.verify_failures,
            errors: s.errors.clone(),
            latency: buckets(&s.latency),
            session: s.session,
            push: s.push,
            push_latency: buckets(&s.push_latency),
            requests: s.requests,
            setup_s: s.setup.as_secs_f64(),
            rooms: s.rooms,
            room_latency: buckets(&s.room_latency),
        }
    }

    /// Back to [`Stats`]; fails only on a bucket value outside the histogram's range.
    pub(crate) fn into_stats(self) -> anyhow::Result<Stats> {
        let mut s = Stats::new()?;
        s.established = self.established;
        s.failed = self.failed;
        s.dropped = self.dropped;
        s.sent = self.sent;
        s.received = self.received;
        s.received_in_window = self.received_in_window;
        s.total_sent = self.total_sent;
        s.total_received = self.total_received;
        s.verify_failures = self.verify_failures;
        for (name, n) in &self.errors {
            s.errors_n(name, *n);
        }
        s.session = self.session;
        s.push = self.push;
        s.requests = self.requests;
        s.setup = Duration::try_from_secs_f64(self.setup_s).unwrap_or_default();
        refill(&mut s.latency, &self.latency)?;
        refill(&mut s.push_latency, &self.push_latency)?;
        s.rooms = self.rooms;
        refill(&mut s.room_latency, &self.room_latency)?;
        Ok(s)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> (Window, Instant) {
        let t0 = Instant::now();
        let w = Window {
            measure_start: t0 + Duration::from_secs(1),
            end: t0 + Duration::from_secs(3),
        };
        (w, t0)
    }

    #[test]
    fn warmup_frames_are_not_recorded() {
        let (w, t0) = window();
        let mut s = Stats::new().unwrap();
        s.sent(t0, &w);
        s.reply(t0, t0 + Duration::from_millis(1500), &w);
        assert_eq!((s.sent, s.total_sent), (0, 1));
        assert_eq!((s.received, s.total_received), (0, 1));
        assert_eq!(s.received_in_window, 1);
        assert!(s.latency.is_empty());

        let at = t0 + Duration::from_secs(2);
        s.sent(at, &w);
        s.reply(at, at + Duration::from_micros(250), &w);
        assert_eq!((s.sent, s.received), (1, 1));
        assert_eq!(s.latency.len(), 1);
        assert!(s.latency.max() >= 250 && s.latency.max() < 251);

        // A reply during the drain is recorded but not part of throughput.
        s.reply(at, t0 + Duration::from_secs(4), &w);
        assert_eq!((s.received, s.received_in_window), (2, 2));
    }

    #[test]
    fn merge_adds_everything() {
        let (w, t0) = window();
        let at = t0 + Duration::from_secs(2);
        let mut a = Stats::new().unwrap();
        let mut b = Stats::new().unwrap();
        a.error("reset");
        b.error("reset");
        b.errors_n("unanswered", 3);
        b.errors_n("nothing", 0);
        b.reply(at, at + Duration::from_millis(2), &w);
        b.established = 2;
        b.session.resumes_ok = 4;
        b.push.duplicates = 1;
        b.push_latency(1_000, 1_500, at, &w);
        b.push_latency(1_000, 9_000, t0, &w); // before the window: not recorded
        a.session.resumes_ok = 1;
        a.merge(&b).unwrap();
        assert_eq!(a.session.resumes_ok, 5);
        assert_eq!(a.push.duplicates, 1);
        assert_eq!(a.push_latency.len(), 1);
        assert_eq!(a.push_latency.max(), 500);
        assert_eq!(a.errors.get("reset"), Some(&2));
        assert_eq!(a.errors.get("unanswered"), Some(&3));
        assert!(!a.errors.contains_key("nothing"));
        assert_eq!(a.error_total, 5);
        assert_eq!(a.established, 2);
        assert_eq!(a.latency.len(), 1);
    }

    #[test]
    fn stats_through_the_wire_merge_exactly() {
        let (w, t0) = window();
        let at = t0 + Duration::from_secs(2);
        let (mut a, mut b, mut direct) = (
            Stats::new().unwrap(),
            Stats::new().unwrap(),
            Stats::new().unwrap(),
        );
        for i in 0..5_000u64 {
            let us = Duration::from_micros(1 + i * i % 977_777);
            let s = if i % 3 == 0 { &mut a } else { &mut b };
            s.reply(at, at + us, &w);
            direct.reply(at, at + us, &w);
        }
        b.error("fd_limit");
        b.session.checks_answered = 7;
        b.requests.errored = 3;
        b.setup = Duration::from_millis(2500);
        a.setup = Duration::from_millis(900);
        b.rooms.gaps = 2;
        b.room_latency.record(1234).unwrap();
        let text = serde_json::to_string(&WireStats::of(&b)).unwrap();
        let back: WireStats = serde_json::from_str(&text).unwrap();
        let mut merged = WireStats::of(&a).into_stats().unwrap();
        merged.merge(&back.into_stats().unwrap()).unwrap();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.latency.value_at_quantile(q),
                direct.latency.value_at_quantile(q),
                "q {q}"
            );
        }
        assert_eq!(merged.latency.len(), 5_000);
        assert_eq!(merged.errors.get("fd_limit"), Some(&1));
        assert_eq!(merged.session.checks_answered, 7);
        assert_eq!(merged.requests.errored, 3);
        assert_eq!(
            merged.requests.answered, 0,
            "reply() is the Conn's business"
        );
        assert_eq!(merged.setup, Duration::from_millis(2500), "the longest");
        assert_eq!(merged.rooms.gaps, 2);
        assert_eq!(merged.room_latency.len(), 1);
    }
}
