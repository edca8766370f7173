//! What the daemon writes into its journal: one record per change to a session or its push
//! queue, and the same records, in a canonical order, as a snapshot when the journal is
//! compacted.
//!
//! ```text
//! byte 0  tag
//! then    the fields below, integers little-endian, strings and payloads to the end
//!
//! 1 COUNTERS  next_session u64, next_msg u64                  (snapshots only)
//! 2 GATEWAY   index u16, name                                   first use of a gateway id
//! 3 LOGIN     session u64, replaces u64 (0 = none), gateway u16, route u64,
//!             login_unix_ms u64, secret [16], device
//! 4 DETACH    session u64, at_unix_ms u64                       CLOSED, heartbeat timeout, vanished
//! 5 ATTACH    session u64, gateway u16, route u64               RESUME
//! 6 REMOVE    session u64                                       resume window over
//! 7 PUSH      session u64, msg u64, expires_unix_ms u64, payload
//! 8 ACK       session u64, msg u64                              acknowledged or expired
//! 9 JOIN      session u64, room                                 joined a room
//! 10 LEAVE    session u64, room                                 left a room
//! 11 GRANTS   session u64, rooms (one entry per line)           the token's `rooms` claim
//! ```
//!
//! A record is exactly its fields: one of fixed size with bytes after it does not parse.
//!
//! Heartbeats are not journaled: they would be most of the journal, and after a restart every
//! session gets a fresh deadline and its gateway re-announces it (see doc/state.md).

use thiserror::Error;

/// A journal record that does not parse, or that the state it is replayed onto cannot take:
/// either way the journal was not written by this daemon (or was damaged past its checksums),
/// and the daemon refuses to start on it rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
    #[error("record with tag {tag} is {len} bytes, too short")]
    TooShort { tag: u8, len: usize },
    #[error("record with tag {0} holds a name that is not UTF-8")]
    NotUtf8(u8),
    /// A record of fixed size with bytes after its last field.
    #[error("record with tag {tag} has {extra} bytes after its last field")]
    TrailingBytes { tag: u8, extra: usize },
    /// A record naming a gateway index that no GATEWAY record before it registered.
    #[error(
        "record with tag {tag} names gateway index {gateway}, which no GATEWAY record registered"
    )]
    UnknownGateway { tag: u8, gateway: u16 },
    /// A LOGIN or PUSH whose id is u64::MAX: there would be no next id to issue.
    #[error("record with tag {tag} holds id {id}, which leaves no next id")]
    IdOverflow { tag: u8, id: u64 },
    /// A LOGIN of a session id that a session already holds.
    #[error("record with tag {tag} logs in session {session}, which is already in use")]
    SessionInUse { tag: u8, session: u64 },
}

/// One change, borrowed from the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Counters {
        next_session: u64,
        next_msg: u64,
    },
    Gateway {
        index: u16,
        name: &'a str,
    },
    Login {
        session: u64,
        replaces: u64,
        gateway: u16,
        route: u64,
        login_unix_ms: u64,
        secret: [u8; 16],
        device: &'a str,
    },
    Detach {
        session: u64,
        at_unix_ms: u64,
    },
    Attach {
        session: u64,
        gateway: u16,
        route: u64,
    },
    Remove {
        session: u64,
    },
    Push {
        session: u64,
        msg: u64,
        expires_unix_ms: u64,
        payload: &'a [u8],
    },
    Ack {
        session: u64,
        msg: u64,
    },
    Join {
        session: u64,
        room: &'a str,
    },
    Leave {
        session: u64,
        room: &'a str,
    },
    Grants {
        session: u64,
        lines: &'a str,
    },
}

impl Record<'_> {
    /// The record's tag, its first byte.
    pub fn tag(&self) -> u8 {
        match self {
            Record::Counters { .. } => 1,
            Record::Gateway { .. } => 2,
            Record::Login { .. } => 3,
            Record::Detach { .. } => 4,
            Record::Attach { .. } => 5,
            Record::Remove { .. } => 6,
            Record::Push { .. } => 7,
            Record::Ack { .. } => 8,
            Record::Join { .. } => 9,
            Record::Leave { .. } => 10,
            Record::Grants { .. } => 11,
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match *self {
            Record::Counters {
                next_session,
                next_msg,
            } => {
                put(out, next_session);
                put(out, next_msg);
            }
            Record::Gateway { index, name } => {
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            Record::Login {
                session,
                replaces,
                gateway,
                route,
                login_unix_ms,
                secret,
                device,
            } => {
                put(out, session);
                put(out, replaces);
                out.extend_from_slice(&gateway.to_le_bytes());
                put(out, route);
                put(out, login_unix_ms);
                out.extend_from_slice(&secret);
                out.extend_from_slice(device.as_bytes());
            }
            Record::Detach {
                session,
                at_unix_ms,
            } => {
                put(out, session);
                put(out, at_unix_ms);
            }
            Record::Attach {
                session,
                gateway,
                route,
            } => {
                put(out, session);
                out.extend_from_slice(&gateway.to_le_bytes());
                put(out, route);
            }
            Record::Remove { session } => {
                put(out, session);
            }
            Record::Push {
                session,
                msg,
                expires_unix_ms,
                payload,
            } => {
                put(out, session);
                put(out, msg);
                put(out, expires_unix_ms);
                out.extend_from_slice(payload);
            }
            Record::Ack { session, msg } => {
                put(out, session);
                put(out, msg);
            }
            Record::Join { session, room } | Record::Leave { session, room } => {
                put(out, session);
                out.extend_from_slice(room.as_bytes());
            }
            Record::Grants { session, lines } => {
                put(out, session);
                out.extend_from_slice(lines.as_bytes());
            }
        }
    }

    /// Parses one record.
    pub fn decode(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
        let (&tag, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        let mut r = Reader { rest, tag };
        let record = match tag {
            1 => Record::Counters {
                next_session: r.u64()?,
                next_msg: r.u64()?,
            },
            2 => Record::Gateway {
                index: r.u16()?,
                name: r.text()?,
            },
            3 => Record::Login {
                session: r.u64()?,
                replaces: r.u64()?,
                gateway: r.u16()?,
                route: r.u64()?,
                login_unix_ms: r.u64()?,
                secret: r.array()?,
                device: r.text()?,
            },
            4 => Record::Detach {
                session: r.u64()?,
                at_unix_ms: r.u64()?,
            },
            5 => Record::Attach {
                session: r.u64()?,
                gateway: r.u16()?,
                route: r.u64()?,
            },
            6 => Record::Remove { session: r.u64()? },
            7 => Record::Push {
                session: r.u64()?,
                msg: r.u64()?,
                expires_unix_ms: r.u64()?,
                payload: r.rest(),
            },
            8 => Record::Ack {
                session: r.u64()?,
                msg: r.u64()?,
            },
            9 => Record::Join {
                session: r.u64()?,
                room: r.text()?,
            },
            10 => Record::Leave {
                session: r.u64()?,
                room: r.text()?,
            },
            11 => Record::Grants {
                session: r.u64()?,
                lines: r.text()?,
            },
            other => return Err(RecordError::UnknownTag(other)),
        };
        r.finish()?;
        Ok(record)
    }
}

fn put(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
    tag: u8,
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        match self.rest.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.rest = rest;
                Ok(*head)
            }
            None => Err(RecordError::TooShort {
                tag: self.tag,
                len: self.rest.len(),
            }),
        }
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        self.array().map(u64::from_le_bytes)
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        self.array().map(u16::from_le_bytes)
    }

    fn text(&mut self) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.rest()).map_err(|_| RecordError::NotUtf8(self.tag))
    }

    /// Everything left: the last field of a record that ends in a name or a payload.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// A record is exactly its fields: anything after the last one is damage.
    fn finish(self) -> Result<(), RecordError> {
        match self.rest.len() {
            0 => Ok(()),
            extra => Err(RecordError::TrailingBytes {
                tag: self.tag,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Record<'static>> {
        vec![
            Record::Counters {
                next_session: 9,
                next_msg: u64::MAX,
            },
            Record::Gateway {
                index: 3,
                name: "gw-1",
            },
            Record::Login {
                session: 7,
                replaces: 2,
                gateway: 3,
                route: 1 << 60,
                login_unix_ms: 1_800_000_000_000,
                secret: [5; 16],
                device: "phone-ü",
            },
            Record::Detach {
                session: 7,
                at_unix_ms: 12,
            },
            Record::Attach {
                session: 7,
                gateway: 1,
                route: 99,
            },
            Record::Remove { session: 7 },
            Record::Push {
                session: 7,
                msg: 44,
                expires_unix_ms: 1,
                payload: b"\x00hello",
            },
            Record::Push {
                session: 7,
                msg: 45,
                expires_unix_ms: 1,
                payload: b"",
            },
            Record::Ack {
                session: 7,
                msg: 44,
            },
            Record::Join {
                session: 7,
                room: "lobby",
            },
            Record::Leave {
                session: 7,
                room: "chat/ü",
            },
            Record::Grants {
                session: 7,
                lines: "lobby\nchat/*",
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for record in all() {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(Record::decode(&bytes), Ok(record));
        }
    }

    #[test]
    fn a_cut_record_is_an_error_never_a_panic() {
        for record in all() {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            for cut in 0..bytes.len() {
                let _ = Record::decode(&bytes[..cut]);
            }
        }
        assert_eq!(Record::decode(&[]), Err(RecordError::Empty));
        assert_eq!(Record::decode(&[42]), Err(RecordError::UnknownTag(42)));
        assert!(matches!(
            Record::decode(&[4, 1, 2]),
            Err(RecordError::TooShort { tag: 4, .. })
        ));
    }

    #[test]
    fn a_fixed_size_record_with_bytes_after_it_is_refused() {
        for record in all() {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            bytes.push(0);
            let decoded = Record::decode(&bytes);
            match record {
                // The name or payload takes the byte.
                Record::Gateway { .. }
                | Record::Login { .. }
                | Record::Push { .. }
                | Record::Join { .. }
                | Record::Leave { .. }
                | Record::Grants { .. } => {
                    assert!(decoded.is_ok(), "{record:?}: {decoded:?}")
                }
                _ => assert_eq!(
                    decoded,
                    Err(RecordError::TrailingBytes {
                        tag: record.tag(),
                        extra: 1
                    })
                ),
            }
        }
    }

    proptest::proptest! {
        /// Any bytes decode to a record or an error, never a panic, and a record decoded
        /// encodes back to exactly the bytes it came from.
        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_round_trips(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            tag in 0u8..13,
        ) {
            let mut bytes = bytes;
            if let Some(first) = bytes.first_mut() {
                *first = tag; // mostly tags that exist
            }
            if let Ok(record) = Record::decode(&bytes) {
                let mut again = Vec::new();
                record.encode(&mut again);
                proptest::prop_assert_eq!(again, bytes);
            }
        }
    }
}
