//! A gateway's score and the order `/ip_list` ranks gateways in (sans-IO).
//!
//! - **dynamic**: mean spare bandwidth in GiB/s (capacity − in − out, / 2^30);
//! - **static**: mean spare connections (max − current).
//!
//! Both are means over the window's samples and both are rounded to two decimals, so that
//! the jitter of a busy gateway's traffic does not reorder gateways that are, for practical
//! purposes, equally loaded. A score is kept in hundredths (integers), so "equal after
//! rounding" is exact integer equality: the tie groups that get shuffled per request.
//!
//! Order: dynamic descending, then static descending.

use std::cmp::Ordering;

use crate::window::{Mean, Window};

/// Bytes in a GiB.
pub(crate) const GIB: f64 = (1u64 << 30) as f64;

/// A score rounded to hundredths. `Ord` is "better is greater": dynamic first, then static.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Score {
    /// Spare bandwidth, hundredths of GiB/s.
    dynamic_centi: i64,
    /// Spare connections, hundredths.
    static_centi: i64,
}

impl Score {
    /// The score of a window's means.
    pub fn from_mean(mean: Mean) -> Score {
        Score {
            dynamic_centi: centi(mean.spare_bandwidth / GIB),
            static_centi: centi(mean.spare_connections),
        }
    }

    /// The score of a window; `None` for an empty one.
    pub fn of(window: &Window) -> Option<Score> {
        window.mean().map(Score::from_mean)
    }

    /// A score from already rounded values (tests, docs).
    pub fn from_centi(dynamic_centi: i64, static_centi: i64) -> Score {
        Score {
            dynamic_centi,
            static_centi,
        }
    }

    /// Spare bandwidth, GiB/s, two decimals.
    pub fn dynamic(&self) -> f64 {
        self.dynamic_centi as f64 / 100.0
    }

    /// Spare connections, two decimals.
    pub fn static_(&self) -> f64 {
        self.static_centi as f64 / 100.0
    }

    /// `(dynamic, static)` in hundredths.
    pub fn centi(&self) -> (i64, i64) {
        (self.dynamic_centi, self.static_centi)
    }

    /// Ranking order: the better score first.
    pub fn rank_cmp(&self, other: &Score) -> Ordering {
        other.cmp(self)
    }
}

/// `x` in hundredths, rounded half away from zero. Inputs are finite, ≥ 0 and far below
/// 2^53 / 100 (reports are range-checked), so the result is exact; anything else saturates
/// (`as` casts from f64 saturate, and NaN becomes 0).
fn centi(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Sample;

    fn score(samples: &[(f64, u64)]) -> Option<Score> {
        let mut w = Window::new(5);
        for &(b, c) in samples {
            w.push(Sample::new(b, c));
        }
        Score::of(&w)
    }

    /// Table: samples (spare bytes/s, spare connections) → (dynamic, static) in hundredths.
    #[test]
    fn scores_are_means_in_gib_rounded_to_hundredths() {
        /// (samples, expected (dynamic, static) in hundredths)
        type Case<'a> = (&'a [(f64, u64)], Option<(i64, i64)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[(GIB, 10)], Some((100, 1000))),
            // One sample of 2 GiB/s: 2.00, not plato's 2/5 = 0.40.
            (&[(2.0 * GIB, 5)], Some((200, 500))),
            (&[(GIB, 1), (2.0 * GIB, 2)], Some((150, 150))),
            // 1.125 GiB/s is exactly representable: rounds half away from zero to 1.13.
            (&[(1.125 * GIB, 0)], Some((113, 0))),
            (&[(1.124 * GIB, 0)], Some((112, 0))),
            (&[(0.004 * GIB, 0)], Some((0, 0))),
            // Means of 1, 2, 2 connections = 1.666… → 1.67.
            (&[(0.0, 1), (0.0, 2), (0.0, 2)], Some((0, 167))),
            (
                &[
                    (5.0 * GIB, 100),
                    (5.0 * GIB, 100),
                    (5.0 * GIB, 100),
                    (5.0 * GIB, 100),
                    (5.0 * GIB, 100),
                ],
                Some((500, 10_000)),
            ),
        ];
        for (i, (samples, want)) in cases.iter().enumerate() {
            assert_eq!(score(samples).map(|s| s.centi()), *want, "case {i}");
        }
    }

    #[test]
    fn jitter_below_half_a_hundredth_does_not_change_the_score() {
        let a = score(&[(3.0 * GIB, 7)]).unwrap();
        let b = score(&[(3.0 * GIB + 1_000_000.0, 7)]).unwrap(); // +1 MB/s ≈ 0.0009 GiB/s
        assert_eq!(a, b);
        assert_eq!(a.dynamic(), 3.0);
        assert_eq!(a.static_(), 7.0);
    }

    /// Table: pairs of (dynamic, static) in hundredths and which ranks first.
    #[test]
    fn dynamic_first_then_static_descending() {
        let cases = [
            ((200, 0), (100, 999_999), Ordering::Less),
            ((100, 5), (100, 4), Ordering::Less),
            ((100, 4), (100, 5), Ordering::Greater),
            ((100, 5), (100, 5), Ordering::Equal),
            ((0, 0), (1, 0), Ordering::Greater),
        ];
        for (a, b, want) in cases {
            let (a, b) = (Score::from_centi(a.0, a.1), Score::from_centi(b.0, b.1));
            assert_eq!(a.rank_cmp(&b), want, "{a:?} vs {b:?}");
        }
        let s = Score::from_centi(113, 250);
        assert_eq!((s.dynamic(), s.static_()), (1.13, 2.5));
    }
}
