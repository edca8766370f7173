//! The metrics every daemon keeps, declared once and printed by [`crate::prometheus::Text`].
//!
//! Storage, from the data path's side:
//!
//! - [`Counter`]: a `u64` that only goes up. One writer bumps it with a relaxed load and
//!   store (no locked read-modify-write); a counter several threads write uses the `_shared`
//!   methods (`fetch_add`).
//! - [`Gauge`]: a `u64` that is set, or moved up and down.
//! - [`Family`]: one counter (or gauge, or histogram) per value of a label, indexed by a
//!   [`LabelSet`] declared with [`label_set!`](crate::label_set): an enum whose variants are
//!   the label's values, spelled once.
//! - [`Histogram`]: fixed, explicit buckets declared with [`buckets!`](crate::buckets) in the
//!   unit the data path records ([`Micros`], [`Nanos`]); printed in seconds.
//! - [`Sharded`]: one copy of a set per thread group, for counters every worker thread of a
//!   pool bumps.
//! - [`Derived`]: a page entry no writer bumps, filled in when a snapshot is taken.
//!
//! Each daemon declares its families once, in page order, with
//! [`metric_set!`](crate::metric_set): name, help, labels, and (for the gateway's `/stats`)
//! a JSON key. The macro writes the struct the writers bump, its snapshot (every value read
//! once, relaxed), the snapshot's `merge` (summing reactors or shards) and the Prometheus
//! text of every family, in declaration order. No label is per connection.
//!
//! Every value is read with relaxed loads: a reader may see one counter a few increments
//! ahead of another, and every value is exact once the writers are quiet.

mod buckets;
mod derived;
mod family;
mod histogram;
mod labels;
mod metric;
mod scalar;
mod set;
mod sharded;

pub use buckets::{Buckets, Micros, Nanos, Unit};
pub use derived::Derived;
pub use family::{Family, FamilySnapshot};
pub use histogram::{Histogram, HistogramSnapshot};
pub use labels::LabelSet;
pub use metric::{Metric, Reading};
pub use scalar::{Counter, CounterKind, Gauge, GaugeKind, Kind, Scalar};
pub use sharded::Sharded;
