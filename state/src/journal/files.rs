//! The journal directory: what its files are called, which ones are there, and making
//! renames and new files durable.
//!
//! ```text
//! DIR/lock                 held with flock(2) while a Journal is open
//! DIR/snapshot-<g>.snap    the complete state at the start of generation g (g ≥ 1)
//! DIR/journal-<g>.log      records appended during generation g
//! DIR/snapshot-<g>.tmp     a snapshot being written; never read
//! ```
//!
//! Which of these make up the state (the newest snapshot and the chain of journals after it)
//! is recovery's business (`recover.rs`); this file only names and lists them.
//!
//! `<g>` is a decimal u64 without leading zeros. Any other name in the directory is left alone.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::{io_err, JournalError};

pub(super) fn journal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("journal-{generation}.log"))
}

pub(super) fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}.snap"))
}

pub(super) fn snapshot_tmp_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("snapshot-{generation}.tmp"))
}

pub(super) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

/// The generations present in a directory, by kind of file.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub journals: BTreeSet<u64>,
    pub snapshots: BTreeSet<u64>,
    pub snapshot_tmps: BTreeSet<u64>,
}

/// Lists the journal's files in `dir`.
pub(super) fn list(dir: &Path) -> Result<Listing, JournalError> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(io_err("list directory", dir))? {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(g) = generation_of(name, "journal-", ".log") {
            listing.journals.insert(g);
        } else if let Some(g) = generation_of(name, "snapshot-", ".snap") {
            listing.snapshots.insert(g);
        } else if let Some(g) = generation_of(name, "snapshot-", ".tmp") {
            listing.snapshot_tmps.insert(g);
        }
    }
    Ok(listing)
}

/// `Some(g)` when `name` is exactly `prefix` + the canonical decimal form of `g` + `suffix`.
fn generation_of(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let generation: u64 = digits.parse().ok()?;
    (generation.to_string() == digits).then_some(generation)
}

/// Makes the directory's entries (creations, renames) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Removes a file the journal no longer needs. Failure is only logged: every file this is
/// used on is ignored by recovery, which removes it again at the next open.
pub(super) fn remove_quietly(path: &Path, what: &str) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "journal: could not remove {what}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_strictly() {
        assert_eq!(generation_of("journal-0.log", "journal-", ".log"), Some(0));
        assert_eq!(
            generation_of("journal-42.log", "journal-", ".log"),
            Some(42)
        );
        for bad in [
            "journal-.log",
            "journal-042.log",
            "journal-+4.log",
            "journal-4.log.bak",
            "journal-x.log",
        ] {
            assert_eq!(generation_of(bad, "journal-", ".log"), None, "{bad}");
        }
        let max = format!("snapshot-{}.snap", u64::MAX);
        assert_eq!(generation_of(&max, "snapshot-", ".snap"), Some(u64::MAX));
        assert_eq!(
            generation_of("snapshot-18446744073709551616.snap", "snapshot-", ".snap"),
            None
        );
    }
}
