//! Counters and gauges: one `u64` each, written by one thread unless said otherwise.
//!
//! The single-writer methods are a relaxed load and store: cheap (no locked
//! read-modify-write), and correct only while one thread writes. A value several threads
//! write uses the `_shared` methods (`fetch_add`, `fetch_sub`). Arithmetic wraps.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Metric;

/// Whether a [`Scalar`] is a counter or a gauge: its Prometheus type, and which methods it has.
pub trait Kind: 'static {
    /// `counter` or `gauge`.
    const NAME: &'static str;
    /// `Counter` or `Gauge`, for `Debug`.
    const TYPE_NAME: &'static str;
}

/// Only goes up: [`Counter`].
#[derive(Debug)]
pub enum CounterKind {}

/// Set, or moved up and down: [`Gauge`].
#[derive(Debug)]
pub enum GaugeKind {}

impl Kind for CounterKind {
    const NAME: &'static str = "counter";
    const TYPE_NAME: &'static str = "Counter";
}

impl Kind for GaugeKind {
    const NAME: &'static str = "gauge";
    const TYPE_NAME: &'static str = "Gauge";
}

/// A counter with one writer (its event loop) and any number of readers. A counter several
/// threads write (the gateway's acceptors, a pool's workers) uses [`Scalar::inc_shared`] /
/// [`Scalar::add_shared`].
pub type Counter = Scalar<CounterKind>;

/// A gauge: [`Scalar::set`], or moved with `add` and `sub` (adding `u64::MAX` takes one
/// away).
pub type Gauge = Scalar<GaugeKind>;

/// One `u64` metric; see [`Counter`] and [`Gauge`].
pub struct Scalar<K: Kind>(AtomicU64, PhantomData<K>);

impl<K: Kind> Scalar<K> {
    /// Adds one. Single writer only.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping). Single writer only.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one with an atomic read-modify-write; see [`Scalar::add_shared`].
    #[inline]
    pub fn inc_shared(&self) {
        self.add_shared(1);
    }

    /// Adds `n` with an atomic read-modify-write, for a value several threads write.
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    /// Takes `n` away (wrapping). Single writer only.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Takes `n` away with an atomic read-modify-write.
    #[inline]
    pub fn sub_shared(&self, n: u64) {
        self.0.fetch_sub(n, Relaxed);
    }
}

impl<K: Kind> Default for Scalar<K> {
    fn default() -> Self {
        Scalar(AtomicU64::new(0), PhantomData)
    }
}

/// `Counter(5)`, `Gauge(1)`.
impl<K: Kind> fmt::Debug for Scalar<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple(K::TYPE_NAME).field(&self.get()).finish()
    }
}

impl<K: Kind> Metric for Scalar<K> {
    const KIND: &'static str = K::NAME;
    type Snapshot = u64;

    fn snapshot(&self) -> u64 {
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_single_writer_and_shared() {
        let c = Counter::default();
        c.inc();
        c.add(41);
        c.add_shared(8);
        c.inc_shared();
        assert_eq!(c.get(), 51);
        c.add(u64::MAX);
        assert_eq!(c.snapshot(), 50, "wraps");
        assert_eq!(format!("{c:?}"), "Counter(50)");
        assert_eq!(Counter::KIND, "counter");
    }

    #[test]
    fn shared_writers_lose_nothing() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| (0..1000).for_each(|_| c.inc_shared()));
            }
        });
        assert_eq!(c.get(), 4000);
    }

    #[test]
    fn gauge_set_add_sub() {
        let g = Gauge::default();
        g.set(5);
        g.add(2);
        g.sub(3);
        g.add_shared(10);
        g.sub_shared(4);
        assert_eq!(g.get(), 10);
        g.add(u64::MAX);
        assert_eq!(g.snapshot(), 9, "adding u64::MAX takes one away");
        assert_eq!(format!("{g:?}"), "Gauge(9)");
        assert_eq!(Gauge::KIND, "gauge");
    }
}
