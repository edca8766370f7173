//! Per-connection rate limiting: a token bucket small enough to live in every connection.
//!
//! Sans-IO: the reactor passes its own clock (u32 milliseconds since the reactor started) and
//! the current limits on every call, so the bucket stores only what changes per connection —
//! the tokens left and when they were last refilled, 8 bytes in all — and a SIGHUP that
//! changes `rate_per_s` or `burst` takes effect on the next frame of every connection.
//!
//! A refused frame is answered with `ERROR RATE_LIMITED` by the caller; the connection stays.

/// A token bucket small enough to live in every connection (8 bytes): `tokens` as f32 and the last refill time as u32 milliseconds on the reactor's clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokenBucket {
    /// Tokens available, in `0.0..=burst`; fractional tokens carry over between calls.
    tokens: f32,
    /// Reactor clock (ms, wrapping) of the last refill.
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket at time `now_ms`.
    pub(crate) fn full(burst: u32, now_ms: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            last_ms: now_ms,
        }
    }

    /// Refills at `rate_per_s` up to `burst` for the time since the last call, then takes one token if there is one.
    /// Handles `now_ms` going backwards or wrapping (u32 ms wraps after 49 days) without panicking or granting a flood.
    ///
    /// Elapsed time is `now_ms - last` in wrapping arithmetic, so the 49-day wrap is seamless.
    /// A difference of 2^31 ms (24.8 days) or more is read as the clock having gone backwards:
    /// nothing is refilled and the bucket re-anchors at `now_ms`. Whatever the clock does, the
    /// bucket never holds more than `burst` tokens, so at most `burst` frames pass at once.
    pub(crate) fn allow(&mut self, now_ms: u32, rate_per_s: u32, burst: u32) -> bool {
        let elapsed_ms = now_ms.wrapping_sub(self.last_ms);
        self.last_ms = now_ms;
        let refill = if elapsed_ms < 1 << 31 {
            f64::from(elapsed_ms) * f64::from(rate_per_s) / 1000.0
        } else {
            0.0
        };
        // At most 2^31 * 2^32 / 1000: finite in f64; `min` also clamps a lowered `burst`.
        let tokens = (f64::from(self.tokens) + refill).min(f64::from(burst));
        // `tokens` is never NaN (both operands are finite), but stay safe if it were.
        let tokens = if tokens.is_finite() {
            tokens.max(0.0)
        } else {
            0.0
        };
        if tokens >= 1.0 {
            self.tokens = (tokens - 1.0) as f32;
            true
        } else {
            self.tokens = tokens as f32;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How many of `n` frames at time `now` pass.
    fn passes(b: &mut TokenBucket, now: u32, n: u32, rate: u32, burst: u32) -> u32 {
        (0..n).filter(|_| b.allow(now, rate, burst)).count() as u32
    }

    #[test]
    fn fits_in_eight_bytes() {
        assert!(std::mem::size_of::<TokenBucket>() <= 8);
    }

    #[test]
    fn full_bucket_allows_burst_then_refuses() {
        let mut b = TokenBucket::full(50, 1_000);
        assert_eq!(passes(&mut b, 1_000, 200, 100, 50), 50);
        assert!(!b.allow(1_000, 100, 50));
    }

    #[test]
    fn refills_at_rate_up_to_burst() {
        let mut b = TokenBucket::full(200, 0);
        assert_eq!(passes(&mut b, 0, 1_000, 100, 200), 200);
        // One second at 100/s: 100 more, not more.
        assert_eq!(passes(&mut b, 1_000, 1_000, 100, 200), 100);
        // Ten seconds at 100/s would be 1,000, but the bucket holds only `burst`.
        assert_eq!(passes(&mut b, 11_000, 5_000, 100, 200), 200);
    }

    #[test]
    fn fractional_refill_accumulates() {
        // 10/s with a frame attempted every millisecond: exactly one frame per 100 ms.
        let mut b = TokenBucket::full(1, 0);
        let passed = (0..=10_000u32).filter(|&t| b.allow(t, 10, 1)).count();
        assert!((100..=102).contains(&passed), "{passed}");
    }

    #[test]
    fn rate_zero_never_refills() {
        let mut b = TokenBucket::full(5, 0);
        assert_eq!(passes(&mut b, 0, 10, 0, 5), 5);
        assert_eq!(passes(&mut b, 1_000_000, 10, 0, 5), 0);
        assert_eq!(passes(&mut b, u32::MAX, 10, 0, 5), 0);
    }

    #[test]
    fn default_bucket_is_empty() {
        let mut b = TokenBucket::default();
        assert!(!b.allow(0, 100, 10));
        assert!(b.allow(10, 100, 10)); // 10 ms at 100/s = 1 token
    }

    #[test]
    fn burst_zero_allows_nothing() {
        let mut b = TokenBucket::full(0, 0);
        assert_eq!(passes(&mut b, 0, 10, 1_000, 0), 0);
        assert_eq!(passes(&mut b, 60_000, 10, 1_000, 0), 0);
    }

    #[test]
    fn lowering_burst_clamps_the_bucket() {
        let mut b = TokenBucket::full(1_000, 0);
        assert_eq!(passes(&mut b, 0, 2_000, 0, 10), 10);
    }

    #[test]
    fn clock_wrap_refills_normally() {
        let start = u32::MAX - 499;
        let mut b = TokenBucket::full(100, start);
        assert_eq!(passes(&mut b, start, 1_000, 100, 100), 100);
        // 1 s later the u32 clock has wrapped to 500.
        assert_eq!(passes(&mut b, 500, 1_000, 100, 100), 100);
    }

    #[test]
    fn clock_going_backwards_grants_nothing() {
        let mut b = TokenBucket::full(10, 5_000);
        assert_eq!(passes(&mut b, 5_000, 100, 1_000, 10), 10);
        assert_eq!(passes(&mut b, 4_000, 100, 1_000, 10), 0);
        assert_eq!(passes(&mut b, 0, 100, u32::MAX, 10), 0);
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        let mut b = TokenBucket::full(u32::MAX, 0);
        assert!(b.allow(u32::MAX / 2, u32::MAX, u32::MAX));
        assert!(b.allow(0, u32::MAX, u32::MAX));
        let mut b = TokenBucket::full(u32::MAX, u32::MAX);
        assert!(b.allow(0, 1, 1));
    }

    proptest! {
        #[test]
        fn prop_never_more_than_burst_plus_refill(
            burst in 0u32..1_000,
            rate in 0u32..10_000,
            start in any::<u32>(),
            steps in proptest::collection::vec((0u32..2_000, 0u32..50), 1..50),
        ) {
            // Frames passed over a run never exceed burst + rate * elapsed (+1 for rounding).
            let mut b = TokenBucket::full(burst, start);
            let mut now = start;
            let mut elapsed_ms = 0u64;
            let mut passed = 0u64;
            for (dt, frames) in steps {
                now = now.wrapping_add(dt);
                elapsed_ms += u64::from(dt);
                passed += u64::from(passes(&mut b, now, frames, rate, burst));
            }
            let limit = u64::from(burst) + u64::from(rate) * elapsed_ms / 1000 + 1;
            prop_assert!(passed <= limit, "{} > {}", passed, limit);
        }

        #[test]
        fn prop_arbitrary_calls_never_panic(
            calls in proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..100),
            burst in any::<u32>(),
            start in any::<u32>(),
        ) {
            let mut b = TokenBucket::full(burst, start);
            for (now, rate, burst) in calls {
                b.allow(now, rate, burst);
                prop_assert!(b.tokens.is_finite() && b.tokens >= 0.0);
            }
        }
    }
}
