//! The open-files limit (RLIMIT_NOFILE): daemons that hold many sockets raise their soft
//! limit to the hard limit at start, and say what they got.

use std::io;

/// The soft and hard RLIMIT_NOFILE.
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // rlim_t is u64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok((limit.rlim_cur as u64, limit.rlim_max as u64))
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (before, after, hard).
pub fn raise_nofile() -> io::Result<(u64, u64, u64)> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let limit = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let (after, hard) = nofile()?;
    Ok((soft, after, hard))
}

/// Raises the limit and logs the outcome (a failure is a warning, not fatal).
pub fn raise_and_log() {
    match raise_nofile() {
        Ok((before, after, hard)) => {
            tracing::info!(before, after, hard, "open files limit (RLIMIT_NOFILE)")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit (RLIMIT_NOFILE)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let (_, after, hard) = raise_nofile().unwrap();
        assert_eq!(after, hard);
        assert_eq!(nofile().unwrap(), (hard, hard));
    }
}
