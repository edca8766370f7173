//! The once-a-second progress line on stderr:
//! `t=3s conns=1000/1000 established=… failed=… dropped=… conn/s=… sent/s=… recv/s=…
//! errors=… verify=…` — `conns` is how many are open now, `conn/s` the rate at which
//! connections were established since the last line. With `--procs` the worker processes
//! send their [`Totals`] to the parent, which prints one line for all of them.
//!
//! Each worker owns one cache-line-padded [`Slot`] of relaxed atomics and overwrites it with
//! its running totals at most once per loop iteration; the main thread sums the slots and
//! turns the difference between two samples into rates. Nothing else is shared.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stats::Stats;

/// One worker's published totals, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Slot {
    open: AtomicU64,
    established: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    verify: AtomicU64,
}

impl Slot {
    /// Publishes a worker's running totals and its currently open connections.
    pub(crate) fn publish(&self, stats: &Stats, open: u64) {
        self.open.store(open, Ordering::Relaxed);
        self.established.store(stats.established, Ordering::Relaxed);
        self.failed.store(stats.failed, Ordering::Relaxed);
        self.dropped.store(stats.dropped, Ordering::Relaxed);
        self.sent.store(stats.total_sent, Ordering::Relaxed);
        self.received.store(stats.total_received, Ordering::Relaxed);
        self.errors.store(stats.error_total, Ordering::Relaxed);
        self.verify.store(stats.verify_failures, Ordering::Relaxed);
    }
}

/// Every worker's slot.
#[derive(Debug)]
pub(crate) struct Live {
    slots: Box<[Slot]>,
}

/// The sum of every slot at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub open: u64,
    pub established: u64,
    pub failed: u64,
    pub dropped: u64,
    pub sent: u64,
    pub received: u64,
    pub errors: u64,
    pub verify: u64,
}

impl Totals {
    /// Adds another process's totals (`--procs`).
    pub(crate) fn add(&mut self, o: &Totals) {
        self.open += o.open;
        self.established += o.established;
        self.failed += o.failed;
        self.dropped += o.dropped;
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.verify += o.verify;
    }
}

impl Live {
    pub(crate) fn new(workers: usize) -> Live {
        Live {
            slots: (0..workers).map(|_| Slot::default()).collect(),
        }
    }

    /// Worker `index`'s slot. Panics on an index beyond the worker count given to `new`,
    /// which only the run's own set-up chooses.
    pub(crate) fn slot(&self, index: usize) -> &Slot {
        &self.slots[index]
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for slot in self.slots.iter() {
            t.open += slot.open.load(Ordering::Relaxed);
            t.established += slot.established.load(Ordering::Relaxed);
            t.failed += slot.failed.load(Ordering::Relaxed);
            t.dropped += slot.dropped.load(Ordering::Relaxed);
            t.sent += slot.sent.load(Ordering::Relaxed);
            t.received += slot.received.load(Ordering::Relaxed);
            t.errors += slot.errors.load(Ordering::Relaxed);
            t.verify += slot.verify.load(Ordering::Relaxed);
        }
        t
    }
}

/// Turns successive samples into progress lines.
#[derive(Debug)]
pub(crate) struct Reporter {
    conns: usize,
    last: Totals,
    last_at: Duration,
}

impl Reporter {
    pub(crate) fn new(conns: usize) -> Reporter {
        Reporter {
            conns,
            last: Totals::default(),
            last_at: Duration::ZERO,
        }
    }

    /// The line for `now` (time since the run began), with rates since the previous line.
    pub(crate) fn line(&mut self, now: Duration, totals: Totals) -> String {
        let secs = now.saturating_sub(self.last_at).as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| (now.saturating_sub(before) as f64 / secs).round();
        let line = format!(
            "t={}s conns={}/{} established={} failed={} dropped={} conn/s={} sent/s={} recv/s={} errors={} verify={}",
            now.as_secs_f64().round(),
            totals.open,
            self.conns,
            totals.established,
            totals.failed,
            totals.dropped,
            rate(totals.established, self.last.established),
            rate(totals.sent, self.last.sent),
            rate(totals.received, self.last.received),
            totals.errors,
            totals.verify,
        );
        self.last = totals;
        self.last_at = now;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_sum_and_lines_show_rates() {
        let live = Live::new(2);
        let mut stats = Stats::new().unwrap();
        stats.total_sent = 300;
        stats.total_received = 200;
        stats.error("reset");
        stats.established = 10;
        stats.dropped = 1;
        live.slot(0).publish(&stats, 10);
        live.slot(1).publish(&stats, 5);
        let totals = live.totals();
        assert_eq!(totals.open, 15);
        assert_eq!(totals.sent, 600);

        let mut reporter = Reporter::new(20);
        assert_eq!(
            reporter.line(Duration::from_secs(1), totals),
            "t=1s conns=15/20 established=20 failed=0 dropped=2 conn/s=20 sent/s=600 recv/s=400 errors=2 verify=0"
        );
        let later = Totals {
            sent: 1600,
            ..totals
        };
        assert_eq!(
            reporter.line(Duration::from_secs(3), later),
            "t=3s conns=15/20 established=20 failed=0 dropped=2 conn/s=0 sent/s=500 recv/s=0 errors=2 verify=0"
        );
    }
}
