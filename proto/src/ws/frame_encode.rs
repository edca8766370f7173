//! Frame encoders (RFC 6455 §5.2) that append to a caller's `Vec<u8>`.
//!
//! `mask` is `None` for a server, whose frames are never masked, and `Some(key)` for a
//! client, which must mask every frame with a fresh key from a good random source (§5.3; the
//! caller supplies it, so this crate needs no randomness). Lengths are written in the shortest
//! form. Control payloads longer than 125 bytes and close reasons longer than 123 bytes are
//! cut (close reasons at a character boundary), so no input makes an invalid frame.

use super::close_code::CloseCode;
use super::frame_decode::MAX_CONTROL_PAYLOAD;
use super::mask::apply_mask;
use super::opcode::Opcode;

/// Bytes of the header [`header`] writes for this payload length.
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let length_field = match payload_len {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    2 + length_field + if masked { 4 } else { 0 }
}

/// Appends a frame header for `payload_len` bytes of payload; the caller appends the payload
/// right after it (and, with a mask, masks it with [`apply_mask`] at offset 0).
pub fn header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) {
    let first = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.reserve(header_len(payload_len, mask.is_some()) + payload_len);
    out.push(first);
    match payload_len {
        // Each arm's range makes the cast lossless.
        0..=125 => out.push(mask_bit | payload_len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// Appends the header of a whole (FIN) binary message of `payload_len` bytes: the gateway
/// writes it, then encodes its v1 frames straight after it, with no copy.
pub fn binary_header(out: &mut Vec<u8>, payload_len: usize, mask: Option<[u8; 4]>) {
    header(out, true, Opcode::Binary, payload_len, mask);
}

/// Appends a whole frame: header, then `payload` (masked in `out` when `mask` is given).
pub fn frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    header(out, fin, opcode, payload.len(), mask);
    push_payload(out, payload, mask);
}

/// Appends a whole binary message in one frame.
pub fn binary(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>) {
    frame(out, true, Opcode::Binary, payload, mask);
}

/// Appends a ping (payload cut to 125 bytes).
pub fn ping(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>) {
    control(out, Opcode::Ping, payload, mask);
}

/// Appends a pong: the answer to a ping carries the ping's payload.
pub fn pong(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>) {
    control(out, Opcode::Pong, payload, mask);
}

/// Appends a close frame: with a code, the code then `reason` (cut to 123 bytes at a
/// character boundary); without one, an empty payload (and `reason` is not sent).
pub fn close(out: &mut Vec<u8>, code: Option<CloseCode>, reason: &str, mask: Option<[u8; 4]>) {
    let Some(code) = code else {
        control(out, Opcode::Close, &[], mask);
        return;
    };
    let reason = cut_at_char(reason, MAX_CONTROL_PAYLOAD - 2);
    header(out, true, Opcode::Close, 2 + reason.len(), mask);
    let start = out.len();
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

fn control(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    frame(out, true, opcode, payload, mask);
}

fn push_payload(out: &mut Vec<u8>, payload: &[u8], mask: Option<[u8; 4]>) {
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_vectors_are_reproduced() {
        let mut out = Vec::new();
        frame(&mut out, true, Opcode::Text, b"Hello", None);
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        frame(
            &mut out,
            true,
            Opcode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        out.clear();
        frame(&mut out, false, Opcode::Text, b"Hel", None);
        frame(&mut out, true, Opcode::Continuation, b"lo", None);
        assert_eq!(out, [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        out.clear();
        ping(&mut out, b"Hello", None);
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        pong(&mut out, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(
            out,
            [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        out.clear();
        binary(&mut out, &[0; 256], None);
        assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(out.len(), 4 + 256);
        out.clear();
        binary(&mut out, &[0; 65_536], None);
        assert_eq!(out[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(out.len(), 10 + 65_536);
    }

    #[test]
    fn header_len_matches_what_header_writes() {
        for len in [0, 1, 125, 126, 127, 0xffff, 0x1_0000, 1 << 20] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut out = Vec::new();
                binary_header(&mut out, len, mask);
                assert_eq!(out.len(), header_len(len, mask.is_some()), "{len}");
            }
        }
    }

    #[test]
    fn close_frames_carry_code_and_reason() {
        let mut out = Vec::new();
        close(&mut out, Some(CloseCode::NORMAL), "bye", None);
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
        out.clear();
        close(&mut out, None, "ignored", None);
        assert_eq!(out, [0x88, 0x00]);
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let mut out = Vec::new();
        // 62 two-byte characters: 124 bytes, one too many.
        let reason = "é".repeat(62);
        close(&mut out, Some(CloseCode::GOING_AWAY), &reason, None);
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        out.clear();
        ping(&mut out, &[1; 200], None);
        assert_eq!(out.len(), 2 + 125);
    }
}
