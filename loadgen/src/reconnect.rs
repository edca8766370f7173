//! The reconnect policy, sans-IO: how long a connection told GOAWAY waits for the replies
//! still due on the old socket, and how long it backs off between attempts to get back (an
//! `/ip_list` that lists only the gateway that is going away, no listed gateway reachable,
//! a login refused or answered UNAVAILABLE).
//!
//! A connection told GOAWAY stops sending DATA, waits up to [`LEAVE_WAIT`] for its
//! outstanding replies (the gateway keeps serving while it drains, so normally all come),
//! closes, asks `/ip_list` again (or takes the next `--target`), skips the gateway that
//! said GOAWAY while another one is listed, connects and RESUMEs. Replies still missing
//! when it closes are counted as `goaway_unanswered`, not re-sent. The whole reconnect
//! must finish within `--reconnect-timeout`, or the connection counts as dropped.

use std::time::Duration;

/// How long replies outstanding on a connection told GOAWAY are awaited.
pub(crate) const LEAVE_WAIT: Duration = Duration::from_secs(1);
/// The first backoff.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest backoff.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// LOGIN or RESUME answered with an ERROR that keeps the connection (UNAVAILABLE: the
/// gateway's state link is down) is sent again this many times, after a backoff each.
pub(crate) const LOGIN_RETRIES: u32 = 8;

/// The wait before attempt `attempt + 1` (0-based): [`BACKOFF_MIN`] doubling up to
/// [`BACKOFF_MAX`], plus up to 50 % spread by `salt` (the connection index) so a crowd of
/// connections told GOAWAY at once does not come back in lockstep.
pub(crate) fn backoff(attempt: u32, salt: usize) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let spread = (salt % 16) as u32;
    base + base * spread / 32
}

/// `wait` spread over 0.5 to 1.5 times itself, by a hash of the connection and the attempt,
/// so that connections told the same hint do not all come back at once.
pub(crate) fn jittered(wait: Duration, salt: usize, attempt: u32) -> Duration {
    let mut h = (salt as u64) ^ (u64::from(attempt) << 40) ^ 0x9E37_79B9_7F4A_7C15;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    let permille = 500 + (h % 1001) as u32;
    wait * permille / 1000
}

/// How long connection `salt`, lost with its gateway, waits before getting back: spread
/// evenly over 0 to `spread` (`--reconnect-spread`), so a dead gateway's clients come back
/// at a rate the others can take instead of all at once.
pub(crate) fn spread_out(spread: Duration, salt: usize) -> Duration {
    jittered(spread, salt, u32::MAX).saturating_sub(spread / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_crowd_comes_back_spread_evenly() {
        let spread = Duration::from_secs(40);
        let waits: Vec<Duration> = (0..10_000).map(|i| spread_out(spread, i)).collect();
        assert!(waits.iter().all(|w| *w <= spread));
        let first_quarter = waits.iter().filter(|w| **w < spread / 4).count();
        assert!(
            (2_200..=2_800).contains(&first_quarter),
            "{first_quarter} of 10,000 in the first quarter"
        );
        assert_eq!(spread_out(Duration::ZERO, 7), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_a_hint_over_half_to_one_and_a_half_times() {
        let hint = Duration::from_millis(200);
        let waits: Vec<Duration> = (0..1000).map(|i| jittered(hint, i, 0)).collect();
        assert!(waits.iter().all(|w| *w >= hint / 2 && *w <= hint * 3 / 2));
        let early = waits.iter().filter(|w| **w < hint).count();
        assert!(
            (350..=650).contains(&early),
            "{early} of 1000 below the hint"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_a_bounded_spread() {
        assert_eq!(backoff(0, 0), Duration::from_millis(50));
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(backoff(3, 16), Duration::from_millis(400));
        assert_eq!(backoff(40, 0), BACKOFF_MAX);
        for salt in 0..64 {
            let b = backoff(2, salt);
            assert!(
                b >= Duration::from_millis(200) && b < Duration::from_millis(300),
                "{b:?}"
            );
        }
    }
}
