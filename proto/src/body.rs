//! Parsers for structured bodies: routed bodies (REQUEST, RESPONSE and the state kinds that
//! start with a route), ERROR, route + code + reason (NODE_ERROR, LOGIN_FAIL, KICK) and route
//! lists (ANNOUNCE, HEARTBEAT).
//!
//! They borrow from the frame's body and never allocate. A body too short for its fixed part
//! is a [`BodyError`]; the receiver treats it as BAD_FRAME.

use thiserror::Error;

/// A body that does not hold what its kind requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("body of {len} bytes is shorter than the {need} bytes its kind requires")]
    TooShort { len: usize, need: usize },
    #[error("reason is not valid UTF-8")]
    ReasonNotUtf8,
    #[error("a route list of {len} bytes is not a whole number of 8-byte routes")]
    PartialRoute { len: usize },
    #[error("a room name must be 1–128 bytes of UTF-8 without control characters")]
    BadRoomName,
}

/// A backend body: the u64 route key, then the payload (REQUEST, RESPONSE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed<'a> {
    pub route: u64,
    pub payload: &'a [u8],
}

impl<'a> Routed<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Routed<'a>, BodyError> {
        let (route, payload) = split_u64(body)?;
        Ok(Routed { route, payload })
    }
}

/// An ERROR body: u16 code + UTF-8 reason. The code is kept raw, because a peer may send a
/// code this version does not know; [`crate::ErrorCode::from_u16`] names it when it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> ErrorBody<'a> {
    pub fn parse(body: &'a [u8]) -> Result<ErrorBody<'a>, BodyError> {
        let (code, reason) = split_u16(body)?;
        let reason = std::str::from_utf8(reason).map_err(|_| BodyError::ReasonNotUtf8)?;
        Ok(ErrorBody { code, reason })
    }
}

/// A NODE_ERROR body: route + u16 code + UTF-8 reason. LOGIN_FAIL and KICK share the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeErrorBody<'a> {
    pub route: u64,
    pub code: u16,
    pub reason: &'a str,
}

impl<'a> NodeErrorBody<'a> {
    pub fn parse(body: &'a [u8]) -> Result<NodeErrorBody<'a>, BodyError> {
        if body.len() < 10 {
            return Err(BodyError::TooShort {
                len: body.len(),
                need: 10,
            });
        }
        let (route, rest) = split_u64(body)?;
        let error = ErrorBody::parse(rest)?;
        Ok(NodeErrorBody {
            route,
            code: error.code,
            reason: error.reason,
        })
    }
}

/// A route-list body (ANNOUNCE, HEARTBEAT): n × u64 route, n ≥ 0.
pub fn routes(body: &[u8]) -> Result<impl Iterator<Item = u64> + '_, BodyError> {
    if body.len() % 8 != 0 {
        return Err(BodyError::PartialRoute { len: body.len() });
    }
    Ok(body
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
}

fn split_u64(body: &[u8]) -> Result<(u64, &[u8]), BodyError> {
    match body.split_first_chunk::<8>() {
        Some((head, rest)) => Ok((u64::from_be_bytes(*head), rest)),
        None => Err(BodyError::TooShort {
            len: body.len(),
            need: 8,
        }),
    }
}

fn split_u16(body: &[u8]) -> Result<(u16, &[u8]), BodyError> {
    match body.split_first_chunk::<2>() {
        Some((head, rest)) => Ok((u16::from_be_bytes(*head), rest)),
        None => Err(BodyError::TooShort {
            len: body.len(),
            need: 2,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Decoder, ErrorCode, Kind};

    #[test]
    fn route_lists_round_trip_and_reject_a_partial_route() {
        let decoder = Decoder::default();
        let mut out = Vec::new();
        encode::routes(&mut out, Kind::Heartbeat, &[1, u64::MAX, 7]);
        let (frame, _) = decoder.decode(&out).unwrap().unwrap();
        assert_eq!((frame.kind, frame.id), (Kind::Heartbeat, 0));
        assert_eq!(
            routes(frame.body).unwrap().collect::<Vec<_>>(),
            [1, u64::MAX, 7]
        );
        assert_eq!(routes(&[]).unwrap().count(), 0);
        assert_eq!(
            routes(&[0; 9]).err(),
            Some(BodyError::PartialRoute { len: 9 })
        );

        out.clear();
        encode::routed_error(&mut out, Kind::Kick, 0, 9, ErrorCode::Kicked, "replaced");
        let (frame, _) = decoder.decode(&out).unwrap().unwrap();
        let parsed = NodeErrorBody::parse(frame.body).unwrap();
        assert_eq!((frame.kind, parsed.route, parsed.code), (Kind::Kick, 9, 12));
        assert_eq!(parsed.reason, "replaced");
    }

    #[test]
    fn parses_what_the_encoders_write() {
        let decoder = Decoder::default();
        let mut out = Vec::new();
        encode::routed(&mut out, Kind::Response, 3, 77, b"payload");
        let (frame, _) = decoder.decode(&out).unwrap().unwrap();
        assert_eq!(
            Routed::parse(frame.body).unwrap(),
            Routed {
                route: 77,
                payload: b"payload"
            }
        );

        out.clear();
        encode::node_error(&mut out, 3, 77, ErrorCode::Overloaded, "queue full");
        let (frame, _) = decoder.decode(&out).unwrap().unwrap();
        let parsed = NodeErrorBody::parse(frame.body).unwrap();
        assert_eq!((parsed.route, parsed.code), (77, 6));
        assert_eq!(parsed.reason, "queue full");

        out.clear();
        encode::error(&mut out, 0, ErrorCode::Timeout, "");
        let (frame, _) = decoder.decode(&out).unwrap().unwrap();
        assert_eq!(
            ErrorBody::parse(frame.body).unwrap(),
            ErrorBody {
                code: 10,
                reason: ""
            }
        );
    }

    #[test]
    fn short_or_invalid_bodies_are_errors() {
        assert!(Routed::parse(&[1, 2, 3]).is_err());
        assert!(ErrorBody::parse(&[1]).is_err());
        assert_eq!(
            ErrorBody::parse(&[0, 1, 0xff]),
            Err(BodyError::ReasonNotUtf8)
        );
        assert!(NodeErrorBody::parse(&[0; 9]).is_err());
        assert!(Routed::parse(&[0; 8]).unwrap().payload.is_empty());
    }
}
