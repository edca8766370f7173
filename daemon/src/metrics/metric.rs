//! What every stored metric and every reading of one can do, so that one declaration
//! ([`metric_set!`](crate::metric_set)) can read, add up and print any of them.

use crate::prometheus::Text;

/// A metric a daemon stores: [`Counter`](super::Counter), [`Gauge`](super::Gauge),
/// [`Family`](super::Family), [`Histogram`](super::Histogram), [`Derived`](super::Derived).
pub trait Metric {
    /// The family's Prometheus type, for its `# TYPE` line: `counter`, `gauge`, `histogram`.
    const KIND: &'static str;
    /// What a scrape reads out of it.
    type Snapshot: Reading;
    /// The current value(s), read with relaxed loads.
    fn snapshot(&self) -> Self::Snapshot;
}

/// The value(s) of a metric at one moment, or added up over several writers.
pub trait Reading: Default {
    /// Adds `other`'s values to these (wrapping).
    fn merge(&mut self, other: &Self);
    /// Writes the samples of family `name` (no header); `labels` go before any of its own.
    fn write_samples(&self, p: &mut Text, name: &str, labels: &[(&str, &str)]);
    /// One number for a summary: the value, the sum over a family's labels, or a
    /// histogram's count.
    fn total(&self) -> u64;
    /// `(label value, total)` for each value of a family's label; `None` for a metric
    /// without one.
    fn by_label(&self) -> Option<Vec<(&'static str, u64)>> {
        None
    }
}

/// A counter's or gauge's reading.
impl Reading for u64 {
    fn merge(&mut self, other: &u64) {
        *self = self.wrapping_add(*other);
    }

    fn write_samples(&self, p: &mut Text, name: &str, labels: &[(&str, &str)]) {
        p.sample(name, labels, self);
    }

    fn total(&self) -> u64 {
        *self
    }
}
