//! Encoders that append frames to a caller's `Vec<u8>`.
//!
//! Bodies made of several parts (a route key and a payload, an error code and a reason) are
//! written part by part, so no temporary body is ever built. Nothing here allocates unless
//! `out` has to grow, and a reused `out` stops growing.

use crate::error_code::ErrorCode;
use crate::frame::{HEADER_LEN, MIN_LEN};
use crate::kind::Kind;

/// Appends a header for a body of `body_len` bytes; the caller appends the body.
///
/// # Panics
/// When `body_len` exceeds `u32::MAX - 10`, which no v1 frame can carry. Bodies that came
/// from the network are bounded by `max_body` long before that.
pub fn header(out: &mut Vec<u8>, kind: Kind, flags: u8, id: u64, body_len: usize) {
    let len = u32::try_from(body_len)
        .ok()
        .and_then(|b| b.checked_add(MIN_LEN))
        .expect("frame body longer than a v1 length field can describe");
    out.reserve(HEADER_LEN + body_len);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind.as_u8());
    out.push(flags);
    out.extend_from_slice(&id.to_be_bytes());
}

/// Appends a frame whose body is `body`.
pub fn frame(out: &mut Vec<u8>, kind: Kind, id: u64, body: &[u8]) {
    header(out, kind, 0, id, body.len());
    out.extend_from_slice(body);
}

/// Appends a backend frame whose body is a route key followed by `payload`
/// (REQUEST, RESPONSE).
pub fn routed(out: &mut Vec<u8>, kind: Kind, id: u64, route: u64, payload: &[u8]) {
    header(out, kind, 0, id, 8 + payload.len());
    out.extend_from_slice(&route.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends an ERROR frame: u16 code + UTF-8 reason.
pub fn error(out: &mut Vec<u8>, id: u64, code: ErrorCode, reason: &str) {
    header(out, Kind::Error, 0, id, 2 + reason.len());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a NODE_ERROR frame: route + u16 code + UTF-8 reason.
pub fn node_error(out: &mut Vec<u8>, id: u64, route: u64, code: ErrorCode, reason: &str) {
    routed_error(out, Kind::NodeError, id, route, code, reason);
}

/// Appends a frame whose body is route + u16 code + UTF-8 reason: NODE_ERROR, LOGIN_FAIL, KICK.
pub fn routed_error(
    out: &mut Vec<u8>,
    kind: Kind,
    id: u64,
    route: u64,
    code: ErrorCode,
    reason: &str,
) {
    header(out, kind, 0, id, 8 + 2 + reason.len());
    out.extend_from_slice(&route.to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// Appends a frame whose body is a list of u64 routes (ANNOUNCE, HEARTBEAT).
pub fn routes(out: &mut Vec<u8>, kind: Kind, routes: &[u64]) {
    header(out, kind, 0, 0, 8 * routes.len());
    for route in routes {
        out.extend_from_slice(&route.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_frame_bytes_match_design() {
        let mut out = Vec::new();
        frame(&mut out, Kind::Data, 7, b"hi");
        assert_eq!(
            out,
            [0, 0, 0, 12, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 7, b'h', b'i']
        );
    }

    #[test]
    fn error_frame_bytes_match_design() {
        let mut out = Vec::new();
        error(&mut out, 9, ErrorCode::FrameTooLarge, "big");
        let mut expected = vec![0, 0, 0, 15, 0x0A, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2];
        expected.extend_from_slice(b"big");
        assert_eq!(out, expected);
    }

    #[test]
    fn routed_and_node_error_put_the_route_first() {
        let mut out = Vec::new();
        routed(&mut out, Kind::Request, 1, 0x0102_0304_0506_0708, b"x");
        assert_eq!(&out[4..6], &[0x81, 0]);
        assert_eq!(&out[14..22], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&out[22..], b"x");

        out.clear();
        node_error(&mut out, 1, 42, ErrorCode::Overloaded, "full");
        assert_eq!(&out[0..4], &(10u32 + 8 + 2 + 4).to_be_bytes());
        assert_eq!(&out[14..22], &42u64.to_be_bytes());
        assert_eq!(&out[22..24], &6u16.to_be_bytes());
        assert_eq!(&out[24..], b"full");
    }

    #[test]
    fn reused_buffer_does_not_grow() {
        let mut out = Vec::with_capacity(64);
        let ptr = out.as_ptr();
        for id in 0..1000 {
            out.clear();
            frame(&mut out, Kind::Data, id, &[0u8; 40]);
        }
        assert_eq!(out.as_ptr(), ptr);
        assert_eq!(out.capacity(), 64);
    }
}
