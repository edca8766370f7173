//! Where workers wait once their connections are up, so the load starts at one instant on
//! every thread (the open-loop timetable and the duration are counted from it).
//!
//! The last worker to arrive fixes the start a few milliseconds ahead, giving the others —
//! who check while polling their connections — time to notice before it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How far ahead of the last arrival the start is set.
const LEAD: Duration = Duration::from_millis(10);

#[derive(Debug)]
pub(crate) struct StartLine {
    workers: usize,
    arrived: AtomicUsize,
    start: OnceLock<Instant>,
}

impl StartLine {
    pub(crate) fn new(workers: usize) -> StartLine {
        StartLine {
            workers,
            arrived: AtomicUsize::new(0),
            start: OnceLock::new(),
        }
    }

    /// Marks one worker (or one worker that will never come) as arrived.
    pub(crate) fn arrive(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
    }

    /// The start, once every worker has arrived.
    pub(crate) fn start(&self) -> Option<Instant> {
        if let Some(start) = self.start.get() {
            return Some(*start);
        }
        if self.arrived.load(Ordering::Acquire) >= self.workers {
            return Some(*self.start.get_or_init(|| Instant::now() + LEAD));
        }
        None
    }
}

/// Arrives on drop unless [`Arrival::arrive`] already did, so a worker that fails early
/// never leaves the others waiting.
#[derive(Debug)]
pub(crate) struct Arrival<'a> {
    line: &'a StartLine,
    done: bool,
}

impl<'a> Arrival<'a> {
    pub(crate) fn new(line: &'a StartLine) -> Arrival<'a> {
        Arrival { line, done: false }
    }

    pub(crate) fn arrive(&mut self) {
        if !self.done {
            self.done = true;
            self.line.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_once_everyone_arrived_and_the_start_is_shared() {
        let line = StartLine::new(2);
        let mut first = Arrival::new(&line);
        first.arrive();
        first.arrive();
        assert_eq!(line.start(), None);
        drop(Arrival::new(&line));
        let start = line.start().unwrap();
        assert_eq!(line.start(), Some(start));
        assert!(start > Instant::now());
    }
}
