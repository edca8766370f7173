//! Everything that can go wrong opening, writing or compacting a journal.
//!
//! Recovery never skips data silently: damage anywhere but a journal's tail is
//! [`JournalError::Corrupt`], naming the file and the byte offset, and the daemon should refuse
//! to start until an operator has looked.

use std::io;
use std::path::{Path, PathBuf};

use super::frame::{Damage, MAX_RECORD_LEN};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A system call failed. `op` says what the journal was doing.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// A damaged record that cannot be the trace of a crash mid-append: one in a snapshot
    /// (snapshots are fsynced before they are renamed into place), or one in a journal that is
    /// followed by more data. Nothing was applied and nothing was changed on disk.
    #[error(
        "{} is corrupt at byte offset {offset}: {damage}; refusing to drop the records after it \
         (restore the file, or truncate it to {offset} bytes by hand if losing them is acceptable)",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        damage: Damage,
    },

    /// The chain of journals after the newest complete snapshot has a hole: `missing` is not
    /// there although `found`, newer, is. Every journal of the chain exists from the moment
    /// compaction starts it until a newer snapshot is complete, so a missing one was deleted
    /// or lost, and replaying the journals after it would build wrong state. Nothing was
    /// applied and nothing was changed on disk.
    #[error(
        "{} is missing but the newer {} exists (newest complete snapshot generation: \
         {newest_snapshot:?}); refusing to replay across the gap (restore the missing journal)",
        missing.display(),
        found.display()
    )]
    JournalGap {
        missing: PathBuf,
        found: PathBuf,
        newest_snapshot: Option<u64>,
    },

    /// [`Journal::start_compaction`](super::Journal::start_compaction) while the previous
    /// compaction is still being written. Nothing was changed.
    #[error("a compaction is already being written")]
    CompactionInFlight,

    /// `append` or `compact` was given a record longer than [`MAX_RECORD_LEN`].
    #[error("a record of {len} bytes exceeds the journal's {max}-byte limit")]
    RecordTooLarge { len: usize, max: u32 },

    /// Another open journal (in this process or another) holds the directory's lock.
    #[error("{} is locked: another journal is open on this directory", path.display())]
    Locked { path: PathBuf },

    /// An earlier failure left the file in a state the journal cannot vouch for (an fdatasync
    /// failed, or a failed write could not be rolled back). Every later call fails; drop the
    /// journal and reopen the directory to recover from what is on disk.
    #[error(
        "the journal is unusable after an earlier write or fsync failure; \
         reopen it to recover from disk"
    )]
    Poisoned,

    /// 2^64 − 1 compactions. Not reachable in practice.
    #[error("the journal's generation counter is exhausted")]
    GenerationExhausted,
}

impl JournalError {
    pub(crate) fn too_large(len: usize) -> Self {
        JournalError::RecordTooLarge {
            len,
            max: MAX_RECORD_LEN,
        }
    }
}

/// `map_err` adapter: `.map_err(io_err("open", &path))`.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { op, path, source }
}
