//! Fuzz target: arbitrary bytes through the state daemon's journal reader, the path from the
//! bytes of a journal or snapshot file to [`Record`]s: `journal::frame::scan` checks the file,
//! `journal::frame::Frames` cuts the good part into payloads, `Record::decode` parses each.
//!
//! Input layout: byte 0 picks how the rest is read.
//! - even: the rest is a file exactly as found on disk. A fuzzer rarely forges a CRC-32C, so
//!   this mostly exercises the damage checks (lengths, truncation, checksums, zero tails).
//! - odd: the rest is a list of record payloads, each preceded by a u8 length (the last one
//!   takes whatever is left when it is cut short). The target frames them with
//!   `frame::encode`, so mutations reach `Record::decode` through valid checksums; then it
//!   cuts the file one byte short, which must be a torn tail after the other records.
//!
//! Invariants checked:
//! - `scan` never panics and accounts for every byte: the good prefix, then a stop at its end
//!   exactly when the file is not all good records;
//! - `Frames` over the good prefix yields exactly `scan`'s record count, and framing those
//!   payloads again gives back the good prefix byte for byte;
//! - a file the target framed itself scans clean and frames back to the payloads it was
//!   made of; cut short, it stops at its last record, as a tail;
//! - `Record::decode` never panics; what it decodes re-encodes to exactly the bytes it was
//!   decoded from (a fixed-size record with bytes after its last field is `TrailingBytes`,
//!   and decodes without them), and decodes again to the same record; it never returns an
//!   error only replay can judge (unknown gateway, id overflow, session in use).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_state::journal::frame::{self, Damage, Frames};
use tether_state::journal::{HEADER_LEN, MAX_RECORD_LEN};
use tether_state::record::{Record, RecordError};

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check_file(rest);
    } else {
        check_framed(&payloads(rest));
    }
});

/// Splits `bytes` into u8-length-prefixed payloads; a cut-short last one keeps what is left.
fn payloads(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let (payload, after) = rest.split_at(rest.len().min(usize::from(len)));
        out.push(payload);
        bytes = after;
    }
    out
}

/// A file as found on disk: whatever `scan` calls good is framed, decoded and re-encoded.
fn check_file(bytes: &[u8]) -> Vec<&[u8]> {
    let scan = frame::scan(bytes);
    assert!(scan.valid_len <= bytes.len());
    assert_eq!(scan.stop.is_none(), scan.valid_len == bytes.len());
    if let Some(stop) = scan.stop {
        assert_eq!(stop.offset, scan.valid_len);
        check_damage(&bytes[stop.offset..], stop.damage, stop.at_tail);
    }

    let good = &bytes[..scan.valid_len];
    let records: Vec<&[u8]> = Frames::new(good).collect();
    assert_eq!(records.len(), scan.records);
    let mut again = Vec::with_capacity(good.len());
    for payload in &records {
        assert!(payload.len() as u64 <= u64::from(MAX_RECORD_LEN));
        frame::encode(payload.len() as u32, payload, &mut again);
        check_record(payload);
    }
    assert_eq!(
        again, good,
        "framing the good records again changed the bytes"
    );

    // Frames on bytes scan did not check must stop without panicking, and never yield more
    // than the file can hold.
    assert!(Frames::new(bytes).count() <= bytes.len() / HEADER_LEN);
    records
}

/// The damage `scan` reports is the one the record's first bytes call for.
fn check_damage(rest: &[u8], damage: Damage, at_tail: bool) {
    assert!(!rest.is_empty());
    match damage {
        Damage::TruncatedHeader { have } => {
            assert_eq!(have, rest.len());
            assert!(have < HEADER_LEN);
            assert!(at_tail);
        }
        Damage::TruncatedPayload { len, have } => {
            assert!(len <= MAX_RECORD_LEN);
            assert_eq!(have, rest.len() - HEADER_LEN);
            assert!(have < len as usize);
            assert_eq!(rest[..4], len.to_le_bytes());
            assert!(at_tail);
        }
        Damage::LengthTooLarge { len } => {
            assert!(len > MAX_RECORD_LEN);
            assert_eq!(rest[..4], len.to_le_bytes());
            assert!(!at_tail);
        }
        Damage::CrcMismatch { stored, computed } => {
            assert_ne!(stored, computed);
            assert_eq!(rest[4..8], stored.to_le_bytes());
            let end =
                HEADER_LEN + u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let payload = &rest[HEADER_LEN..end];
            assert_eq!(
                frame::header(payload.len() as u32, payload)[4..],
                computed.to_le_bytes()
            );
            let tail = end == rest.len() || rest.iter().all(|&b| b == 0);
            assert_eq!(at_tail, tail);
        }
    }
}

/// Payloads framed by the journal's own encoder: they must all come back, and a cut in the
/// last one must be a torn tail.
fn check_framed(payloads: &[&[u8]]) {
    let mut file = Vec::new();
    for payload in payloads {
        frame::encode(payload.len() as u32, payload, &mut file);
    }
    let scan = frame::scan(&file);
    assert_eq!(scan.stop, None);
    assert_eq!(scan.records, payloads.len());
    assert_eq!(check_file(&file), payloads);

    if let Some(last) = payloads.last() {
        let cut = frame::scan(&file[..file.len() - 1]);
        assert_eq!(cut.records, payloads.len() - 1);
        assert_eq!(cut.valid_len, file.len() - HEADER_LEN - last.len());
        let stop = cut.stop.expect("a file cut short is damaged");
        assert!(stop.at_tail, "a cut last record is a tail: {stop:?}");
    }
}

/// `Record::decode` never panics, and what it decodes encodes back to the bytes it read.
fn check_record(payload: &[u8]) {
    let record = match Record::decode(payload) {
        Ok(record) => record,
        Err(RecordError::Empty) => return assert!(payload.is_empty()),
        Err(RecordError::UnknownTag(tag)) => return assert_eq!(tag, payload[0]),
        Err(RecordError::TooShort { tag, len }) => {
            assert_eq!(tag, payload[0]);
            assert!(len < payload.len());
            return;
        }
        Err(RecordError::NotUtf8(tag)) => {
            assert_eq!(tag, payload[0]);
            // The records that end in a name: GATEWAY, LOGIN, JOIN, LEAVE, GRANTS.
            assert!(matches!(tag, 2 | 3 | 9 | 10 | 11));
            return;
        }
        Err(RecordError::TrailingBytes { tag, extra }) => {
            assert_eq!(tag, payload[0]);
            assert!(extra > 0 && extra < payload.len());
            // Without its extra bytes the record decodes.
            assert!(Record::decode(&payload[..payload.len() - extra]).is_ok());
            return;
        }
        Err(
            e @ (RecordError::UnknownGateway { .. }
            | RecordError::IdOverflow { .. }
            | RecordError::SessionInUse { .. }),
        ) => panic!("decoding judged what only replay can: {e}"),
    };
    // Anything that decodes re-encodes to exactly its bytes.
    let mut out = Vec::new();
    record.encode(&mut out);
    assert_eq!(out, payload, "re-encoding changed the record");
    assert_eq!(Record::decode(&out), Ok(record));
}
