//! Admission control for logins, sans-IO: how many LOGINs and RESUMEs one reactor has at the
//! state daemon (one reactor, one link), and the immediate, cheap refusal past the bound.
//!
//! A login storm that the daemon cannot keep up with otherwise queues on the link: every
//! login waits behind the others, clients time out after the work was done, retry, and add
//! to the queue — goodput collapses as offered load grows. Bounded, a login past the bound
//! is answered at once with BUSY and a hint of how long to wait (`retry_after_ms=N` at the
//! head of the reason), computed from how fast the daemon answered over the last second,
//! so the clients' retries spread out instead of piling up. The connection stays; the
//! client sends its LOGIN again after the hint (with jitter).

use std::time::{Duration, Instant};

/// The shortest and the longest hint given.
const MIN_HINT_MS: u64 = 50;
const MAX_HINT_MS: u64 = 5_000;

/// Logins of one reactor at the state daemon.
#[derive(Debug, Clone)]
pub(crate) struct LoginGate {
    limit: u32,
    inflight: u32,
    /// Answers since `window_start`, and over the last whole second.
    answered: u32,
    rate: u32,
    window_start: Option<Instant>,
}

impl LoginGate {
    pub(crate) fn new(limit: u32) -> LoginGate {
        LoginGate {
            limit,
            inflight: 0,
            answered: 0,
            rate: 0,
            window_start: None,
        }
    }

    pub(crate) fn set_limit(&mut self, limit: u32) {
        self.limit = limit;
    }

    /// Logins sent and not answered yet.
    #[cfg(test)]
    pub(crate) fn inflight(&self) -> u32 {
        self.inflight
    }

    /// A login wants to go to the daemon: `Ok` counts it in; `Err(ms)` refuses it, with
    /// the hint in milliseconds.
    pub(crate) fn enter(&mut self, now: Instant) -> Result<(), u64> {
        self.roll(now);
        if self.inflight < self.limit {
            self.inflight += 1;
            return Ok(());
        }
        // The queue ahead drains at about `rate` a second.
        let hint = match self.rate {
            0 => 1_000,
            rate => u64::from(self.inflight) * 1_000 / u64::from(rate),
        };
        Err(hint.clamp(MIN_HINT_MS, MAX_HINT_MS))
    }

    /// The daemon answered a login (LOGIN_OK or LOGIN_FAIL), whether or not its client
    /// is still there.
    pub(crate) fn answered(&mut self, now: Instant) {
        self.roll(now);
        self.inflight = self.inflight.saturating_sub(1);
        self.answered = self.answered.saturating_add(1);
    }

    /// The link went down: nothing is at the daemon any more.
    pub(crate) fn reset(&mut self) {
        self.inflight = 0;
    }

    fn roll(&mut self, now: Instant) {
        match self.window_start {
            None => self.window_start = Some(now),
            Some(start) => {
                let elapsed = now.saturating_duration_since(start);
                if elapsed >= Duration::from_secs(1) {
                    // A second with no answers at all, or several: the rate is what the
                    // last window saw, per second.
                    let per_s =
                        u64::from(self.answered) * 1_000 / elapsed.as_millis().max(1) as u64;
                    self.rate = u32::try_from(per_s).unwrap_or(u32::MAX);
                    self.answered = 0;
                    self.window_start = Some(now);
                }
            }
        }
    }
}

/// The ERROR reason of a refused login: the hint first, then why.
pub(crate) fn busy_reason(hint_ms: u64) -> String {
    format!("retry_after_ms={hint_ms}; too many logins in flight")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_with_a_hint_from_the_answer_rate() {
        let t0 = Instant::now();
        let mut gate = LoginGate::new(4);
        for _ in 0..4 {
            assert_eq!(gate.enter(t0), Ok(()));
        }
        // Nothing answered yet: a second's hint.
        assert_eq!(gate.enter(t0), Err(1_000));
        // 200 answers in the first second (some for new logins), 4 in flight.
        for _ in 0..200 {
            gate.answered(t0 + Duration::from_millis(500));
            gate.enter(t0 + Duration::from_millis(500)).unwrap();
        }
        let t1 = t0 + Duration::from_millis(1_000);
        // 4 in flight at 200/s: 20 ms, raised to the minimum.
        assert_eq!(gate.enter(t1), Err(MIN_HINT_MS));
        assert_eq!(gate.inflight(), 4);
        gate.answered(t1);
        assert_eq!(gate.enter(t1), Ok(()));
    }

    #[test]
    fn a_slow_daemon_gives_longer_hints_capped() {
        let t0 = Instant::now();
        let mut gate = LoginGate::new(1_000);
        for _ in 0..1_000 {
            gate.enter(t0).unwrap();
        }
        for _ in 0..10 {
            gate.answered(t0 + Duration::from_millis(100));
            gate.enter(t0 + Duration::from_millis(100)).unwrap();
        }
        // 10/s with 1,000 waiting: 100 s, capped at 5 s.
        assert_eq!(
            gate.enter(t0 + Duration::from_millis(1_100)),
            Err(MAX_HINT_MS)
        );
        gate.reset();
        assert_eq!(gate.inflight(), 0);
        assert!(gate.enter(t0 + Duration::from_millis(1_200)).is_ok());
        assert!(busy_reason(250).starts_with("retry_after_ms=250;"));
    }
}
