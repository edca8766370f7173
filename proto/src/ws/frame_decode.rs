//! The frame decoder (RFC 6455 §5.2): the caller's bytes in, the next frame — its payload
//! unmasked in place — or "incomplete", or a [`ProtocolError`] out.
//!
//! Every check is made as soon as the bytes it needs are in: reserved bits, the opcode and a
//! fragmented control frame from the first byte; the mask bit from the second; a control
//! frame's length, a 64-bit length with its top bit set and the frame limit once the length
//! field is whole. So a hostile header is refused before any of its payload is read, and a
//! receiver never buffers more than one frame header plus [`Config::max_frame`] bytes.
//! A non-minimal length encoding (5 written in 16 or 64 bits) is legal and accepted.

use std::ops::Range;

use super::config::{Config, Role};
use super::mask::apply_mask;
use super::opcode::Opcode;
use super::protocol_error::ProtocolError;

/// The largest payload of a control frame (RFC 6455 §5.5).
pub(super) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame's header. The reserved bits are not in it: no extension is negotiated, so a frame
/// with any of them set is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// The last frame of its message (always set on control frames).
    pub fin: bool,
    pub opcode: Opcode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// Bytes of the header: 2 to 14.
    pub header_len: usize,
    /// Bytes of payload, at most the receiver's [`Config::max_frame`].
    pub payload_len: usize,
}

impl FrameHead {
    /// Bytes of the whole frame, header and payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// A whole frame at the front of a buffer, its payload unmasked where it lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub head: FrameHead,
    /// Where the payload is in the buffer given to [`decode_frame`].
    pub payload: Range<usize>,
}

/// How many bytes the header at the front of `bytes` takes, as far as the bytes show: 2
/// until the second byte is in, then the whole header's length.
pub fn header_len(bytes: &[u8]) -> usize {
    let Some(&second) = bytes.get(1) else {
        return 2;
    };
    let length_field = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let key = if second & 0x80 != 0 { 4 } else { 0 };
    2 + length_field + key
}

/// Decodes the header at the front of `bytes` without needing the payload. `Ok(None)` while
/// the header is incomplete; an error as soon as the bytes in show one.
pub(super) fn decode_head(
    config: &Config,
    bytes: &[u8],
) -> Result<Option<FrameHead>, ProtocolError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let rsv = (first >> 4) & 0x7;
    if rsv != 0 {
        return Err(ProtocolError::ReservedBits { bits: rsv });
    }
    let opcode = Opcode::from_u8(first & 0xf).ok_or(ProtocolError::UnknownOpcode {
        opcode: first & 0xf,
    })?;
    let fin = first & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl { opcode });
    }
    let Some(&second) = bytes.get(1) else {
        return Ok(None);
    };
    let masked = second & 0x80 != 0;
    match (config.role, masked) {
        (Role::Server, false) => return Err(ProtocolError::Unmasked),
        (Role::Client, true) => return Err(ProtocolError::Masked),
        _ => {}
    }
    let (len, key_at) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(field) => (u64::from(u16::from_be_bytes([field[0], field[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10).and_then(|f| <[u8; 8]>::try_from(f).ok()) {
            Some(field) => (u64::from_be_bytes(field), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if len >> 63 != 0 {
        return Err(ProtocolError::LengthTopBit);
    }
    if opcode.is_control() && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(ProtocolError::ControlTooLong { len });
    }
    let too_big = ProtocolError::FrameTooBig {
        len,
        max: config.max_frame,
    };
    if len > u64::from(config.max_frame) {
        return Err(too_big);
    }
    let payload_len = usize::try_from(len).map_err(|_| too_big)?;
    let (mask, header_len) = if masked {
        match bytes.get(key_at..key_at + 4) {
            Some(key) => (Some([key[0], key[1], key[2], key[3]]), key_at + 4),
            None => return Ok(None),
        }
    } else {
        (None, key_at)
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// Decodes the frame at the front of `bytes`. Once the whole frame is in, unmasks its
/// payload in place and returns it; `Ok(None)` (and `bytes` untouched) before that.
///
/// Unmasking changes the buffer, so each frame is decoded once: the caller consumes
/// [`FrameHead::frame_len`] bytes after a frame.
pub fn decode_frame(config: &Config, bytes: &mut [u8]) -> Result<Option<Frame>, ProtocolError> {
    let Some(head) = decode_head(config, bytes)? else {
        return Ok(None);
    };
    let payload = head.header_len..head.frame_len();
    let Some(body) = bytes.get_mut(payload.clone()) else {
        return Ok(None);
    };
    if let Some(key) = head.mask {
        apply_mask(body, key, 0);
    }
    Ok(Some(Frame { head, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Config {
        Config::server()
    }

    fn client() -> Config {
        Config::client()
    }

    /// RFC 6455 §5.7: "A single-frame unmasked text message".
    const HELLO_UNMASKED: [u8; 7] = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// RFC 6455 §5.7: "A single-frame masked text message".
    const HELLO_MASKED: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    #[test]
    fn rfc_single_frame_unmasked_text() {
        let mut bytes = HELLO_UNMASKED;
        let frame = decode_frame(&client(), &mut bytes).unwrap().unwrap();
        assert!(frame.head.fin);
        assert_eq!(frame.head.opcode, Opcode::Text);
        assert_eq!(frame.head.mask, None);
        assert_eq!(&bytes[frame.payload], b"Hello");
    }

    #[test]
    fn rfc_single_frame_masked_text_is_unmasked_in_place() {
        let mut bytes = HELLO_MASKED;
        let frame = decode_frame(&server(), &mut bytes).unwrap().unwrap();
        assert_eq!(frame.head.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(frame.payload, 6..11);
        assert_eq!(&bytes[6..], b"Hello");
    }

    #[test]
    fn rfc_fragmented_text() {
        let mut first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let mut second = [0x80, 0x02, 0x6c, 0x6f];
        let a = decode_frame(&client(), &mut first).unwrap().unwrap();
        let b = decode_frame(&client(), &mut second).unwrap().unwrap();
        assert_eq!((a.head.fin, a.head.opcode), (false, Opcode::Text));
        assert_eq!((b.head.fin, b.head.opcode), (true, Opcode::Continuation));
        assert_eq!(&first[a.payload], b"Hel");
        assert_eq!(&second[b.payload], b"lo");
    }

    #[test]
    fn rfc_ping_and_masked_pong() {
        let mut ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let frame = decode_frame(&client(), &mut ping).unwrap().unwrap();
        assert_eq!(frame.head.opcode, Opcode::Ping);
        assert_eq!(&ping[frame.payload], b"Hello");
        let mut pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let frame = decode_frame(&server(), &mut pong).unwrap().unwrap();
        assert_eq!(frame.head.opcode, Opcode::Pong);
        assert_eq!(&pong[frame.payload], b"Hello");
    }

    #[test]
    fn rfc_256_bytes_and_64_kib_binary() {
        let mut small = vec![0x82, 0x7e, 0x01, 0x00];
        small.extend((0..256).map(|i| i as u8));
        let frame = decode_frame(&client(), &mut small).unwrap().unwrap();
        assert_eq!((frame.head.header_len, frame.head.payload_len), (4, 256));
        assert_eq!(frame.head.opcode, Opcode::Binary);

        let mut big = vec![0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        big.extend(std::iter::repeat_n(7u8, 65_536));
        let frame = decode_frame(&client(), &mut big).unwrap().unwrap();
        assert_eq!(
            (frame.head.header_len, frame.head.payload_len),
            (10, 65_536)
        );
        assert!(big[frame.payload].iter().all(|b| *b == 7));
    }

    #[test]
    fn incomplete_at_every_cut_and_untouched() {
        for cut in 0..HELLO_MASKED.len() {
            let mut bytes = HELLO_MASKED[..cut].to_vec();
            assert_eq!(decode_frame(&server(), &mut bytes), Ok(None), "cut {cut}");
            assert_eq!(bytes, HELLO_MASKED[..cut]);
        }
    }

    #[test]
    fn header_len_grows_as_the_bytes_show_it() {
        assert_eq!(header_len(&[]), 2);
        assert_eq!(header_len(&[0x82]), 2);
        assert_eq!(header_len(&[0x82, 0x05]), 2);
        assert_eq!(header_len(&[0x82, 0x85]), 6);
        assert_eq!(header_len(&[0x82, 0xfe]), 8);
        assert_eq!(header_len(&[0x82, 0x7f]), 10);
        assert_eq!(header_len(&[0x82, 0xff]), 14);
    }

    #[test]
    fn reserved_bits_and_opcodes_are_refused_from_the_first_byte() {
        for bits in 1..8u8 {
            assert_eq!(
                decode_head(&server(), &[0x82 | (bits << 4)]),
                Err(ProtocolError::ReservedBits { bits })
            );
        }
        for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                decode_head(&server(), &[0x80 | opcode]),
                Err(ProtocolError::UnknownOpcode { opcode })
            );
        }
        for op in [Opcode::Close, Opcode::Ping, Opcode::Pong] {
            assert_eq!(
                decode_head(&server(), &[op.as_u8()]),
                Err(ProtocolError::FragmentedControl { opcode: op })
            );
        }
    }

    #[test]
    fn masking_must_match_the_role() {
        assert_eq!(
            decode_head(&server(), &[0x82, 0x00]),
            Err(ProtocolError::Unmasked)
        );
        assert_eq!(
            decode_head(&client(), &[0x82, 0x80]),
            Err(ProtocolError::Masked)
        );
    }

    #[test]
    fn control_frames_are_limited_to_125_bytes() {
        let ok = decode_head(&client(), &[0x89, 125]).unwrap().unwrap();
        assert_eq!(ok.payload_len, 125);
        assert_eq!(
            decode_head(&client(), &[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlTooLong { len: 126 })
        );
        // A short length in the 16-bit field is non-minimal but legal.
        let ok = decode_head(&client(), &[0x8a, 126, 0, 5]).unwrap().unwrap();
        assert_eq!((ok.header_len, ok.payload_len), (4, 5));
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let mut bytes = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
        let frame = decode_frame(&client(), &mut bytes).unwrap().unwrap();
        assert_eq!(&bytes[frame.payload], &[1, 2, 3]);
    }

    #[test]
    fn the_top_bit_and_the_limit_are_decided_from_the_length_field() {
        assert_eq!(
            decode_head(&client(), &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBit)
        );
        let config = Config {
            max_frame: 1000,
            ..client()
        };
        assert_eq!(
            decode_head(&config, &[0x82, 126, 0x03, 0xe9]),
            Err(ProtocolError::FrameTooBig {
                len: 1001,
                max: 1000
            })
        );
        // Exactly the limit waits for the payload.
        assert!(decode_head(&config, &[0x82, 126, 0x03, 0xe8])
            .unwrap()
            .is_some());
        // A server refuses before the masking key arrives.
        let config = Config {
            max_frame: 1000,
            ..server()
        };
        assert!(matches!(
            decode_head(&config, &[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::FrameTooBig { .. })
        ));
    }
}
