//! A histogram with fixed, explicit buckets ([`Buckets`]), counted in the data path's unit and
//! printed in seconds.
//!
//! Slots hold per-bucket (not cumulative) counts, so recording is one counter bump plus the
//! sum's; the count is the slots' sum, so a scrape's `_count` always equals its `+Inf` bucket.

use std::fmt;

use super::buckets::{debug_slots, seconds};
use super::{Buckets, Counter, Metric, Micros, Reading};
use crate::prometheus::Text;

/// Observations counted into the buckets `B`. Single writer unless the `_shared` methods are
/// used.
pub struct Histogram<B: Buckets> {
    slots: B::Slots<Counter>,
    sum: Counter,
}

impl<B: Buckets> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            slots: B::slots(|_| Counter::default()),
            sum: Counter::default(),
        }
    }
}

impl<B: Buckets> Histogram<B> {
    /// Records one observation of `value` (in `B`'s unit). Single writer only.
    #[inline]
    pub fn record(&self, value: u64) {
        self.slots.as_ref()[B::slot(value)].inc();
        self.sum.add(value);
    }

    /// Records one observation with atomic read-modify-writes, for a histogram several
    /// threads write.
    #[inline]
    pub fn record_shared(&self, value: u64) {
        self.slots.as_ref()[B::slot(value)].inc_shared();
        self.sum.add_shared(value);
    }
}

impl<B: Buckets<Unit = Micros>> Histogram<B> {
    /// Records one observation of `us` microseconds. Single writer only.
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.record(us);
    }
}

impl<B: Buckets> fmt::Debug for Histogram<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl<B: Buckets> Metric for Histogram<B> {
    const KIND: &'static str = "histogram";
    type Snapshot = HistogramSnapshot<B>;

    fn snapshot(&self) -> HistogramSnapshot<B> {
        let slots = self.slots.as_ref();
        HistogramSnapshot {
            counts: B::slots(|i| slots[i].get()),
            sum: self.sum.get(),
        }
    }
}

/// The counts of a [`Histogram`] at one moment, or summed over several.
pub struct HistogramSnapshot<B: Buckets> {
    /// Per-bucket (non-cumulative) counts; the last slot is the `+Inf` overflow.
    counts: B::Slots<u64>,
    /// Sum of all observations, in `B`'s unit.
    sum: u64,
}

impl<B: Buckets> HistogramSnapshot<B> {
    /// Per-bucket (non-cumulative) counts, one per bound of `B` then `+Inf`.
    pub fn counts(&self) -> &[u64] {
        self.counts.as_ref()
    }

    /// Sum of all observations, in `B`'s unit.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts().iter().fold(0u64, |a, &n| a.wrapping_add(n))
    }

    /// Cumulative counts, one per bound of `B` then `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts().iter().scan(0u64, |acc, &n| {
            *acc = acc.wrapping_add(n);
            Some(*acc)
        })
    }

    /// Estimated `q` quantile (0 < q ≤ 1) in `B`'s unit: the upper bound of the bucket holding
    /// it. `None` when there are no observations, or when the quantile lies in the `+Inf`
    /// bucket (above the largest bound).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Rank of the observation wanted, 1-based: ceil(q * count), at least 1.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let slot = self.cumulative().position(|c| c >= rank)?;
        B::BOUNDS.get(slot).copied()
    }
}

impl<B: Buckets> Reading for HistogramSnapshot<B> {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.as_mut().iter_mut().zip(other.counts()) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// `<name>_bucket` for each bound then `+Inf`, `<name>_sum` in seconds, `<name>_count`.
    fn write_samples(&self, p: &mut Text, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut count = 0;
        for (i, cumulative) in self.cumulative().enumerate() {
            let le = B::le(i);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            p.sample(&bucket, &with_le, cumulative);
            count = cumulative;
        }
        p.sample(&format!("{name}_sum"), labels, seconds::<B::Unit>(self.sum));
        p.sample(&format!("{name}_count"), labels, count);
    }

    fn total(&self) -> u64 {
        self.count()
    }
}

impl<B: Buckets> Default for HistogramSnapshot<B> {
    fn default() -> Self {
        HistogramSnapshot {
            counts: B::slots(|_| 0),
            sum: 0,
        }
    }
}

impl<B: Buckets> Clone for HistogramSnapshot<B> {
    fn clone(&self) -> Self {
        let counts = self.counts();
        HistogramSnapshot {
            counts: B::slots(|i| counts[i]),
            sum: self.sum,
        }
    }
}

impl<B: Buckets> PartialEq for HistogramSnapshot<B> {
    fn eq(&self, other: &Self) -> bool {
        self.counts() == other.counts() && self.sum == other.sum
    }
}

impl<B: Buckets> Eq for HistogramSnapshot<B> {}

impl<B: Buckets> fmt::Debug for HistogramSnapshot<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Histogram {{ sum: {}, counts: ", self.sum)?;
        debug_slots::<B>(f, self.counts())?;
        f.write_str(" }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::buckets! {
        /// Small.
        enum Us: Micros = [10, 100, 1_000];
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let h = Histogram::<Us>::default();
        assert_eq!(h.snapshot().quantile(0.5), None, "nothing recorded");
        (0..8).for_each(|_| h.record_us(7));
        h.record_us(100);
        h.record_us(1_001); // +Inf
        let s = h.snapshot();
        assert_eq!(s.counts(), [8, 1, 0, 1]);
        assert_eq!(s.quantile(0.8), Some(10));
        assert_eq!(s.quantile(0.9), Some(100));
        assert_eq!(s.quantile(f64::NAN), None, "NaN is the maximum, in +Inf");
        assert_eq!(s.quantile(0.0), Some(10), "rank at least 1");
        assert_eq!(s.sum(), 8 * 7 + 100 + 1_001);
    }

    #[test]
    fn prints_cumulative_buckets_sum_in_seconds_and_count() {
        crate::buckets! {
            /// Small.
            enum Ns: Nanos = [1_000, 2_500];
        }
        let h = Histogram::<Ns>::default();
        h.record_shared(1_000);
        h.record(2_000);
        h.record(9_000_000_000);
        let mut merged = h.snapshot();
        merged.merge(&h.snapshot());
        let mut p = Text::new("t_", 256);
        merged.write_samples(&mut p, "d_seconds", &[("endpoint", "x")]);
        assert_eq!(
            p.finish(),
            "t_d_seconds_bucket{endpoint=\"x\",le=\"0.000001\"} 2\n\
             t_d_seconds_bucket{endpoint=\"x\",le=\"0.0000025\"} 4\n\
             t_d_seconds_bucket{endpoint=\"x\",le=\"+Inf\"} 6\n\
             t_d_seconds_sum{endpoint=\"x\"} 18.000006\n\
             t_d_seconds_count{endpoint=\"x\"} 6\n"
        );
        assert_eq!(merged.total(), 6);
        assert_eq!(merged.cumulative().collect::<Vec<_>>(), [2, 4, 6]);
    }
}
