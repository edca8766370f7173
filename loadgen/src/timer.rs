//! A precise wake-up for the open-loop timetable.
//!
//! epoll (and so `mio::Poll`) takes its timeout in whole milliseconds, rounded up: a worker
//! sleeping "until the next due send" would send up to 1 ms late, and since open-loop
//! latency is measured from the scheduled time, every sample would carry that lag (mean
//! ≈ 0.5 ms — more than a loopback round trip). On Linux a `timerfd` registered in the poll
//! wakes the worker with microsecond precision instead; the thread's timer slack is lowered
//! to match. Elsewhere, or if the timerfd cannot be created, [`Timer`] is absent and the
//! poll timeout alone is used.

use std::time::Duration;

use mio::{Interest, Registry, Token};

/// The poll token the timer is registered under (never a connection index).
pub(crate) const TOKEN: Token = Token(usize::MAX);

#[cfg(target_os = "linux")]
pub(crate) use linux::Timer;

#[cfg(not(target_os = "linux"))]
pub use fallback::Timer;

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use mio::unix::SourceFd;

    /// Timer slack for worker threads: how late the kernel may fire our timer (default 50 µs).
    const SLACK_NS: libc::c_ulong = 1_000;

    #[derive(Debug)]
    pub(crate) struct Timer {
        fd: OwnedFd,
    }

    impl Timer {
        /// A disarmed timerfd registered in `registry` under [`TOKEN`].
        pub(crate) fn new(registry: &Registry) -> io::Result<Timer> {
            // SAFETY: plain syscalls; the returned descriptor is owned by `Timer` from here.
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            registry.register(&mut SourceFd(&fd.as_raw_fd()), TOKEN, Interest::READABLE)?;
            // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack; best effort.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, SLACK_NS, 0, 0, 0);
            }
            Ok(Timer { fd })
        }

        /// Fires once, `after` from now (at least 1 ns: a zero value would disarm it).
        pub(crate) fn arm(&self, after: Duration) -> io::Result<()> {
            let after = after.max(Duration::from_nanos(1));
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                    tv_nsec: after.subsec_nanos() as libc::c_long,
                },
            };
            // SAFETY: `spec` is a valid itimerspec; the old value is not requested.
            let rc = unsafe {
                libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// Consumes the expiry count after the timer fired, so the next expiry is a new edge.
        pub(crate) fn clear(&self) {
            let mut ticks = [0u8; 8];
            // SAFETY: reads at most 8 bytes into an 8-byte buffer; EAGAIN is fine.
            unsafe {
                libc::read(self.fd.as_raw_fd(), ticks.as_mut_ptr().cast(), ticks.len());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod fallback {
    use super::*;
    use std::io;

    /// No precise timer on this platform: the poll timeout is all there is.
    #[derive(Debug)]
    pub struct Timer;

    impl Timer {
        pub fn new(_registry: &Registry) -> io::Result<Timer> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "timerfd is Linux-only",
            ))
        }

        pub fn arm(&self, _after: Duration) -> io::Result<()> {
            Ok(())
        }

        pub fn clear(&self) {}
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Instant;

    #[test]
    fn wakes_the_poll_with_sub_millisecond_precision() {
        let mut poll = Poll::new().unwrap();
        let timer = Timer::new(poll.registry()).unwrap();
        let mut events = Events::with_capacity(4);
        let mut late = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            timer.arm(Duration::from_micros(300)).unwrap();
            poll.poll(&mut events, Some(Duration::from_secs(1)))
                .unwrap();
            let elapsed = t0.elapsed();
            assert!(events.iter().any(|e| e.token() == TOKEN));
            assert!(elapsed >= Duration::from_micros(300), "{elapsed:?}");
            late.push(elapsed);
            timer.clear();
        }
        // Loaded test machines are noisy; the median still shows it is not a whole ms.
        late.sort();
        assert!(
            late[late.len() / 2] < Duration::from_micros(950),
            "{late:?}"
        );
    }
}
