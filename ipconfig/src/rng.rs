//! A small, fast, non-cryptographic random number generator (wyrand), seeded with splitmix64.
//!
//! `/ip_list` shuffles tied gateways on every request; that needs a few random numbers per
//! request, from a generator each worker thread owns, and nothing more. The shuffle is about
//! spreading load, not secrecy: a client that predicts it gains nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// wyrand: 64 bits of state, one multiply per number, passes BigCrush and PractRand.
#[derive(Debug, Clone)]
pub(crate) struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator whose sequence is fixed by `seed` (tests).
    pub(crate) fn seeded(seed: u64) -> WyRand {
        WyRand {
            state: splitmix64(seed),
        }
    }

    /// A generator seeded from the clock, a process-wide counter and a stack address, so
    /// that two threads (or two processes) started at the same instant still differ.
    pub(crate) fn from_entropy() -> WyRand {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let local = 0u8;
        let address = std::ptr::addr_of!(local) as u64;
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let seed =
            nanos ^ address.rotate_left(32) ^ splitmix64(count ^ u64::from(std::process::id()));
        WyRand::seeded(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A number in `0..n` (`n` > 0), by Lemire's multiply-shift. Its bias is at most n / 2^64,
    /// far below anything a test (or a herd of clients) could see for the small n used here.
    #[inline]
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u32
    }
}

/// splitmix64's output function: spreads a poor seed (a counter, a clock) over all 64 bits.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_differ_by_seed() {
        let (mut a, mut b, mut c) = (WyRand::seeded(1), WyRand::seeded(1), WyRand::seeded(2));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_ne!(
            WyRand::from_entropy().next_u64(),
            WyRand::from_entropy().next_u64()
        );
    }

    #[test]
    fn below_stays_in_range_and_is_roughly_uniform() {
        let mut rng = WyRand::seeded(7);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            let x = rng.below(6);
            counts[x as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(rng.below(1), 0);
    }
}
