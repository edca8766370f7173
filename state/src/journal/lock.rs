//! One journal per directory at a time: an exclusive `flock(2)` on `DIR/lock`, held for as long
//! as the [`Journal`](super::Journal) lives.
//!
//! Two writers appending to one journal would interleave records and corrupt it in the middle,
//! which recovery refuses to repair. The lock is advisory and released by the kernel when the
//! process dies, SIGKILL included, so a crashed daemon never leaves a stale lock behind. The
//! lock file itself is never deleted (deleting lock files races with the next locker).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::{io_err, JournalError};
use super::files;

#[derive(Debug)]
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock without waiting; [`JournalError::Locked`] if someone holds it.
    pub(super) fn acquire(dir: &Path) -> Result<DirLock, JournalError> {
        let path = files::lock_path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file", &path))?;
        // SAFETY: flock only reads the descriptor number, which `file` keeps open for the
        // duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Err(JournalError::Locked { path });
            }
            return Err(io_err("lock", &path)(err));
        }
        Ok(DirLock { _file: file })
    }
}
