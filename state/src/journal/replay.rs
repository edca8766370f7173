//! What [`Journal::open`](super::Journal::open) hands back for the daemon to rebuild its state
//! from: every record of the newest snapshot, then every record of its journal, in order.
//!
//! Both files are read and checked completely before `open` returns, so a corrupt record
//! anywhere is reported before the daemon has applied a single record — there is no
//! half-applied state to undo. The price is memory: a `Replay` holds both files' bytes (the
//! records are borrowed from them, never copied) until it is dropped — drop it as soon as the
//! state is rebuilt.

use std::fmt;
use std::iter::Chain;

use super::frame::{Damage, Frames};

/// The records to apply, in order: the snapshot's, then the journal's.
pub struct Replay {
    /// Set when the journal ended in a torn record (a crash mid-append) that recovery dropped
    /// and truncated away. Everything before it is in this replay.
    pub torn_tail: Option<TornTail>,
    generation: u64,
    snapshot: Vec<u8>,
    snapshot_records: usize,
    journal: Vec<u8>,
    journal_records: usize,
}

/// A torn record dropped from the end of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset in `journal-<generation>.log` where the torn record began; the file was
    /// truncated to this length.
    pub offset: u64,
    /// How many bytes were cut off.
    pub bytes_dropped: u64,
    /// What was wrong with them.
    pub damage: Damage,
}

impl Replay {
    /// `snapshot` and `journal` must be exactly the bytes `frame::scan` found good.
    pub(crate) fn new(
        generation: u64,
        (snapshot, snapshot_records): (Vec<u8>, usize),
        (journal, journal_records): (Vec<u8>, usize),
        torn_tail: Option<TornTail>,
    ) -> Self {
        Replay {
            torn_tail,
            generation,
            snapshot,
            snapshot_records,
            journal,
            journal_records,
        }
    }

    /// The generation recovered: the snapshot's, or 0 when there is no snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records in the snapshot (0 without one).
    pub fn snapshot_len(&self) -> usize {
        self.snapshot_records
    }

    /// Records in the journal after the snapshot.
    pub fn journal_len(&self) -> usize {
        self.journal_records
    }

    /// All records.
    pub fn len(&self) -> usize {
        self.snapshot_records + self.journal_records
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records in the order to apply them.
    pub fn iter(&self) -> Records<'_> {
        Records {
            inner: Frames::new(&self.snapshot).chain(Frames::new(&self.journal)),
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
            .field("snapshot_records", &self.snapshot_records)
            .field("journal_records", &self.journal_records)
            .field("torn_tail", &self.torn_tail)
            .finish()
    }
}

/// Iterator over a [`Replay`]'s records.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    inner: Chain<Frames<'a>, Frames<'a>>,
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        self.inner.next()
    }
}
