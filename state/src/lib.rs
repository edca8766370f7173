//! `tether-state` will be Tether's state daemon: the process behind a Unix domain socket that
//! holds every connection's session, its heartbeat and resume timers, and its queue of pushes
//! waiting for an ACK (see `design.md`).
//!
//! **The daemon is not written yet.** Today this crate holds the two building blocks it will
//! stand on, each self-contained and tested on its own:
//!
//! - [`journal`]: an append-only, checksummed journal with a Redis-style fsync policy and
//!   snapshot compaction, so sessions and unacknowledged pushes survive a restart (SIGKILL and
//!   machine crashes included, within what the policy promises).
//! - [`wheel`]: a hierarchical timing wheel with O(1) insert, cancel and per-tick expiry for the
//!   hundreds of thousands of heartbeat deadlines, resume windows and push retransmits the
//!   daemon keeps, plus [`wheel::backoff_ms`], the capped exponential retransmit schedule.
//!
//! Both are sans-IO about time: the caller passes "now" in, so tests drive them
//! deterministically and the daemon's single event loop owns the clock.

pub mod journal;
pub mod wheel;
