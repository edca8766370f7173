//! systemd's service watchdog (`WatchdogSec=`): `WATCHDOG=1` to `$NOTIFY_SOCKET` every half
//! interval, but only while the daemon's own liveness check passes. So systemd restarts a
//! daemon whose event loops are stuck, not only one whose process is gone.
//!
//! systemd hands the interval over as `WATCHDOG_USEC`, and `WATCHDOG_PID` names the process
//! meant to ping. Without them (not under systemd, no `WatchdogSec=`, or the variables meant
//! for another process) [`Watchdog::start`] starts nothing.
//!
//! One thread asks the check every half interval. When the check fails the ping is withheld
//! and the check asked again every `interval / 20` (1 ms at least), so a loop that is only a
//! little late still pings in time while a stuck one lets systemd's deadline pass. A check
//! failing for half an interval is logged once, and its recovery too. Once the daemon has
//! sent `STOPPING=1` ([`notify::stopping`]) no ping follows, whatever the check says.
//!
//! A check is typically a [`Progress`] over counters that the event loops bump, plus a
//! wake-up of those loops after each check so that an idle loop has a reason to go round.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::notify;

/// The watchdog interval systemd asks this process for: `WATCHDOG_USEC`, when set, valid and
/// (if `WATCHDOG_PID` is set) meant for this process.
pub fn interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`interval`] from the variables' values, for the process `own_pid`. Like
/// `sd_watchdog_enabled`: 0, "infinity" (`u64::MAX`), garbage or another pid mean "none".
pub(crate) fn interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    own_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0 && usec != u64::MAX).then(|| Duration::from_micros(usec))
}

/// Counters that must all have moved since the last time [`Progress::moved`] said yes: the
/// liveness check of event loops that bump a counter on every iteration or timer tick.
#[derive(Debug, Clone)]
pub struct Progress {
    seen: Vec<u64>,
}

impl Progress {
    /// Starts from the counters' current values.
    pub fn new(now: impl IntoIterator<Item = u64>) -> Progress {
        Progress {
            seen: now.into_iter().collect(),
        }
    }

    /// True when every counter differs from what it was at the last `true` (or at
    /// [`Progress::new`]); only then are these values remembered.
    pub fn moved(&mut self, now: impl IntoIterator<Item = u64>) -> bool {
        let now: Vec<u64> = now.into_iter().collect();
        let moved = now.len() == self.seen.len()
            && now.iter().zip(&self.seen).all(|(now, seen)| now != seen);
        if moved {
            self.seen = now;
        }
        moved
    }
}

/// The pinging thread; dropping this (or [`Watchdog::stop`]) stops and joins it.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Pings `$NOTIFY_SOCKET` while `alive` says yes, when systemd asked for a watchdog
    /// ([`interval`]); `None` (and nothing running) otherwise. `what` names the check in
    /// the logs, e.g. "every reactor ticked".
    pub fn start<F>(what: &'static str, alive: F) -> Option<Watchdog>
    where
        F: FnMut() -> bool + Send + 'static,
    {
        let interval = interval()?;
        let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
            tracing::warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not: no watchdog pings");
            return None;
        };
        match Watchdog::spawn(interval, socket, what, alive) {
            Ok(watchdog) => {
                tracing::info!(
                    interval_ms = interval.as_millis() as u64,
                    check = what,
                    "systemd watchdog: pinging every half interval while the check passes"
                );
                Some(watchdog)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the watchdog thread");
                None
            }
        }
    }

    /// Pings the notification socket `socket` (a path, or `@name` for an abstract socket)
    /// every `interval / 2` while `alive` says yes, whatever the environment says.
    pub fn spawn<F>(
        interval: Duration,
        socket: impl Into<OsString>,
        what: &'static str,
        alive: F,
    ) -> io::Result<Watchdog>
    where
        F: FnMut() -> bool + Send + 'static,
    {
        let socket = PathBuf::from(socket.into());
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let ping = || notify::watchdog_to(&socket);
                run(interval, what, alive, ping, |wait| {
                    matches!(stop_rx.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
                })
            })?;
        Ok(Watchdog {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops pinging and joins the thread (waiting for a check in progress).
    pub fn stop(self) {}
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take()); // disconnects: the thread's wait returns at once
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's loop: `sleep(d)` waits `d` and says false when it is time to stop; `ping`
/// says false once the daemon has told systemd it is stopping.
fn run(
    interval: Duration,
    what: &'static str,
    mut alive: impl FnMut() -> bool,
    ping: impl Fn() -> io::Result<bool>,
    mut sleep: impl FnMut(Duration) -> bool,
) {
    let period = interval / 2;
    let retry = (interval / 20).max(Duration::from_millis(1));
    let mut due = Instant::now() + period;
    let mut failing_since: Option<Instant> = None;
    let mut complained = false;
    let mut send_failed = false;
    loop {
        if !sleep(due.saturating_duration_since(Instant::now())) {
            return;
        }
        let now = Instant::now();
        if alive() {
            match ping() {
                Ok(true) => send_failed = false,
                Ok(false) => return, // STOPPING=1 went out: no more pings
                Err(e) if !send_failed => {
                    send_failed = true;
                    tracing::warn!(error = %e, "cannot send WATCHDOG=1");
                }
                Err(_) => {}
            }
            if let Some(since) = failing_since.take() {
                if complained {
                    tracing::info!(
                        check = what,
                        failed_ms = since.elapsed().as_millis() as u64,
                        "watchdog check passes again"
                    );
                }
            }
            complained = false;
            due = now + period;
        } else {
            let since = *failing_since.get_or_insert(now);
            if !complained && now.duration_since(since) >= period {
                complained = true;
                tracing::warn!(
                    check = what,
                    interval_ms = interval.as_millis() as u64,
                    "watchdog check failing: WATCHDOG=1 withheld; systemd restarts the daemon \
                     once a whole interval passes without one"
                );
            }
            due = now + retry;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn interval_follows_sd_watchdog_enabled() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(interval_from(Some("200000"), None, 7), ms(200));
        assert_eq!(interval_from(Some("200000"), Some("7"), 7), ms(200));
        assert_eq!(interval_from(Some("200000"), Some("8"), 7), None);
        assert_eq!(interval_from(Some("200000"), Some("x"), 7), None);
        assert_eq!(interval_from(None, Some("7"), 7), None);
        assert_eq!(interval_from(Some("0"), None, 7), None);
        assert_eq!(interval_from(Some("-5"), None, 7), None);
        assert_eq!(interval_from(Some(&u64::MAX.to_string()), None, 7), None);
    }

    #[test]
    fn progress_needs_every_counter_to_move_since_the_last_yes() {
        let mut p = Progress::new([1, 1]);
        assert!(!p.moved([2, 1]));
        assert!(p.moved([2, 5]));
        assert!(
            !p.moved([3, 5]),
            "the second counter has not moved since the last yes"
        );
        assert!(p.moved([3, 6]));
        assert!(!p.moved([4]), "a different number of counters never passes");
    }

    #[test]
    fn pings_only_while_the_check_passes_and_stops_on_drop() {
        let path =
            std::env::temp_dir().join(format!("tether-watchdog-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let healthy = Arc::new(AtomicBool::new(true));
        let check = healthy.clone();
        let watchdog = Watchdog::spawn(Duration::from_millis(40), &path, "test", move || {
            check.load(Ordering::Relaxed)
        })
        .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let n = listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"WATCHDOG=1");
        }
        healthy.store(false, Ordering::Relaxed);
        // A check that passed just before the flip may still ping: let it, drop it.
        std::thread::sleep(Duration::from_millis(100));
        drain(&listener);
        assert!(
            listener.recv(&mut buf).is_err(),
            "pinged while the check fails"
        );
        healthy.store(true, Ordering::Relaxed);
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        drop(watchdog); // joined: nothing is sent after this
        drain(&listener);
        std::thread::sleep(Duration::from_millis(60));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.recv(&mut buf).is_err(), "pinged after the drop");
        let _ = std::fs::remove_file(&path);
    }

    /// Reads away whatever is queued on `socket` right now.
    fn drain(socket: &UnixDatagram) {
        let mut buf = [0u8; 64];
        socket.set_nonblocking(true).unwrap();
        while socket.recv(&mut buf).is_ok() {}
        socket.set_nonblocking(false).unwrap();
    }
}
