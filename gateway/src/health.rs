//! Health of one node as one reactor sees it, without I/O: probes out, answers and
//! time in, up/down transitions out.
//!
//! A node is up as soon as its link first connects (so a fresh gateway routes at once), down
//! after `fall` failed probes in a row or at once when its link fails, and up again after
//! `rise` good probes in a row. A probe is NODE_PING with a fresh id; no NODE_PONG within
//! the timeout is a failure.

use std::time::{Duration, Instant};

/// Probe timing and thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HealthPolicy {
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// A change of state the reactor must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Up,
    Down,
}

#[derive(Debug, Clone)]
pub(crate) struct Health {
    up: bool,
    ever_up: bool,
    successes: u32,
    failures: u32,
    probe: Option<(u64, Instant)>,
    next_probe: Option<Instant>,
    next_id: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            up: false,
            ever_up: false,
            successes: 0,
            failures: 0,
            probe: None,
            next_probe: None,
            next_id: 1,
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// The link connected: probe at once. A node never seen up before is up now.
    pub(crate) fn on_connected(&mut self, now: Instant) -> Transition {
        self.probe = None;
        self.next_probe = Some(now);
        self.failures = 0;
        self.successes = 0;
        if !self.ever_up {
            self.ever_up = true;
            self.up = true;
            return Transition::Up;
        }
        Transition::None
    }

    /// The link failed: down at once, no probing until it reconnects.
    pub(crate) fn on_disconnected(&mut self) -> Transition {
        self.probe = None;
        self.next_probe = None;
        self.successes = 0;
        self.set_up(false)
    }

    /// Returns the id of a probe to send now, if one is due, after noting a timed-out one.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        policy: &HealthPolicy,
    ) -> (Transition, Option<u64>) {
        let mut transition = Transition::None;
        if let Some((_, sent)) = self.probe {
            if now.duration_since(sent) >= policy.timeout {
                self.probe = None;
                transition = self.failed(policy);
            }
        }
        let due = self.next_probe.is_some_and(|at| now >= at);
        if !due || self.probe.is_some() {
            return (transition, None);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.probe = Some((id, now));
        self.next_probe = Some(now + policy.interval);
        (transition, Some(id))
    }

    /// A NODE_PONG arrived.
    pub(crate) fn on_pong(&mut self, id: u64, policy: &HealthPolicy) -> Transition {
        match self.probe {
            Some((probe, _)) if probe == id => {
                self.probe = None;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if !self.up && self.successes >= policy.rise {
                    return self.set_up(true);
                }
                Transition::None
            }
            _ => Transition::None, // late or unknown: the probe already counted as failed
        }
    }

    /// When the reactor must look again (a probe due or timing out).
    #[cfg(test)]
    pub(crate) fn next_deadline(&self, policy: &HealthPolicy) -> Option<Instant> {
        let timeout = self.probe.map(|(_, sent)| sent + policy.timeout);
        match (timeout, self.next_probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn failed(&mut self, policy: &HealthPolicy) -> Transition {
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        if self.up && self.failures >= policy.fall {
            return self.set_up(false);
        }
        Transition::None
    }

    fn set_up(&mut self, up: bool) -> Transition {
        if self.up == up {
            return Transition::None;
        }
        self.up = up;
        if up {
            Transition::Up
        } else {
            Transition::Down
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            fall: 3,
            rise: 2,
        }
    }

    #[test]
    fn first_connect_is_up_and_probes_at_once() {
        let t0 = Instant::now();
        let mut h = Health::new();
        assert!(!h.is_up());
        assert_eq!(h.on_connected(t0), Transition::Up);
        let (_, probe) = h.poll(t0, &policy());
        assert_eq!(probe, Some(1));
        assert_eq!(h.poll(t0, &policy()).1, None, "one probe at a time");
    }

    #[test]
    fn fall_failures_make_it_down_and_rise_successes_bring_it_back() {
        let p = policy();
        let mut t = Instant::now();
        let mut h = Health::new();
        h.on_connected(t);
        for n in 1..=3 {
            let (_, probe) = h.poll(t, &p);
            assert!(probe.is_some());
            t += p.timeout;
            let (transition, _) = h.poll(t, &p);
            assert_eq!(
                transition,
                if n == 3 {
                    Transition::Down
                } else {
                    Transition::None
                }
            );
            t += p.interval;
        }
        assert!(!h.is_up());
        let (_, id) = h.poll(t, &p);
        assert_eq!(h.on_pong(id.unwrap(), &p), Transition::None);
        t += p.interval;
        let (_, id) = h.poll(t, &p);
        assert_eq!(h.on_pong(id.unwrap(), &p), Transition::Up);
    }

    #[test]
    fn a_good_probe_resets_the_failure_count() {
        let p = policy();
        let mut t = Instant::now();
        let mut h = Health::new();
        h.on_connected(t);
        let (_, mut probe) = h.poll(t, &p);
        for round in 0..10 {
            // Every other probe times out: never `fall` failures in a row.
            if round % 2 == 1 {
                h.on_pong(probe.unwrap(), &p);
            }
            t += p.interval;
            let (transition, next) = h.poll(t, &p);
            assert_eq!(transition, Transition::None, "round {round}");
            probe = next;
        }
        assert!(h.is_up());
    }

    #[test]
    fn disconnect_is_down_at_once_and_reconnect_needs_rise() {
        let p = policy();
        let t = Instant::now();
        let mut h = Health::new();
        h.on_connected(t);
        assert_eq!(h.on_disconnected(), Transition::Down);
        assert_eq!(h.poll(t, &p).1, None, "no probes while disconnected");
        assert_eq!(h.on_connected(t), Transition::None);
        let (_, id) = h.poll(t, &p);
        assert_eq!(h.on_pong(id.unwrap(), &p), Transition::None);
        let (_, id) = h.poll(t + p.interval, &p);
        assert_eq!(h.on_pong(id.unwrap(), &p), Transition::Up);
    }

    #[test]
    fn a_stale_pong_is_ignored() {
        let p = policy();
        let t = Instant::now();
        let mut h = Health::new();
        h.on_connected(t);
        let _ = h.poll(t, &p);
        assert_eq!(h.on_pong(999, &p), Transition::None);
        assert!(h.next_deadline(&p).is_some());
    }
}
