//! A tiny, hand-written PRNG (splitmix64) for the balancers that pick at random.
//!
//! Balancing needs speed and a fair spread, not cryptographic strength, and it must be
//! reproducible from a seed so tests and reactors can be replayed. splitmix64 passes BigCrush,
//! is one add and one [`mix64`] per number, and accepts any seed, including 0.

use super::mix64;

/// splitmix64: a 64-bit counter stepped by the golden-ratio constant, finalized by [`mix64`].
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift: the bias is at most
    /// `n / 2^64`, far below anything measurable for a list of nodes.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        // `wide >> 64` is < n, which fits in usize.
        usize::try_from(wide >> 64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_below_stays_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for n in 0..1000usize {
            assert_eq!(a.next_u64(), b.next_u64());
            let x = a.below(n);
            assert_eq!(x, b.below(n));
            assert!(x < n.max(1));
        }
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of splitmix64 seeded with 0 (the reference C implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }
}
