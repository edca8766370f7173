//! Recovery: turning whatever a crash left in the directory into one consistent state — the
//! newest complete snapshot and the chain of journals after it.
//!
//! This carries out the rules listed under "Recovery" in the [module documentation](super),
//! step by step; the numbered comments below are those rules.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::{io_err, JournalError};
use super::files::{self, journal_path, snapshot_path, snapshot_tmp_path};
use super::frame::{self, Scan};
use super::replay::{Replay, TornTail};

/// A recovered directory: the journal file to append to and the records to replay.
pub(super) struct Recovered {
    pub generation: u64,
    pub path: PathBuf,
    pub file: File,
    pub file_len: u64,
    pub replay: Replay,
}

pub(super) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    let listing = files::list(dir)?;

    // 1: the snapshot.
    let newest_snapshot = listing.snapshots.last().copied();
    let base = newest_snapshot.unwrap_or(0);

    // 2: the chain of journals after it, without a hole.
    let chain: Vec<u64> = listing.journals.range(base..).copied().collect();
    for (expected, &found) in (base..).zip(&chain) {
        if found != expected {
            return Err(JournalError::JournalGap {
                missing: journal_path(dir, expected),
                found: journal_path(dir, found),
                newest_snapshot,
            });
        }
    }

    // 3: read and check, changing nothing.
    let snapshot = match newest_snapshot {
        Some(g) => read_snapshot(&snapshot_path(dir, g))?,
        None => (Vec::new(), 0),
    };
    let mut journals = Vec::with_capacity(chain.len());
    for (i, &g) in chain.iter().enumerate() {
        let newest = i + 1 == chain.len();
        let path = journal_path(dir, g);
        let bytes = fs::read(&path).map_err(io_err("read journal", &path))?;
        let scan = frame::scan(&bytes);
        if let Some(stop) = scan.stop.filter(|stop| !(newest && stop.at_tail)) {
            return Err(JournalError::Corrupt {
                path,
                offset: stop.offset as u64,
                damage: stop.damage,
            });
        }
        journals.push((g, bytes, scan));
    }

    // 4: repair, and open the newest journal for appending.
    let (generation, file, torn_tail) = match journals.last_mut() {
        Some((g, bytes, scan)) => {
            let (file, torn_tail) = open_and_cut_tail(&journal_path(dir, *g), *g, bytes, scan)?;
            (*g, file, torn_tail)
        }
        None => {
            let path = journal_path(dir, base);
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create journal", &path))?;
            files::sync_dir(dir)?;
            (base, file, None)
        }
    };

    // 5: clean up.
    for &g in &listing.snapshot_tmps {
        tracing::warn!(
            path = %snapshot_tmp_path(dir, g).display(),
            "journal: ignoring a snapshot left unfinished by a crash during compaction"
        );
        files::remove_quietly(&snapshot_tmp_path(dir, g), "unfinished snapshot");
    }
    let stale = listing
        .journals
        .range(..base)
        .map(|&g| journal_path(dir, g));
    let stale = stale.chain(
        listing
            .snapshots
            .range(..base)
            .map(|&g| snapshot_path(dir, g)),
    );
    for path in stale {
        tracing::info!(
            path = %path.display(),
            generation = base,
            "journal: removing a file of an older generation that an interrupted compaction \
             left behind; the snapshot of generation {base} already contains it"
        );
        files::remove_quietly(&path, "file of an older generation");
    }
    if chain.len() > 1 {
        tracing::info!(
            snapshot = ?newest_snapshot,
            journals = chain.len(),
            first = base,
            newest = generation,
            "journal: replaying a chain of journals (a compaction was interrupted or failed; \
             the next one removes them)"
        );
    }

    let path = journal_path(dir, generation);
    let file_len = journals
        .last()
        .map_or(0, |(_, _, scan)| scan.valid_len as u64);
    let journals = journals
        .into_iter()
        .map(|(_, bytes, scan)| (bytes, scan.records))
        .collect();
    Ok(Recovered {
        generation,
        path,
        file,
        file_len,
        replay: Replay::new(generation, newest_snapshot, snapshot, journals, torn_tail),
    })
}

/// Reads a snapshot and checks every record; a snapshot has no acceptable damage.
fn read_snapshot(path: &Path) -> Result<(Vec<u8>, usize), JournalError> {
    let bytes = fs::read(path).map_err(io_err("read snapshot", path))?;
    let scan = frame::scan(&bytes);
    if let Some(stop) = scan.stop {
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: stop.offset as u64,
            damage: stop.damage,
        });
    }
    Ok((bytes, scan.records))
}

/// Opens the newest journal, checked, for appending, cutting off its torn tail (in the file
/// and in `bytes`) if it has one.
fn open_and_cut_tail(
    path: &Path,
    generation: u64,
    bytes: &mut Vec<u8>,
    scan: &Scan,
) -> Result<(File, Option<TornTail>), JournalError> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err("open journal", path))?;
    let torn_tail = match scan.stop {
        None => None,
        Some(stop) => {
            let torn = TornTail {
                offset: stop.offset as u64,
                bytes_dropped: (bytes.len() - stop.offset) as u64,
                damage: stop.damage,
            };
            tracing::warn!(
                path = %path.display(),
                generation,
                offset = torn.offset,
                bytes_dropped = torn.bytes_dropped,
                damage = %torn.damage,
                records_kept = scan.records,
                "journal: dropping a torn record at the tail (a crash interrupted an append); \
                 every record before it is intact"
            );
            file.set_len(torn.offset)
                .map_err(io_err("truncate torn tail of", path))?;
            file.sync_all().map_err(io_err("fsync", path))?;
            bytes.truncate(scan.valid_len);
            Some(torn)
        }
    };
    Ok((file, torn_tail))
}
