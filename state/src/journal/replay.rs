//! What [`Journal::open`](super::Journal::open) hands back for the daemon to rebuild its state
//! from: every record of the newest snapshot, then every record of each journal of the chain
//! after it (usually one), in order.
//!
//! All the files are read and checked completely before `open` returns, so a corrupt record
//! anywhere is reported before the daemon has applied a single record — there is no
//! half-applied state to undo. The price is memory: a `Replay` holds the files' bytes (the
//! records are borrowed from them, never copied) until it is dropped — drop it as soon as the
//! state is rebuilt.

use std::fmt;

use super::frame::{Damage, Frames};

/// The records to apply, in order: the snapshot's, then the journals'.
pub struct Replay {
    /// Set when the newest journal ended in a torn record (a crash mid-append) that recovery
    /// dropped and truncated away. Everything before it is in this replay.
    pub torn_tail: Option<TornTail>,
    generation: u64,
    snapshot_generation: Option<u64>,
    snapshot: Vec<u8>,
    snapshot_records: usize,
    /// The chain's journals, oldest first, each with its record count.
    journals: Vec<(Vec<u8>, usize)>,
}

/// A torn record dropped from the end of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset in `journal-<generation>.log` (the newest journal, [`Replay::generation`])
    /// where the torn record began; the file was truncated to this length.
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes_dropped: u64,
    /// What was wrong with them.
    pub damage: Damage,
}

impl Replay {
    /// `snapshot` and every journal must be exactly the bytes `frame::scan` found good.
    pub(crate) fn new(
        generation: u64,
        snapshot_generation: Option<u64>,
        (snapshot, snapshot_records): (Vec<u8>, usize),
        journals: Vec<(Vec<u8>, usize)>,
        torn_tail: Option<TornTail>,
    ) -> Self {
        Replay {
            torn_tail,
            generation,
            snapshot_generation,
            snapshot,
            snapshot_records,
            journals,
        }
    }

    /// The generation recovered: the newest journal's, which appends continue in. It is the
    /// snapshot's (or 0 without one) unless a compaction was interrupted or failed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation of the snapshot replayed, `None` when there is none.
    pub fn snapshot_generation(&self) -> Option<u64> {
        self.snapshot_generation
    }

    /// Journals replayed after the snapshot: 1 unless a compaction was interrupted or failed
    /// (0 for a directory without any).
    pub fn journal_files(&self) -> usize {
        self.journals.len()
    }

    /// Records in the snapshot (0 without one).
    pub fn snapshot_len(&self) -> usize {
        self.snapshot_records
    }

    /// Records in the journals after the snapshot.
    pub fn journal_len(&self) -> usize {
        self.journals.iter().map(|(_, records)| records).sum()
    }

    /// All records.
    pub fn len(&self) -> usize {
        self.snapshot_records + self.journal_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records in the order to apply them.
    pub fn iter(&self) -> Records<'_> {
        Records {
            current: Frames::new(&self.snapshot),
            rest: self.journals.iter(),
        }
    }
}

impl<'a> IntoIterator for &'a Replay {
    type Item = &'a [u8];
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.iter()
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("generation", &self.generation)
            .field("snapshot_generation", &self.snapshot_generation)
            .field("snapshot_records", &self.snapshot_records)
            .field("journal_files", &self.journals.len())
            .field("journal_records", &self.journal_len())
            .field("torn_tail", &self.torn_tail)
            .finish()
    }
}

/// Iterator over a [`Replay`]'s records.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    current: Frames<'a>,
    rest: std::slice::Iter<'a, (Vec<u8>, usize)>,
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(record);
            }
            let (next, _) = self.rest.next()?;
            self.current = Frames::new(next);
        }
    }
}
