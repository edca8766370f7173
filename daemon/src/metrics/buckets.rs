//! A histogram's buckets: their upper bounds in the unit the data path records, declared once
//! with [`buckets!`](crate::buckets), and printed in seconds.

use std::fmt;

/// The unit a histogram records in. Prometheus wants seconds; the data path counts whole
/// microseconds or nanoseconds, and the page divides.
pub trait Unit: 'static {
    /// Units in one second.
    const PER_SECOND: f64;
}

/// Microseconds (the gateway's request latency).
#[derive(Debug, Clone, Copy)]
pub enum Micros {}

/// Nanoseconds (ipconfig's handler time).
#[derive(Debug, Clone, Copy)]
pub enum Nanos {}

impl Unit for Micros {
    const PER_SECOND: f64 = 1_000_000.0;
}

impl Unit for Nanos {
    const PER_SECOND: f64 = 1_000_000_000.0;
}

/// A histogram's bucket bounds. Implemented by [`buckets!`](crate::buckets).
///
/// Contract: `BOUNDS` ascend; `Slots<T>` holds `BOUNDS.len() + 1` elements (the last one for
/// `+Inf`).
pub trait Buckets: 'static {
    /// What a recorded value counts.
    type Unit: Unit;
    /// Upper bounds (Prometheus `le`, inclusive), ascending, in [`Buckets::Unit`]; `+Inf` is
    /// implicit.
    const BOUNDS: &'static [u64];
    /// One `T` per bucket, then one for `+Inf`.
    type Slots<T>: AsRef<[T]> + AsMut<[T]>;

    /// Slots with `f(i)` at index `i`.
    fn slots<T>(f: impl FnMut(usize) -> T) -> Self::Slots<T>;

    /// The slot counting `value`: the first bucket whose bound is `>= value`, or `+Inf`'s.
    #[inline]
    fn slot(value: u64) -> usize {
        Self::BOUNDS.partition_point(|&bound| bound < value)
    }

    /// Bucket `i`'s `le` label: the bound in seconds, or `+Inf`.
    fn le(i: usize) -> String {
        match Self::BOUNDS.get(i) {
            Some(&bound) => seconds::<Self::Unit>(bound).to_string(),
            None => "+Inf".to_string(),
        }
    }
}

/// `value` units in seconds. Both operands are exact and the division is correctly rounded,
/// so a bound of 50 µs prints as `0.00005`, like the literal.
pub(super) fn seconds<U: Unit>(value: u64) -> f64 {
    value as f64 / U::PER_SECOND
}

/// Declares a bucket set: a marker type implementing [`Buckets`].
///
/// ```
/// tether_daemon::buckets! {
///     /// Request latency: 50 µs … 1 ms.
///     pub enum Latency: Micros = [50, 100, 250, 500, 1_000];
/// }
/// use tether_daemon::metrics::Buckets;
/// assert_eq!(Latency::BOUNDS.len(), 5);
/// assert_eq!(Latency::le(0), "0.00005");
/// assert_eq!(Latency::le(5), "+Inf");
/// ```
#[macro_export]
macro_rules! buckets {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Name:ident : $Unit:ident = [ $($bound:expr),+ $(,)? ];
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis enum $Name {}

        impl $Name {
            /// Histogram slots: one per bucket, then `+Inf`.
            $vis const SLOTS: usize = [$($bound),+].len() + 1;
        }

        impl $crate::metrics::Buckets for $Name {
            type Unit = $crate::metrics::$Unit;
            const BOUNDS: &'static [u64] = &[$($bound),+];
            type Slots<T> = [T; $Name::SLOTS];

            fn slots<T>(f: impl FnMut(usize) -> T) -> [T; $Name::SLOTS] {
                ::std::array::from_fn(f)
            }
        }
    };
}

/// Debug-prints a bucket set's slots as `le → count`.
pub(super) fn debug_slots<B: Buckets>(f: &mut fmt::Formatter<'_>, counts: &[u64]) -> fmt::Result {
    f.debug_map()
        .entries(counts.iter().enumerate().map(|(i, n)| (B::le(i), n)))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::buckets! {
        /// Test buckets.
        enum Us: Micros = [50, 100, 250, 500, 1_000, 2_500, 5_000_000];
    }
    crate::buckets! {
        /// Test buckets.
        enum Ns: Nanos = [1_000, 2_500, 1_000_000_000];
    }

    #[test]
    fn slots_are_le_inclusive_with_an_overflow() {
        assert_eq!(Us::SLOTS, 8);
        assert_eq!(Us::slot(0), 0);
        assert_eq!(Us::slot(50), 0);
        assert_eq!(Us::slot(51), 1);
        assert_eq!(Us::slot(5_000_000), 6);
        assert_eq!(Us::slot(5_000_001), 7);
        assert!(Us::BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bounds_print_in_seconds_like_the_literals() {
        let printed: Vec<String> = (0..Us::SLOTS).map(Us::le).collect();
        assert_eq!(
            printed,
            ["0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "5", "+Inf"]
        );
        let printed: Vec<String> = (0..Ns::SLOTS).map(Ns::le).collect();
        assert_eq!(printed, ["0.000001", "0.0000025", "1", "+Inf"]);
    }
}
