//! A family: one metric per value of a label, in one array indexed by the label's position.
//!
//! `Family<CloseReason>` is a counter per close reason; `Family<Endpoint, Family<Class>>` a
//! counter per endpoint and status class; `Family<Endpoint, Histogram<B>>` a histogram per
//! endpoint. Counting is an index into an inline array, then the metric's own bump: no lock,
//! no allocation, no hashing.

use std::fmt;

use super::{Counter, Gauge, LabelSet, Metric, Reading};
use crate::prometheus::Text;

/// One `M` per value of the label `L`.
pub struct Family<L: LabelSet, M = Counter> {
    values: L::Array<M>,
}

impl<L: LabelSet, M: Default> Default for Family<L, M> {
    fn default() -> Self {
        Family {
            values: L::array(|_| M::default()),
        }
    }
}

impl<L: LabelSet, M> Family<L, M> {
    /// The metric for `label`.
    #[inline]
    pub fn get(&self, label: L::Label) -> &M {
        &self.values.as_ref()[L::index(label)]
    }
}

impl<L: LabelSet> Family<L, Counter> {
    /// Adds one to `label`'s counter. Single writer only.
    #[inline]
    pub fn inc(&self, label: L::Label) {
        self.get(label).inc();
    }

    /// Adds `n` to `label`'s counter. Single writer only.
    #[inline]
    pub fn add(&self, label: L::Label, n: u64) {
        self.get(label).add(n);
    }

    /// Adds one with an atomic read-modify-write, for a family several threads write.
    #[inline]
    pub fn inc_shared(&self, label: L::Label) {
        self.get(label).inc_shared();
    }

    /// `label`'s count.
    pub fn value(&self, label: L::Label) -> u64 {
        self.get(label).get()
    }

    /// The sum over every label (wrapping).
    pub fn total(&self) -> u64 {
        self.values
            .as_ref()
            .iter()
            .fold(0u64, |a, c| a.wrapping_add(c.get()))
    }
}

impl<L: LabelSet> Family<L, Gauge> {
    /// Sets `label`'s gauge.
    #[inline]
    pub fn set(&self, label: L::Label, n: u64) {
        self.get(label).set(n);
    }
}

impl<L: LabelSet, M: fmt::Debug> fmt::Debug for Family<L, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_map::<L, M>(f, self.values.as_ref())
    }
}

impl<L: LabelSet, M: Metric> Metric for Family<L, M> {
    const KIND: &'static str = M::KIND;
    type Snapshot = FamilySnapshot<L, M::Snapshot>;

    fn snapshot(&self) -> Self::Snapshot {
        let values = self.values.as_ref();
        FamilySnapshot {
            values: L::array(|i| values[i].snapshot()),
        }
    }
}

/// A [`Family`]'s readings, one per label value.
pub struct FamilySnapshot<L: LabelSet, S = u64> {
    values: L::Array<S>,
}

impl<L: LabelSet, S> FamilySnapshot<L, S> {
    /// A snapshot with `f(label)` for each label.
    pub fn from_fn(mut f: impl FnMut(L::Label) -> S) -> Self {
        FamilySnapshot {
            values: L::array(|i| f(L::ALL[i])),
        }
    }

    /// The reading for `label`.
    pub fn get(&self, label: L::Label) -> &S {
        &self.values.as_ref()[L::index(label)]
    }

    /// Every label with its reading, in page order.
    pub fn iter(&self) -> impl Iterator<Item = (L::Label, &S)> + '_ {
        L::ALL.iter().copied().zip(self.values.as_ref())
    }
}

impl<L: LabelSet, S: Reading> FamilySnapshot<L, S> {
    /// The sum over every label (wrapping).
    pub fn total(&self) -> u64 {
        self.values
            .as_ref()
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.total()))
    }
}

impl<L: LabelSet, S: Reading> Reading for FamilySnapshot<L, S> {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.values.as_mut().iter_mut().zip(other.values.as_ref()) {
            a.merge(b);
        }
    }

    fn write_samples(&self, p: &mut Text, name: &str, labels: &[(&str, &str)]) {
        for (label, s) in self.iter() {
            let mut inner = labels.to_vec();
            inner.push((L::NAME, L::label(label)));
            s.write_samples(p, name, &inner);
        }
    }

    fn total(&self) -> u64 {
        FamilySnapshot::total(self)
    }

    fn by_label(&self) -> Option<Vec<(&'static str, u64)>> {
        Some(self.iter().map(|(l, s)| (L::label(l), s.total())).collect())
    }
}

impl<L: LabelSet, S: Default> Default for FamilySnapshot<L, S> {
    fn default() -> Self {
        FamilySnapshot {
            values: L::array(|_| S::default()),
        }
    }
}

impl<L: LabelSet, S: Clone> Clone for FamilySnapshot<L, S> {
    fn clone(&self) -> Self {
        let values = self.values.as_ref();
        FamilySnapshot {
            values: L::array(|i| values[i].clone()),
        }
    }
}

impl<L: LabelSet, S: PartialEq> PartialEq for FamilySnapshot<L, S> {
    fn eq(&self, other: &Self) -> bool {
        self.values.as_ref() == other.values.as_ref()
    }
}

impl<L: LabelSet, S: Eq> Eq for FamilySnapshot<L, S> {}

impl<L: LabelSet, S: fmt::Debug> fmt::Debug for FamilySnapshot<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_map::<L, S>(f, self.values.as_ref())
    }
}

/// `label: value` for each label.
fn debug_map<L: LabelSet, T: fmt::Debug>(f: &mut fmt::Formatter<'_>, values: &[T]) -> fmt::Result {
    f.debug_map()
        .entries(L::ALL.iter().map(|&l| L::label(l)).zip(values))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels::tests::Colour;

    crate::label_set! {
        /// Test labels.
        enum Class: "class" {
            Ok = "2xx",
            Bad = "5xx",
        }
    }

    #[test]
    fn counts_by_label_and_reads_back() {
        let f: Family<Colour> = Family::default();
        f.inc(Colour::Blue);
        f.add(Colour::Blue, 4);
        f.inc_shared(Colour::Red);
        assert_eq!(f.value(Colour::Red), 1);
        assert_eq!(f.value(Colour::Blue), 5);
        assert_eq!(f.total(), 6);
        let s = f.snapshot();
        assert_eq!(*s.get(Colour::Blue), 5);
        assert_eq!(s.total(), 6);
        let by_label = vec![("red", 1), ("green", 0), ("blue", 5)];
        assert_eq!(s.by_label(), Some(by_label));
        let mut sum = s.clone();
        sum.merge(&s);
        assert_eq!(
            sum,
            FamilySnapshot::from_fn(|c: Colour| [2, 0, 10][c.index()])
        );
        let debug = "{\"red\": Counter(1), \"green\": Counter(0), \"blue\": Counter(5)}";
        assert_eq!(format!("{f:?}"), debug);
    }

    #[test]
    fn nested_families_print_outer_label_first() {
        let f: Family<Class, Family<Colour>> = Family::default();
        f.get(Class::Ok).inc(Colour::Green);
        f.get(Class::Bad).add(Colour::Red, 3);
        let s = f.snapshot();
        assert_eq!(s.total(), 4);
        let mut p = Text::new("t_", 256);
        s.write_samples(&mut p, "x_total", &[("k", "v")]);
        assert_eq!(
            p.finish(),
            "t_x_total{k=\"v\",class=\"2xx\",colour=\"red\"} 0\n\
             t_x_total{k=\"v\",class=\"2xx\",colour=\"green\"} 1\n\
             t_x_total{k=\"v\",class=\"2xx\",colour=\"blue\"} 0\n\
             t_x_total{k=\"v\",class=\"5xx\",colour=\"red\"} 3\n\
             t_x_total{k=\"v\",class=\"5xx\",colour=\"green\"} 0\n\
             t_x_total{k=\"v\",class=\"5xx\",colour=\"blue\"} 0\n"
        );
    }

    #[test]
    fn gauges_are_set() {
        let f: Family<Colour, Gauge> = Family::default();
        f.set(Colour::Green, 7);
        f.set(Colour::Green, 3);
        assert_eq!(*f.snapshot().get(Colour::Green), 3);
        assert_eq!(<Family<Colour, Gauge> as Metric>::KIND, "gauge");
    }
}
