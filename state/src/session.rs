//! One device's session: where it is connected, when it last showed life, how it resumes,
//! and the pushes it has not acknowledged yet.
//!
//! A session is kept small (the daemon holds a million of them): times are milliseconds on
//! the daemon's monotonic clock, the gateway is an index into the store's table of gateway
//! ids, and the push queue is a separate allocation that only sessions with pushes in flight
//! pay for.

use std::collections::VecDeque;

use std::sync::Arc;

use crate::token::RoomGrants;
use crate::wheel::TimerId;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Connected through `gateway` as `route`.
    Online,
    /// No connection since `since_ms`; resumable until `since_ms + resume_window`.
    Detached { since_ms: u64 },
}

pub(crate) struct Session {
    /// Unique for the life of the journal; never 0.
    pub id: u64,
    /// The token's `sub`.
    pub device: Box<str>,
    pub secret: [u8; 16],
    /// Gateway index and route of the last connection (also kept while detached, for views).
    pub gateway: u16,
    pub route: u64,
    pub presence: Presence,
    /// The gateway link epoch this session was last attached or announced in: sessions of an
    /// older epoch that the gateway does not re-announce have vanished.
    pub epoch: u32,
    pub login_unix_ms: u64,
    /// Monotonic ms of the last heartbeat (or attach).
    pub last_heartbeat_ms: u64,
    /// The heartbeat deadline while online, the resume expiry while detached.
    pub timer: Option<TimerId>,
    pub pushes: Option<Box<Pushes>>,
    /// Its rooms and what its token lets it join; `None` (8 bytes) for most sessions.
    pub rooms: Option<Box<SessionRooms>>,
}

/// A session's rooms and its `rooms` claim.
#[derive(Debug, Default)]
pub(crate) struct SessionRooms {
    /// Indexes into the store's rooms.
    pub list: Vec<u32>,
    /// The rooms its token lets it join by itself.
    pub grants: Option<Arc<RoomGrants>>,
}

impl SessionRooms {
    /// `None` when there is nothing to keep.
    pub(crate) fn boxed(list: Vec<u32>, grants: Option<Arc<RoomGrants>>) -> Option<Box<Self>> {
        (!list.is_empty() || grants.is_some()).then(|| Box::new(SessionRooms { list, grants }))
    }
}

impl Session {
    /// The rooms it is in.
    pub(crate) fn room_list(&self) -> &[u32] {
        self.rooms.as_ref().map_or(&[], |r| &r.list)
    }

    /// What its token lets it join by itself.
    pub(crate) fn grants(&self) -> Option<&RoomGrants> {
        self.rooms.as_ref().and_then(|r| r.grants.as_deref())
    }

    /// Its rooms, to change them.
    pub(crate) fn rooms_mut(&mut self) -> &mut SessionRooms {
        self.rooms.get_or_insert_with(Box::default)
    }

    /// Drops the rooms' box once it holds nothing.
    pub(crate) fn tidy_rooms(&mut self) {
        if self
            .rooms
            .as_ref()
            .is_some_and(|r| r.list.is_empty() && r.grants.is_none())
        {
            self.rooms = None;
        }
    }

    pub(crate) fn is_online(&self) -> bool {
        self.presence == Presence::Online
    }

    pub(crate) fn pending(&self) -> usize {
        self.pushes.as_ref().map_or(0, |p| p.queue.len())
    }

    /// Payload bytes of the pushes waiting for an ACK.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.pushes.as_ref().map_or(0, |p| {
            p.queue.iter().map(|push| push.payload.len() as u64).sum()
        })
    }

    /// The resume token handed to the client: `<session hex16>.<secret hex32>`.
    pub(crate) fn resume_token(&self) -> String {
        resume_token(self.id, &self.secret)
    }
}

/// A session's id and secret, taken before the session opens: the fleet writes them to the
/// router table with the login's claim, and the session then opens as them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved {
    pub session: u64,
    pub secret: [u8; 16],
}

impl Reserved {
    /// The resume token the session will have.
    pub(crate) fn resume_token(&self) -> String {
        resume_token(self.session, &self.secret)
    }
}

fn resume_token(session: u64, secret: &[u8; 16]) -> String {
    let mut token = String::with_capacity(49);
    push_hex(&mut token, &session.to_be_bytes());
    token.push('.');
    push_hex(&mut token, secret);
    token
}

/// Appends `bytes` in lowercase hex (a token or hash is made on every login: this is a
/// table lookup per nibble, where `format!` costs a formatter call per byte).
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// A session's unacknowledged pushes, oldest first, and its retransmit timer.
#[derive(Default)]
pub(crate) struct Pushes {
    pub queue: VecDeque<Push>,
    /// Fires at the earliest retransmit or expiry among the queue.
    pub timer: Option<TimerId>,
}

pub(crate) struct Push {
    pub msg: u64,
    pub payload: Box<[u8]>,
    /// Wall-clock expiry (it is journaled and must survive restarts).
    pub expires_unix_ms: u64,
    /// Times sent on the current connection.
    pub sends: u32,
    /// Monotonic ms of the next retransmit, when `sends` is below the limit.
    pub next_send_ms: u64,
}

/// A resume token split into its parts; `None` when it is not of the documented shape.
pub(crate) fn parse_resume_token(token: &[u8]) -> Option<(u64, [u8; 16])> {
    let token = std::str::from_utf8(token).ok()?;
    let (id, secret) = token.split_once('.')?;
    if id.len() != 16 || secret.len() != 32 {
        return None;
    }
    let id = u64::from_str_radix(id, 16).ok()?;
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(secret.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((id, bytes))
}

/// Compares secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_tokens_round_trip_and_bad_ones_are_refused() {
        let session = Session {
            id: 0xabc,
            device: "d".into(),
            secret: [0x1f; 16],
            gateway: 0,
            route: 0,
            presence: Presence::Online,
            epoch: 0,
            login_unix_ms: 0,
            last_heartbeat_ms: 0,
            timer: None,
            pushes: None,
            rooms: None,
        };
        let token = session.resume_token();
        assert_eq!(token, format!("0000000000000abc.{}", "1f".repeat(16)));
        assert_eq!(
            parse_resume_token(token.as_bytes()),
            Some((0xabc, [0x1f; 16]))
        );
        for bad in [
            "",
            ".",
            "0000000000000abc",
            "0000000000000abc.1f",
            "xyz.abc",
            "é",
        ] {
            assert_eq!(parse_resume_token(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(
            parse_resume_token(format!("000000000000zabc.{}", "1f".repeat(16)).as_bytes()),
            None
        );
        assert!(same_secret(&[1; 16], &[1; 16]));
        assert!(!same_secret(&[1; 16], &[2; 16]));
    }
}
