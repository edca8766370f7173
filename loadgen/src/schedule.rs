//! Timetables, without any I/O: when each open-loop DATA frame is due, and when each
//! connection may be dialled under `--connect-rate` (and how many of the overdue ones to
//! dial at once).
//!
//! Open loop (`--rate R`): connection `g` of `N` sends its frame number `n` at
//! `start + (n + g / N) / R`, so the N connections' phases are spread evenly over one
//! interval `1 / R` and the offered load is smooth rather than N-frame bursts. Latency is
//! measured from that scheduled instant, so a stalled server shows up as latency instead of
//! as less offered load (no coordinated omission).
//!
//! All connections share the same rate, so one worker's sends come due in a fixed order:
//! its connections sorted by phase, round after round. [`Round`] walks that order with a
//! cursor — O(1) per send, no heap.

use std::time::{Duration, Instant};

/// The open-loop timetable shared by every worker of a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    start: Instant,
    rate: f64,
    total_conns: usize,
}

impl Schedule {
    /// `rate` frames per second per connection, `total_conns` connections in the whole run.
    pub(crate) fn new(start: Instant, rate: f64, total_conns: usize) -> Schedule {
        Schedule {
            start,
            rate,
            total_conns: total_conns.max(1),
        }
    }

    /// Connection `global`'s offset within each interval.
    #[cfg(test)]
    pub(crate) fn phase(&self, global: usize) -> Duration {
        self.offset(global, 0)
    }

    /// When connection `global` sends its frame number `n` (counting from 0).
    pub(crate) fn due(&self, global: usize, n: u64) -> Instant {
        self.start + self.offset(global, n)
    }

    fn offset(&self, global: usize, n: u64) -> Duration {
        let intervals = n as f64 + global as f64 / self.total_conns as f64;
        Duration::try_from_secs_f64(intervals / self.rate).unwrap_or(Duration::MAX)
    }
}

/// The order in which one worker's sends come due: its sending connections (given as
/// (worker-local position, global index), global index ascending, hence by phase) for
/// frame 0, then all of them for frame 1, and so on.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    schedule: Schedule,
    conns: Vec<(usize, usize)>,
    pos: usize,
    n: u64,
}

/// One due send: the worker-local connection position, the frame number and its due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub pos: usize,
    pub n: u64,
    pub at: Instant,
}

impl Round {
    /// `conns` lists (worker-local position, global index) of the connections that send;
    /// the global indices must ascend.
    pub(crate) fn new(schedule: Schedule, conns: Vec<(usize, usize)>) -> Round {
        debug_assert!(conns.windows(2).all(|w| w[0].1 < w[1].1));
        Round {
            schedule,
            conns,
            pos: 0,
            n: 0,
        }
    }

    /// The next send, or `None` for a worker with no sending connections.
    pub(crate) fn peek(&self) -> Option<Due> {
        let &(pos, global) = self.conns.get(self.pos)?;
        Some(Due {
            pos,
            n: self.n,
            at: self.schedule.due(global, self.n),
        })
    }

    /// Moves past the send [`Round::peek`] returned.
    pub(crate) fn advance(&mut self) {
        self.pos += 1;
        if self.pos >= self.conns.len() {
            self.pos = 0;
            self.n += 1;
        }
    }
}

/// When connection `global` may be dialled: `global / rate` seconds after `start`, so the
/// run as a whole opens at most `rate` connections per second; 0 means all at `start`.
pub(crate) fn dial_at(start: Instant, connect_rate: u32, global: usize) -> Instant {
    if connect_rate == 0 {
        return start;
    }
    let secs = global as f64 / f64::from(connect_rate);
    start + Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// The most connections a worker dials in one turn of its loop. A worker that fell behind
/// `--connect-rate` dials its backlog this many at a time, reading the answers of those
/// already dialled in between: dialling the whole backlog first left their LOGIN_OKs
/// unread until they timed out, and a login storm collapsed in the load generator. Each
/// dial comes back as a few events (connected, LOGIN_OK or BUSY, a retry's answer), so 128
/// of them stay within the 1,024 events one poll takes.
pub(crate) const DIALS_PER_TURN: usize = 128;

/// How many of `pending` (the global indices of a worker's connections not dialled yet, in
/// dial order) to dial at `now`: those due by then, at most `budget`.
pub(crate) fn dials_due(
    start: Instant,
    connect_rate: u32,
    pending: impl IntoIterator<Item = usize>,
    now: Instant,
    budget: usize,
) -> usize {
    pending
        .into_iter()
        .take(budget)
        .take_while(|&global| dial_at(start, connect_rate, global) <= now)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn frame_n_is_due_n_intervals_after_the_phase() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 10.0, 4);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(ms(schedule.due(0, 0) - start), 0.0));
        assert!(close(ms(schedule.due(0, 1) - start), 100.0));
        assert!(close(ms(schedule.due(1, 2) - start), 225.0));
        assert!(close(ms(schedule.due(3, 10) - start), 1075.0));
    }

    #[test]
    fn phases_spread_evenly_over_one_interval() {
        let schedule = Schedule::new(Instant::now(), 100.0, 5);
        let phases: Vec<f64> = (0..5).map(|g| ms(schedule.phase(g))).collect();
        for (g, phase) in phases.iter().enumerate() {
            assert!((phase - 2.0 * g as f64).abs() < 1e-6, "{phases:?}");
        }
        // Every phase lies inside the first interval.
        assert!(phases.iter().all(|&p| p < 10.0));
    }

    #[test]
    fn a_round_visits_connections_in_due_order() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 10.0, 4);
        // Worker 1 of 2 owns global connections 1 and 3.
        let mut round = Round::new(schedule, vec![(0, 1), (1, 3)]);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let due = round.peek().unwrap();
            seen.push((due.pos, due.n, ms(due.at - start).round() as u64));
            round.advance();
        }
        assert_eq!(
            seen,
            vec![
                (0, 0, 25),
                (1, 0, 75),
                (0, 1, 125),
                (1, 1, 175),
                (0, 2, 225)
            ]
        );
        assert!(Round::new(schedule, Vec::new()).peek().is_none());
    }

    #[test]
    fn due_times_never_go_backwards() {
        let schedule = Schedule::new(Instant::now(), 1000.0, 7);
        let mut round = Round::new(schedule, vec![(0, 0), (1, 2), (2, 4), (3, 6)]);
        let mut last = round.peek().unwrap().at;
        for _ in 0..10_000 {
            round.advance();
            let at = round.peek().unwrap().at;
            assert!(at >= last);
            last = at;
        }
    }

    #[test]
    fn an_overdue_backlog_is_dialled_a_turn_at_a_time() {
        let start = Instant::now();
        // 1,000/s: connection g is due at g ms.
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(dials_due(start, 1000, 0..10_000, at(0), 64), 1);
        assert_eq!(dials_due(start, 1000, 5..10_000, at(9), 64), 5);
        // Ten seconds behind: 10,000 are overdue, one turn dials 64 of them.
        assert_eq!(dials_due(start, 1000, 0..10_000, at(10_000), 64), 64);
        assert_eq!(dials_due(start, 1000, 9_990..10_000, at(10_000), 64), 10);
        assert_eq!(dials_due(start, 1000, 0..0, at(10_000), 64), 0);
        // No rate: everything is due, still a turn at a time.
        assert_eq!(
            dials_due(start, 0, 0..500, start, DIALS_PER_TURN),
            DIALS_PER_TURN
        );
    }

    #[test]
    fn dialling_is_paced_by_global_index() {
        let start = Instant::now();
        assert_eq!(dial_at(start, 0, 12_345), start);
        assert_eq!(dial_at(start, 100, 0), start);
        assert_eq!(
            dial_at(start, 100, 250) - start,
            Duration::from_millis(2500)
        );
    }
}
