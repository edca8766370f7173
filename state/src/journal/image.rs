//! A snapshot as one buffer in memory, exactly the bytes its file will hold.
//!
//! Compaction has to capture the daemon's state at one instant, so the records are copied on
//! the caller's thread — the event loop — while nothing else changes them: an [`ImageWriter`]
//! has each record encoded in place, behind room for its header, and fills in the length (no
//! buffer per record); the result is laid out as framed records (length, checksum, payload),
//! CPU only, no system call. The
//! checksums are the one part that needs no particular instant, and at one pass over every
//! byte they are a good share of the work: the writer leaves them zero and [`Image::seal`]
//! fills them in on the compaction thread, just before the bytes are written.
//!
//! The buffer lives until the snapshot is written: it costs memory about the size of the
//! snapshot file, for as long as the write takes.

use super::error::JournalError;
use super::frame::{self, HEADER_LEN};
use super::record_len;

/// Framed records whose checksums are not filled in yet; only [`Image::seal`] turns them into
/// file contents.
pub(super) struct Image {
    bytes: Vec<u8>,
    records: u64,
}

/// Lays records out in an [`Image`], each encoded straight into it.
pub(crate) struct ImageWriter {
    bytes: Vec<u8>,
    records: u64,
    /// The first record over the size limit; the image is refused.
    refused: Option<JournalError>,
}

impl ImageWriter {
    /// Appends one record: `encode` appends its payload to the vector it is given (and must
    /// not touch what is already there).
    pub(crate) fn record(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        if self.refused.is_some() {
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; HEADER_LEN]);
        encode(&mut self.bytes);
        match record_len(&self.bytes[start + HEADER_LEN..]) {
            Ok(len) => {
                self.bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
                self.records += 1;
            }
            Err(e) => {
                self.bytes.truncate(start);
                self.refused = Some(e);
            }
        }
    }
}

impl Image {
    /// The image `write` lays out with an [`ImageWriter`], `capacity` bytes reserved up front
    /// (a guess: the last snapshot's size). Fails on a record over the size limit.
    pub(super) fn build(
        capacity: usize,
        write: impl FnOnce(&mut ImageWriter),
    ) -> Result<Image, JournalError> {
        let mut writer = ImageWriter {
            bytes: Vec::with_capacity(capacity),
            records: 0,
            refused: None,
        };
        write(&mut writer);
        match writer.refused {
            Some(e) => Err(e),
            None => Ok(Image {
                bytes: writer.bytes,
                records: writer.records,
            }),
        }
    }

    /// Records in the image.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes in the image: the snapshot file's size.
    pub(super) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Fills in every record's checksum and returns the file's contents.
    pub(super) fn seal(self) -> Vec<u8> {
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
    use super::super::MAX_RECORD_LEN;
    use super::*;

    #[test]
    fn sealed_image_is_what_append_writes() {
        let records: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), vec![7; 300]];
        let image = Image::build(0, |w| {
            for r in &records {
                w.record(|out| out.extend_from_slice(r));
            }
        })
        .unwrap();
        assert_eq!(image.records(), 3);
        let mut expected = Vec::new();
        for r in &records {
            frame::encode(r.len() as u32, r, &mut expected);
        }
        assert_eq!(image.len(), expected.len() as u64);
        assert_eq!(image.seal(), expected);
        assert!(Image::build(16, |_| {}).unwrap().seal().is_empty());
    }

    #[test]
    fn a_record_over_the_limit_refuses_the_image() {
        let too_big = Image::build(0, |w| {
            w.record(|out| out.extend_from_slice(b"fine"));
            w.record(|out| out.resize(out.len() + MAX_RECORD_LEN as usize + 1, 0));
            w.record(|out| out.extend_from_slice(b"never"));
        });
        assert!(too_big.is_err());
    }
}
