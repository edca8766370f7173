//! A page entry no writer bumps: its value is worked out when a snapshot is taken or a page
//! rendered (open connections from accepted and closed, say, or counts another struct keeps).

use std::fmt;
use std::marker::PhantomData;

use super::Metric;

/// Holds nothing (zero-sized); printed like an `M`. Its snapshot starts at zero and is filled
/// in by the [`metric_set!`](crate::metric_set) declaration's `derived by` function, or by
/// the code that renders the page.
pub struct Derived<M>(PhantomData<fn() -> M>);

impl<M> Default for Derived<M> {
    fn default() -> Self {
        Derived(PhantomData)
    }
}

impl<M> fmt::Debug for Derived<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Derived")
    }
}

impl<M: Metric> Metric for Derived<M> {
    const KIND: &'static str = M::KIND;
    type Snapshot = M::Snapshot;

    fn snapshot(&self) -> M::Snapshot {
        M::Snapshot::default()
    }
}
