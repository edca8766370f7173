//! Recovery: turning whatever a crash left in the directory into one consistent state.
//!
//! This carries out the rules listed under "Recovery" in the [module documentation](super),
//! step by step; the numbered comments below are those rules.

use std::fs::{self, File, OpenOptions};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::error::{io_err, JournalError};
use super::files::{self, journal_path, snapshot_path, snapshot_tmp_path};
use super::frame::{self, Scan};
use super::replay::{Replay, TornTail};

/// A recovered directory: the journal file to append to and the records to replay.
pub struct Recovered {
    pub generation: u64,
    pub path: PathBuf,
    pub file: File,
    pub file_len: u64,
    pub replay: Replay,
}

pub fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    let listing = files::list(dir)?;

    // 1 and 2: the generation.
    let newest_snapshot = listing.snapshots.last().copied();
    let generation = newest_snapshot.unwrap_or(0);
    let newer = (Bound::Excluded(generation), Bound::Unbounded);
    if let Some(&orphan) = listing.journals.range(newer).next() {
        return Err(JournalError::OrphanJournal {
            path: journal_path(dir, orphan),
            newest_snapshot,
        });
    }

    // 3: read and check, changing nothing.
    let snapshot = match newest_snapshot {
        Some(g) => read_snapshot(&snapshot_path(dir, g))?,
        None => (Vec::new(), 0),
    };
    let path = journal_path(dir, generation);
    let journal = if listing.journals.contains(&generation) {
        let bytes = fs::read(&path).map_err(io_err("read journal", &path))?;
        let scan = frame::scan(&bytes);
        if let Some(stop) = scan.stop.filter(|stop| !stop.at_tail) {
            return Err(JournalError::Corrupt {
                path,
                offset: stop.offset as u64,
                damage: stop.damage,
            });
        }
        Some((bytes, scan))
    } else {
        None
    };

    // 4: repair.
    let (file, journal, torn_tail) = match journal {
        Some((bytes, scan)) => open_and_cut_tail(&path, generation, bytes, scan)?,
        None => {
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err("create journal", &path))?;
            files::sync_dir(dir)?;
            (file, (Vec::new(), 0), None)
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
        .range(..generation)
        .map(|&g| journal_path(dir, g));
    let stale = stale.chain(
        listing
            .snapshots
            .range(..generation)
            .map(|&g| snapshot_path(dir, g)),
    );
    for path in stale {
        tracing::info!(
            path = %path.display(),
            generation,
            "journal: removing a file of an older generation that an interrupted compaction \
             left behind; the snapshot of generation {generation} already contains it"
        );
        files::remove_quietly(&path, "file of an older generation");
    }

    let file_len = journal.0.len() as u64;
    Ok(Recovered {
        generation,
        path,
        file,
        file_len,
        replay: Replay::new(generation, snapshot, journal, torn_tail),
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

type OpenedJournal = (File, (Vec<u8>, usize), Option<TornTail>);

/// Opens a checked journal for appending, cutting off its torn tail if it has one.
fn open_and_cut_tail(
    path: &Path,
    generation: u64,
    mut bytes: Vec<u8>,
    scan: Scan,
) -> Result<OpenedJournal, JournalError> {
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
    Ok((file, (bytes, scan.records), torn_tail))
}
