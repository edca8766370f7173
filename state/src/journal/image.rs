//! A snapshot as one buffer in memory, exactly the bytes its file will hold.
//!
//! Compaction has to capture the daemon's state at one instant, so the records are copied on
//! the caller's thread — the event loop — while nothing else changes them: [`Image::encode`]
//! lays them out as framed records (length, checksum, payload), CPU only, no system call. The
//! checksums are the one part that needs no particular instant, and at one pass over every
//! byte they are a good share of the work: `encode` leaves them zero and [`Image::seal`]
//! fills them in on the compaction thread, just before the bytes are written.
//!
//! The buffer lives until the snapshot is written: it costs memory about the size of the
//! snapshot file, for as long as the write takes.

use super::error::JournalError;
use super::frame::{self, HEADER_LEN};
use super::record_len;

/// Framed records whose checksums are not filled in yet; only [`Image::seal`] turns them into
/// file contents.
pub struct Image {
    bytes: Vec<u8>,
    records: u64,
}

impl Image {
    /// Frames every record into one buffer, `capacity` bytes reserved up front (a guess: the
    /// last snapshot's size). Fails, having changed nothing, on a record over the size limit.
    pub fn encode<I>(records: I, capacity: usize) -> Result<Image, JournalError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut bytes = Vec::with_capacity(capacity);
        let mut count = 0u64;
        for record in records {
            let record = record.as_ref();
            let len = record_len(record)?;
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&[0; HEADER_LEN - 4]);
            bytes.extend_from_slice(record);
            count += 1;
        }
        Ok(Image {
            bytes,
            records: count,
        })
    }

    /// Records in the image.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes in the image: the snapshot file's size.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Fills in every record's checksum and returns the file's contents.
    pub fn seal(self) -> Vec<u8> {
        let mut bytes = self.bytes;
        let mut offset = 0;
        while let Some(len_field) = bytes.get(offset..offset + 4) {
            let mut len = [0u8; 4];
            len.copy_from_slice(len_field);
            let len = u32::from_le_bytes(len);
            let end = offset + HEADER_LEN + len as usize;
            let Some(payload) = bytes.get(offset + HEADER_LEN..end) else {
                break; // unreachable: `encode` wrote whole records
            };
            let header = frame::header(len, payload);
            bytes[offset + 4..offset + HEADER_LEN].copy_from_slice(&header[4..]);
            offset = end;
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_image_is_what_append_writes() {
        let records: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), vec![7; 300]];
        let image = Image::encode(&records, 0).unwrap();
        assert_eq!(image.records(), 3);
        let mut expected = Vec::new();
        for r in &records {
            frame::encode(r.len() as u32, r, &mut expected);
        }
        assert_eq!(image.len(), expected.len() as u64);
        assert_eq!(image.seal(), expected);
        assert!(Image::encode(std::iter::empty::<&[u8]>(), 16)
            .unwrap()
            .seal()
            .is_empty());
    }
}
