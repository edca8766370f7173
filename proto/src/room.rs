//! Room bodies: names, the batch of messages a ROOM frame carries, and the bodies of JOIN,
//! LEAVE, MEMBERSHIP and the publishes (NODE_PUBLISH, STATE_PUBLISH).
//!
//! ```text
//! ROOM body       | flags u8 | name_len u8 | name | n × ( seq u64 | len u32 | payload ) |
//! JOIN body       | after u64 | name |
//! LEAVE body      | name |
//! publish body    | name_len u8 | name | payload |
//! MEMBERSHIP body | route u64 | n × ( name_len u8 | name ) |
//! ```
//!
//! A ROOM body is built once by the state daemon for a whole window of messages and is sent
//! as it is to every member: [`BatchWriter`] appends to it, [`Batch::parse`] reads it back.
//! A name is 1–[`MAX_NAME`] bytes of UTF-8 without control characters; the empty name in a
//! ROOM body means the broadcast to every session.

use crate::body::BodyError;

/// Longest room name, in bytes.
pub const MAX_NAME: usize = 128;
/// ROOM flag: earlier messages of this window were dropped for the latest (a conflating room).
pub const CONFLATED: u8 = 0x01;
/// ROOM flag: these messages come from the room's history, answering a JOIN's `after`.
pub const REPLAY: u8 = 0x02;
/// Bytes one message adds to a ROOM body besides its payload.
pub const ENTRY_OVERHEAD: usize = 12;

/// Whether `name` may name a room (1–128 bytes, no control characters).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.chars().any(char::is_control)
}

fn room_name(bytes: &[u8]) -> Result<&str, BodyError> {
    let name = std::str::from_utf8(bytes).map_err(|_| BodyError::BadRoomName)?;
    if valid_name(name) {
        Ok(name)
    } else {
        Err(BodyError::BadRoomName)
    }
}

/// A JOIN (or STATE_JOIN after its route): replay what the room's history holds after `after`
/// (0: nothing), and join `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join<'a> {
    pub after: u64,
    pub room: &'a str,
}

impl<'a> Join<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Join<'a>, BodyError> {
        let Some((after, name)) = body.split_first_chunk::<8>() else {
            return Err(BodyError::TooShort {
                len: body.len(),
                need: 9,
            });
        };
        Ok(Join {
            after: u64::from_be_bytes(*after),
            room: room_name(name)?,
        })
    }

    /// Appends the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.after.to_be_bytes());
        out.extend_from_slice(self.room.as_bytes());
    }
}

/// A LEAVE body (or STATE_LEAVE's after its route): the room's name.
pub fn leave(body: &[u8]) -> Result<&str, BodyError> {
    room_name(body)
}

/// A publish (NODE_PUBLISH, STATE_PUBLISH): `payload` for every member of `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish<'a> {
    pub room: &'a str,
    pub payload: &'a [u8],
}

impl<'a> Publish<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Publish<'a>, BodyError> {
        let (name, payload) = split_name(body)?;
        Ok(Publish {
            room: room_name(name)?,
            payload,
        })
    }

    /// Bytes of the body.
    pub fn body_len(&self) -> usize {
        1 + self.room.len() + self.payload.len()
    }

    /// Appends the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        put_name(out, self.room);
        out.extend_from_slice(self.payload);
    }
}

/// The rooms of a MEMBERSHIP body (after its route), each checked.
pub fn names(mut body: &[u8]) -> impl Iterator<Item = Result<&str, BodyError>> {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        let item = match split_name(body) {
            Ok((name, rest)) => {
                body = rest;
                room_name(name)
            }
            Err(e) => Err(e),
        };
        if item.is_err() {
            body = &[]; // nothing after a bad name can be trusted
        }
        Some(item)
    })
}

/// Appends one name of a MEMBERSHIP body.
pub fn put_name(out: &mut Vec<u8>, name: &str) {
    // Names are checked (≤ 128 bytes) before they are ever written.
    out.push(name.len().min(MAX_NAME) as u8);
    out.extend_from_slice(&name.as_bytes()[..name.len().min(MAX_NAME)]);
}

fn split_name(body: &[u8]) -> Result<(&[u8], &[u8]), BodyError> {
    let (&len, rest) = body
        .split_first()
        .ok_or(BodyError::TooShort { len: 0, need: 1 })?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(BodyError::TooShort {
            len: body.len(),
            need: 1 + len,
        });
    }
    Ok(rest.split_at(len))
}

/// One room message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// A ROOM body, checked whole: its flags, its room (empty: the broadcast) and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub flags: u8,
    pub room: &'a str,
    entries: &'a [u8],
}

impl<'a> Batch<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Batch<'a>, BodyError> {
        let (&flags, rest) = body
            .split_first()
            .ok_or(BodyError::TooShort { len: 0, need: 2 })?;
        let (name, entries) = split_name(rest)?;
        let room = if name.is_empty() {
            ""
        } else {
            room_name(name)?
        };
        let batch = Batch {
            flags,
            room,
            entries,
        };
        let mut rest = entries;
        while !rest.is_empty() {
            rest = split_entry(rest)?.1;
        }
        Ok(batch)
    }

    /// The messages, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> {
        let mut rest = self.entries;
        std::iter::from_fn(move || {
            let (entry, after) = split_entry(rest).ok()?;
            rest = after;
            Some(entry)
        })
    }
}

fn split_entry(bytes: &[u8]) -> Result<(Entry<'_>, &[u8]), BodyError> {
    let short = BodyError::TooShort {
        len: bytes.len(),
        need: ENTRY_OVERHEAD,
    };
    let (seq, rest) = bytes.split_first_chunk::<8>().ok_or(short)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(short)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(BodyError::TooShort {
            len: bytes.len(),
            need: ENTRY_OVERHEAD + len,
        });
    }
    let (payload, rest) = rest.split_at(len);
    Ok((
        Entry {
            seq: u64::from_be_bytes(*seq),
            payload,
        },
        rest,
    ))
}

/// Builds a ROOM body in a caller's buffer: [`BatchWriter::start`], then one
/// [`BatchWriter::push`] per message.
#[derive(Debug, Default)]
pub struct BatchWriter {
    /// Where the flags byte is in the buffer.
    flags_at: usize,
    entries: usize,
    last_seq: u64,
}

impl BatchWriter {
    /// Starts a batch for `room` ("" for the broadcast) at the end of `out`.
    pub fn start(out: &mut Vec<u8>, flags: u8, room: &str) -> BatchWriter {
        let flags_at = out.len();
        out.push(flags);
        put_name(out, room);
        BatchWriter {
            flags_at,
            entries: 0,
            last_seq: 0,
        }
    }

    /// Appends one message.
    pub fn push(&mut self, out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
        out.extend_from_slice(&seq.to_be_bytes());
        // Payloads are bounded by the daemon's max_payload, far below 4 GiB.
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        self.entries += 1;
        self.last_seq = seq;
    }

    /// Sets a flag on the batch after the fact (a conflated window).
    pub fn flag(&self, out: &mut [u8], flag: u8) {
        if let Some(byte) = out.get_mut(self.flags_at) {
            *byte |= flag;
        }
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The sequence number of the last message pushed (the frame's id).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips() {
        let mut out = vec![0xEE]; // something before it
        let mut writer = BatchWriter::start(&mut out, 0, "lobby");
        writer.push(&mut out, 7, b"hello");
        writer.push(&mut out, 8, b"");
        writer.flag(&mut out, CONFLATED);
        assert_eq!((writer.entries(), writer.last_seq()), (2, 8));
        let batch = Batch::parse(&out[1..]).unwrap();
        assert_eq!((batch.flags, batch.room), (CONFLATED, "lobby"));
        let entries: Vec<Entry<'_>> = batch.entries().collect();
        assert_eq!(
            entries,
            [
                Entry {
                    seq: 7,
                    payload: b"hello"
                },
                Entry {
                    seq: 8,
                    payload: b""
                }
            ]
        );
        // The broadcast has the empty name.
        let mut out = Vec::new();
        BatchWriter::start(&mut out, 0, "").push(&mut out, 1, b"x");
        assert_eq!(Batch::parse(&out).unwrap().room, "");
    }

    #[test]
    fn cut_or_bad_bodies_are_errors_never_panics() {
        let mut out = Vec::new();
        let mut writer = BatchWriter::start(&mut out, 0, "r");
        writer.push(&mut out, 1, b"abc");
        for cut in 0..out.len() {
            if cut != 3 {
                // 3 bytes is a whole batch with no message.
                assert!(Batch::parse(&out[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(Batch::parse(&[0, 1, 0x07]).is_err()); // a control character
        assert!(Join::parse(&[0; 8]).is_err()); // no name
        assert!(Join::parse(&[0; 7]).is_err());
        assert!(leave(&[0xff]).is_err());
        assert!(leave("a".repeat(129).as_bytes()).is_err());
        assert!(Publish::parse(&[5, b'a']).is_err());
        assert!(Publish::parse(&[0, b'a']).is_err()); // an empty name
    }

    #[test]
    fn joins_publishes_and_membership_round_trip() {
        let mut out = Vec::new();
        Join {
            after: 9,
            room: "chat/1",
        }
        .write(&mut out);
        assert_eq!(
            Join::parse(&out).unwrap(),
            Join {
                after: 9,
                room: "chat/1"
            }
        );
        out.clear();
        let publish = Publish {
            room: "r",
            payload: b"p",
        };
        publish.write(&mut out);
        assert_eq!(out.len(), publish.body_len());
        assert_eq!(Publish::parse(&out).unwrap(), publish);
        out.clear();
        put_name(&mut out, "a");
        put_name(&mut out, "bé");
        let got: Result<Vec<&str>, _> = names(&out).collect();
        assert_eq!(got.unwrap(), ["a", "bé"]);
        assert_eq!(names(&[]).count(), 0);
        let bad: Vec<_> = names(&[3, b'a']).collect();
        assert_eq!(bad.len(), 1);
        assert!(bad[0].is_err());
        assert!(valid_name("x") && !valid_name("") && !valid_name("a\nb"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            if let Ok(batch) = Batch::parse(&bytes) {
                let _ = batch.entries().count();
            }
            let _ = Join::parse(&bytes);
            let _ = Publish::parse(&bytes);
            let _ = names(&bytes).count();
        }
    }
}
