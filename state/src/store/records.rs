//! The journal records a loop iteration produced, encoded back to back: the loop appends
//! them to the journal before it sends any frame that acknowledges them.

use super::Store;
use crate::record::Record;

/// Encoded journal records of the current loop iteration.
#[derive(Default)]
pub(super) struct RecordBuf {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Store {
    /// The records this iteration produced, oldest first; [`Store::clear_records`] after
    /// they are appended.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.records.ends.iter().map(move |&end| {
            let record = &self.records.bytes[start..end];
            start = end;
            record
        })
    }

    pub fn clear_records(&mut self) {
        self.records.bytes.clear();
        self.records.ends.clear();
    }

    pub(super) fn log(&mut self, record: Record<'_>) {
        record.encode(&mut self.records.bytes);
        self.records.ends.push(self.records.bytes.len());
    }
}
