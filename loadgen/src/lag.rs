//! How far a worker has fallen behind its own sockets, so that its timeouts measure the
//! server and not the load generator. Sans-IO.
//!
//! A poll that returns a full batch of events leaves more waiting in the kernel: answers
//! the worker has not read yet. Until a poll returns less than a full batch, the worker is
//! *behind*, and that time is its lag. A LOGIN_OK sitting unread in a socket while the
//! worker works through a backlog is not a slow server: the deadline of every connection's
//! current phase (connect, login, backoff, …) is pushed back by the lag that accrued since
//! it was set ([`Lag::shift`]). Without this, a worker that fell behind its
//! `--connect-rate` timed out connections whose answers had long arrived, and a login storm
//! measured the load generator's collapse instead of the gateway's.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct Lag {
    /// Lag accrued up to `last`.
    total: Duration,
    /// When the last poll returned.
    last: Option<Instant>,
    /// Whether the last poll returned a full batch (more events were waiting).
    behind: bool,
}

impl Lag {
    pub(crate) fn new() -> Lag {
        Lag::default()
    }

    /// A poll returned at `now`; `saturated` when it filled the whole events buffer. The
    /// time since the previous poll counts as lag if that one was saturated.
    pub(crate) fn polled(&mut self, now: Instant, saturated: bool) {
        if let (true, Some(last)) = (self.behind, self.last) {
            self.total += now.saturating_duration_since(last);
        }
        self.last = Some(now);
        self.behind = saturated;
    }

    /// The lag accrued by `now`, including the current stretch if the worker is behind.
    pub(crate) fn total(&self, now: Instant) -> Duration {
        match (self.behind, self.last) {
            (true, Some(last)) => self.total + now.saturating_duration_since(last),
            _ => self.total,
        }
    }

    /// When a deadline set for `at`, while the lag was `then`, falls due now that the lag
    /// has grown to its value at `now`: `at` plus the lag accrued in between.
    pub(crate) fn shift(&self, at: Instant, then: Duration, now: Instant) -> Instant {
        at + self.total(now).saturating_sub(then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn only_time_after_a_full_batch_counts() {
        let t0 = Instant::now();
        let mut lag = Lag::new();
        lag.polled(t0, false);
        lag.polled(t0 + ms(100), false);
        assert_eq!(lag.total(t0 + ms(150)), Duration::ZERO);
        // A full batch at 100 ms: behind until a poll returns short.
        lag.polled(t0 + ms(200), true);
        assert_eq!(
            lag.total(t0 + ms(250)),
            ms(50),
            "the current stretch counts"
        );
        lag.polled(t0 + ms(300), true);
        lag.polled(t0 + ms(400), false);
        assert_eq!(lag.total(t0 + ms(400)), ms(200));
        assert_eq!(lag.total(t0 + ms(900)), ms(200), "caught up: no more lag");
    }

    #[test]
    fn a_deadline_moves_by_the_lag_accrued_since_it_was_set() {
        let t0 = Instant::now();
        let mut lag = Lag::new();
        lag.polled(t0, false);
        // Set at 0 ms for 1,000 ms, while no lag had accrued.
        let (at, then) = (t0 + ms(1000), lag.total(t0));
        lag.polled(t0 + ms(500), true);
        lag.polled(t0 + ms(1100), false);
        // 600 ms behind: due at 1,600 ms, not at 1,000 ms.
        assert_eq!(lag.shift(at, then, t0 + ms(1100)), t0 + ms(1600));
        // A deadline set after that stretch does not move.
        let then = lag.total(t0 + ms(1100));
        assert_eq!(lag.shift(at, then, t0 + ms(1200)), at);
    }
}
