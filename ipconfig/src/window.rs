//! The last few reports of one gateway, reduced to what scoring needs (sans-IO).
//!
//! Each report becomes a [`Sample`]: spare bandwidth and spare connections. A [`Window`]
//! keeps the newest `capacity` samples and averages them over the samples it actually holds
//! — plato divided by the window size even when fewer samples existed, which made every new
//! gateway look idle-but-slow for its first seconds.

use std::collections::VecDeque;

use crate::report::Report;

/// One report, as scoring sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Bandwidth left, bytes/s: capacity − in − out, never below 0.
    pub spare_bandwidth: f64,
    /// Connections left: max − current, never below 0.
    pub spare_connections: u64,
}

impl Sample {
    pub fn new(spare_bandwidth: f64, spare_connections: u64) -> Sample {
        Sample {
            spare_bandwidth,
            spare_connections,
        }
    }

    /// What a report leaves. A gateway over its bandwidth or its connection limit (a reload
    /// may lower the limit below what is open) has 0 left, not a negative amount.
    pub fn from_report(r: &Report) -> Sample {
        let spare = r.bandwidth_bytes_per_s - r.bytes_in_per_s - r.bytes_out_per_s;
        Sample {
            spare_bandwidth: if spare.is_finite() {
                spare.max(0.0)
            } else {
                0.0
            },
            spare_connections: r.max_connections.saturating_sub(r.connections),
        }
    }
}

/// The means of a window's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mean {
    /// Mean spare bandwidth, bytes/s.
    pub spare_bandwidth: f64,
    /// Mean spare connections.
    pub spare_connections: f64,
}

/// The newest `capacity` samples of one gateway, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl Window {
    /// An empty window keeping up to `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Window {
        let capacity = capacity.max(1);
        Window {
            capacity,
            samples: VecDeque::with_capacity(capacity),
        }
    }

    /// Adds the newest sample, forgetting the oldest when full.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// The means over the samples present (not over `capacity`); `None` when empty.
    pub fn mean(&self) -> Option<Mean> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let bandwidth: f64 = self.samples.iter().map(|s| s.spare_bandwidth).sum();
        // Each is at most 2^40 and there are at most a few hundred: the sum fits easily.
        let connections: u128 = self
            .samples
            .iter()
            .map(|s| u128::from(s.spare_connections))
            .sum();
        Some(Mean {
            spare_bandwidth: bandwidth / n as f64,
            spare_connections: connections as f64 / n as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(capacity: usize, samples: &[(f64, u64)]) -> Window {
        let mut w = Window::new(capacity);
        for &(b, c) in samples {
            w.push(Sample::new(b, c));
        }
        w
    }

    /// Table: (capacity, samples pushed, expected mean bandwidth, expected mean connections).
    #[test]
    fn means_divide_by_the_samples_present() {
        /// (capacity, samples, expected means)
        type Case<'a> = (usize, &'a [(f64, u64)], Option<(f64, f64)>);
        let cases: &[Case] = &[
            (5, &[], None),
            (5, &[(10.0, 100)], Some((10.0, 100.0))),
            (5, &[(10.0, 100), (20.0, 200)], Some((15.0, 150.0))),
            (5, &[(3.0, 1), (3.0, 2), (3.0, 4)], Some((3.0, 7.0 / 3.0))),
            (
                5,
                &[(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4), (5.0, 5)],
                Some((3.0, 3.0)),
            ),
            // The sixth push forgets the first: mean of 2..=6.
            (
                5,
                &[(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4), (5.0, 5), (6.0, 6)],
                Some((4.0, 4.0)),
            ),
            (1, &[(1.0, 1), (9.0, 9)], Some((9.0, 9.0))),
            (2, &[(0.0, 0), (0.0, 0), (8.0, 8)], Some((4.0, 4.0))),
        ];
        for (i, (capacity, samples, want)) in cases.iter().enumerate() {
            let w = window(*capacity, samples);
            assert_eq!(w.len(), samples.len().min(*capacity), "case {i}");
            let got = w.mean().map(|m| (m.spare_bandwidth, m.spare_connections));
            assert_eq!(got, *want, "case {i}");
        }
    }

    #[test]
    fn a_sample_never_goes_negative() {
        let report = |conns, max, bw_in, bw_out, cap| Report {
            id: "g".into(),
            addr: "h:1".into(),
            connections: conns,
            max_connections: max,
            bytes_in_per_s: bw_in,
            bytes_out_per_s: bw_out,
            bandwidth_bytes_per_s: cap,
            cpu: 0.0,
            draining: false,
            transports: Default::default(),
        };
        assert_eq!(
            Sample::from_report(&report(10, 100, 100.0, 200.0, 1000.0)),
            Sample::new(700.0, 90)
        );
        assert_eq!(
            Sample::from_report(&report(150, 100, 900.0, 900.0, 1000.0)),
            Sample::new(0.0, 0)
        );
    }

    #[test]
    fn capacity_zero_means_one_and_clear_empties() {
        let mut w = window(0, &[(1.0, 1), (2.0, 2)]);
        assert_eq!(w.capacity(), 1);
        assert_eq!(w.latest(), Some(&Sample::new(2.0, 2)));
        w.clear();
        assert!(w.is_empty());
        assert_eq!(w.mean(), None);
    }
}
