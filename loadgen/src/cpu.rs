//! The load generator's own CPU time, from getrusage(RUSAGE_SELF), so a summary documents
//! its ceiling: CPU microseconds per reply frame.

use std::time::Duration;

/// User and system CPU time consumed by this process so far (all threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTime {
    /// The process's CPU time now; zero if getrusage fails (it cannot with these arguments).
    pub fn now() -> CpuTime {
        // SAFETY: rusage is plain old data, so all-zero bytes are a valid value, and
        // getrusage only writes into the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        if rc != 0 {
            return CpuTime::default();
        }
        CpuTime {
            user: timeval(usage.ru_utime),
            sys: timeval(usage.ru_stime),
        }
    }

    /// CPU time spent since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    pub fn total(self) -> Duration {
        self.user + self.sys
    }
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_costs_user_time() {
        let before = CpuTime::now();
        let mut x = 0u64;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let spent = CpuTime::now().since(before);
        assert!(spent.total() >= Duration::from_millis(10), "{spent:?}");
    }
}
