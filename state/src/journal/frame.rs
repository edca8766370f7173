//! How one record is laid out on disk, and how a file of records is checked.
//!
//! Public (`tether_state::journal::frame`) for the journal fuzz target (`fuzz/`), which is its
//! own workspace.
//!
//! ```text
//! offset size field
//! 0      4    len      u32 little-endian: payload length, at most MAX_RECORD_LEN
//! 4      4    crc      u32 little-endian: CRC-32C of the 4 len bytes followed by the payload
//! 8      len  payload  the caller's opaque bytes
//! ```
//!
//! The checksum covers the length field as well as the payload, so a damaged length is caught
//! by the checksum and a run of zero bytes (what a crash can leave after the last record) is
//! never mistaken for an empty record: the CRC-32C of four zero bytes is not zero.
//!
//! [`scan`] walks a whole file and stops at the first damaged record, saying whether that
//! record is the file's tail (a crash mid-write) or sits in front of more data (corruption).
//! [`Frames`] then iterates over the part that checked out.

use std::fmt;

use super::crc32c;

/// Bytes in a record's header (`len` and `crc`).
pub const HEADER_LEN: usize = 8;

/// The largest payload a record may carry (16 MiB). A length field above this is never
/// believed: it is reported as damage instead of being used to size a read.
pub const MAX_RECORD_LEN: u32 = 16 * 1024 * 1024;

/// The header for `payload`, whose length the caller has checked against [`MAX_RECORD_LEN`].
pub fn header(len: u32, payload: &[u8]) -> [u8; HEADER_LEN] {
    let len = len.to_le_bytes();
    let crc = crc32c::update(crc32c::checksum(&len), payload).to_le_bytes();
    [
        len[0], len[1], len[2], len[3], crc[0], crc[1], crc[2], crc[3],
    ]
}

/// Appends one framed record to `out`.
pub fn encode(len: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&header(len, payload));
    out.extend_from_slice(payload);
}

/// What is wrong with the record where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Fewer than 8 bytes left: the header itself was cut short.
    TruncatedHeader { have: usize },
    /// The header announces `len` payload bytes but the file ends after `have`.
    TruncatedPayload { len: u32, have: usize },
    /// The length field exceeds [`MAX_RECORD_LEN`]; the journal never writes such a record.
    LengthTooLarge { len: u32 },
    /// The record is complete but its checksum does not match.
    CrcMismatch { stored: u32, computed: u32 },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Damage::TruncatedHeader { have } => {
                write!(f, "truncated header ({have} of {HEADER_LEN} bytes)")
            }
            Damage::TruncatedPayload { len, have } => {
                write!(f, "truncated payload ({have} of {len} bytes)")
            }
            Damage::LengthTooLarge { len } => {
                write!(
                    f,
                    "length field {len} exceeds the {MAX_RECORD_LEN}-byte limit"
                )
            }
            Damage::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

/// Where and why a scan stopped before the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// Byte offset of the damaged record's header.
    pub offset: usize,
    pub damage: Damage,
    /// True when the damaged record is the file's tail: it is cut short, or it is the last
    /// record and fails its checksum, or nothing but zero bytes follows its start. Only such
    /// a record can be the trace of a crash mid-append; anything else is corruption.
    pub at_tail: bool,
}

/// The result of checking a whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Good records before `valid_len`.
    pub records: usize,
    /// Length of the prefix made of good records.
    pub valid_len: usize,
    /// `None` when the whole file is good records.
    pub stop: Option<Stop>,
}

/// Checks every record of `bytes` in order, stopping at the first damaged one.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut offset = 0;
    let mut records = 0;
    loop {
        let rest = &bytes[offset..];
        if rest.is_empty() {
            return Scan {
                records,
                valid_len: offset,
                stop: None,
            };
        }
        match check(rest) {
            Ok(record_len) => {
                offset += record_len;
                records += 1;
            }
            Err(damage) => {
                let at_tail = match damage {
                    Damage::TruncatedHeader { .. } | Damage::TruncatedPayload { .. } => true,
                    Damage::CrcMismatch { .. } => {
                        let ends_file = HEADER_LEN + declared_len(rest) == rest.len();
                        ends_file || rest.iter().all(|&b| b == 0)
                    }
                    Damage::LengthTooLarge { .. } => false,
                };
                let stop = Stop {
                    offset,
                    damage,
                    at_tail,
                };
                return Scan {
                    records,
                    valid_len: offset,
                    stop: Some(stop),
                };
            }
        }
    }
}

/// Checks the record at the start of `rest` (non-empty) and returns its total length.
fn check(rest: &[u8]) -> Result<usize, Damage> {
    let Some(header) = rest.get(..HEADER_LEN) else {
        return Err(Damage::TruncatedHeader { have: rest.len() });
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_LEN {
        return Err(Damage::LengthTooLarge { len });
    }
    let end = HEADER_LEN + len as usize;
    let Some(payload) = rest.get(HEADER_LEN..end) else {
        return Err(Damage::TruncatedPayload {
            len,
            have: rest.len() - HEADER_LEN,
        });
    };
    let computed = crc32c::update(crc32c::checksum(&header[..4]), payload);
    if computed != stored {
        return Err(Damage::CrcMismatch { stored, computed });
    }
    Ok(end)
}

/// The payload length a header announces (0 if there is no full length field).
fn declared_len(rest: &[u8]) -> usize {
    match rest.get(..4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// Iterates over the payloads of bytes that [`scan`] found good (`&bytes[..valid_len]`).
/// On anything else it simply stops at the first record it cannot frame.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    pub fn new(checked: &'a [u8]) -> Self {
        Frames { rest: checked }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let len = declared_len(self.rest);
        let end = HEADER_LEN.checked_add(len)?;
        let payload = self.rest.get(HEADER_LEN..end)?;
        self.rest = self.rest.get(end..)?;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode(r.len() as u32, r, &mut out);
        }
        out
    }

    #[test]
    fn round_trip() {
        let records: [&[u8]; 4] = [b"a", b"", b"hello world", &[0u8; 300]];
        let bytes = file(&records);
        let scan = scan(&bytes);
        assert_eq!(
            scan,
            Scan {
                records: 4,
                valid_len: bytes.len(),
                stop: None
            }
        );
        let back: Vec<&[u8]> = Frames::new(&bytes).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn header_layout_is_little_endian_len_then_crc() {
        let bytes = file(&[b"abc"]);
        assert_eq!(&bytes[..4], &3u32.to_le_bytes());
        let crc = crc32c::update(crc32c::checksum(&3u32.to_le_bytes()), b"abc");
        assert_eq!(&bytes[4..8], &crc.to_le_bytes());
        assert_eq!(&bytes[8..], b"abc");
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_tail() {
        let bytes = file(&[b"first", b"second record"]);
        let first_len = HEADER_LEN + 5;
        for cut in first_len + 1..bytes.len() {
            let scan = scan(&bytes[..cut]);
            assert_eq!(scan.records, 1, "cut at {cut}");
            assert_eq!(scan.valid_len, first_len);
            let stop = scan.stop.unwrap();
            assert!(stop.at_tail, "cut at {cut}: {stop:?}");
        }
    }

    #[test]
    fn damage_in_front_of_good_records_is_not_a_tail() {
        let mut bytes = file(&[b"first", b"second", b"third"]);
        bytes[HEADER_LEN + 5 + HEADER_LEN] ^= 0x01; // a payload byte of "second"
        let stop = scan(&bytes).stop.unwrap();
        assert!(!stop.at_tail);
        assert!(matches!(stop.damage, Damage::CrcMismatch { .. }));
    }

    #[test]
    fn zero_filled_tail_is_a_tail_not_empty_records() {
        let mut bytes = file(&[b"first"]);
        bytes.extend_from_slice(&[0u8; 4096]);
        let scan = scan(&bytes);
        assert_eq!(scan.records, 1);
        assert!(scan.stop.unwrap().at_tail);
    }

    #[test]
    fn absurd_length_is_not_believed() {
        let mut bytes = file(&[b"first"]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 12]);
        let stop = scan(&bytes).stop.unwrap();
        assert_eq!(stop.damage, Damage::LengthTooLarge { len: u32::MAX });
        assert!(!stop.at_tail);
    }

    proptest::proptest! {
        /// Any bytes: the scan never panics, accounts for every byte, and what it calls good
        /// frames back exactly.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let scan = scan(&bytes);
            proptest::prop_assert!(scan.valid_len <= bytes.len());
            proptest::prop_assert_eq!(scan.stop.is_none(), scan.valid_len == bytes.len());
            proptest::prop_assert_eq!(Frames::new(&bytes[..scan.valid_len]).count(), scan.records);
            let _ = Frames::new(&bytes).count();
        }

        /// Valid records followed by any tail: the records always come back.
        #[test]
        fn good_prefix_survives_any_tail(
            records in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..8),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let mut bytes = file(&refs);
            let good = bytes.len();
            bytes.extend_from_slice(&tail);
            let scan = scan(&bytes);
            proptest::prop_assert!(scan.valid_len >= good);
            let back: Vec<&[u8]> = Frames::new(&bytes[..scan.valid_len]).take(refs.len()).collect();
            proptest::prop_assert_eq!(back, refs);
        }
    }

    #[test]
    fn frames_stop_on_garbage_without_panicking() {
        let garbage = [0xFFu8, 0xFF, 0xFF, 0x7F, 1, 2, 3];
        assert_eq!(Frames::new(&garbage).count(), 0);
    }
}
