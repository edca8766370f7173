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

    /// A journal newer than the newest snapshot. Compaction creates `journal-<g>.log` only
    /// after `snapshot-<g>.snap` is durable, so this means a snapshot was deleted or lost;
    /// replaying the journal without it would build wrong state.
    #[error(
        "{} has no matching snapshot (newest snapshot generation: {newest_snapshot:?}); \
         refusing to guess the state it builds on",
        path.display()
    )]
    OrphanJournal {
        path: PathBuf,
        newest_snapshot: Option<u64>,
    },

    /// `append` or `compact` was given a record longer than [`MAX_RECORD_LEN`].
    #[error("a record of {len} bytes exceeds the journal's {max}-byte limit")]
    RecordTooLarge { len: usize, max: u32 },

    /// Another open journal (in this process or another) holds the directory's lock.
    #[error("{} is locked: another journal is open on this directory", path.display())]
    Locked { path: PathBuf },

    /// An earlier failure left the file in a state the journal cannot vouch for (an fdatasync
    /// failed, a failed write could not be rolled back, or compaction failed after its snapshot
    /// was renamed into place). Every later call fails; drop the journal and reopen the
    /// directory to recover from what is on disk.
    #[error(
        "the journal is unusable after an earlier write, fsync or compaction failure; \
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
