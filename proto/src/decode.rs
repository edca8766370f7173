//! The decoder: bytes in, frames or a typed error out.
//!
//! Decisions are made as early as the bytes allow, so a hostile length is never believed:
//! BAD_FRAME and FRAME_TOO_LARGE are decided from the 4-byte length field alone, before any
//! of the body has arrived; UNKNOWN_KIND once the 14-byte header is in, so the error can name
//! the offending id. A partial frame yields `Ok(None)`: the caller keeps the bytes and calls
//! again when more arrive.

use thiserror::Error;

use crate::error_code::ErrorCode;
use crate::frame::{Frame, DEFAULT_MAX_BODY, HEADER_LEN, LEN_FIELD_LEN, MIN_LEN};
use crate::kind::Kind;

/// Why a byte stream is not a valid v1 frame stream. Every variant is fatal to the
/// connection; [`DecodeError::code`] says which ERROR code to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("bad frame: length field {len} is below the minimum of {MIN_LEN}")]
    BadFrame { len: u32 },
    #[error("frame too large: body of {body_len} bytes exceeds max_body {max_body}")]
    FrameTooLarge { body_len: u32, max_body: u32 },
    #[error("unknown kind 0x{kind:02x} in frame {id}")]
    UnknownKind { kind: u8, id: u64 },
}

impl DecodeError {
    /// The ERROR code a receiver answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadFrame { .. } => ErrorCode::BadFrame,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::UnknownKind { .. } => ErrorCode::UnknownKind,
        }
    }

    /// The id to put in the ERROR frame: the offending frame's id when the header was whole.
    pub fn offending_id(&self) -> u64 {
        match self {
            DecodeError::UnknownKind { id, .. } => *id,
            _ => 0,
        }
    }
}

/// A stateless decoder configured with the largest body it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    max_body: u32,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_BODY)
    }
}

impl Decoder {
    pub fn new(max_body: u32) -> Decoder {
        Decoder { max_body }
    }

    pub fn max_body(&self) -> u32 {
        self.max_body
    }

    /// The total size (header included) of the frame at the front of `buf`, once its length
    /// field is in and acceptable; `Ok(None)` while fewer than 4 bytes are there. Lets a
    /// reader size its buffer for exactly one frame.
    pub fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(len_bytes) = buf.first_chunk::<LEN_FIELD_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len_bytes);
        if len < MIN_LEN {
            return Err(DecodeError::BadFrame { len });
        }
        let body_len = len - MIN_LEN;
        if body_len > self.max_body {
            return Err(DecodeError::FrameTooLarge {
                body_len,
                max_body: self.max_body,
            });
        }
        Ok(Some(LEN_FIELD_LEN + len as usize))
    }

    /// Decodes the frame at the front of `buf`. Returns the frame and the bytes it used, or
    /// `Ok(None)` when the frame is not complete yet.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<(Frame<'a>, usize)>, DecodeError> {
        let Some(total) = self.frame_len(buf)? else {
            return Ok(None);
        };
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&header[6..14]);
        let id = u64::from_be_bytes(id_bytes);
        let kind = Kind::from_u8(header[4]).ok_or(DecodeError::UnknownKind {
            kind: header[4],
            id,
        })?;
        let Some(bytes) = buf.get(..total) else {
            return Ok(None);
        };
        let frame = Frame {
            kind,
            flags: header[5],
            id,
            body: &bytes[HEADER_LEN..],
        };
        Ok(Some((frame, total)))
    }
}

/// Decodes every complete frame at the front of `buf`, hands each to `on_frame`, then removes
/// the consumed bytes with one move, leaving any partial frame at the front.
///
/// On a decode error the frames before the bad one have been handed over and removed; the
/// bad bytes stay. `on_frame` returns `false` to stop early (for instance after deciding to
/// close); the frames it saw are removed.
pub fn drain_frames<F>(
    decoder: &Decoder,
    buf: &mut Vec<u8>,
    mut on_frame: F,
) -> Result<(), DecodeError>
where
    F: FnMut(Frame<'_>) -> bool,
{
    let mut consumed = 0;
    let result = loop {
        match decoder.decode(&buf[consumed..]) {
            Ok(Some((frame, used))) => {
                consumed += used;
                if !on_frame(frame) {
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    buf.drain(..consumed);
    result
}

/// Decodes `data`, newly read, which continues the bytes pending in `partial`, copying as
/// little as possible: a frame split across reads gets only the bytes it lacks appended to
/// `partial`; every frame wholly inside `data` is decoded in place; an incomplete tail is
/// left in `partial` for the next call. Any chunking of a stream yields the same frames.
///
/// `on_frame` returns `false` to stop (the caller is closing): the rest of `data` is dropped.
/// On a decode error the frames before it have been handed over and the error is returned.
pub fn feed<F>(
    decoder: &Decoder,
    partial: &mut Vec<u8>,
    mut data: &[u8],
    mut on_frame: F,
) -> Result<(), DecodeError>
where
    F: FnMut(Frame<'_>) -> bool,
{
    while !partial.is_empty() {
        // First the length field, then the rest of the frame it announces.
        let want = decoder.frame_len(partial)?.unwrap_or(LEN_FIELD_LEN);
        let take = want.saturating_sub(partial.len()).min(data.len());
        partial.extend_from_slice(&data[..take]);
        data = &data[take..];
        if partial.len() < want {
            // Still short; report a bad length or kind as soon as the bytes show it.
            decoder.decode(partial)?;
            return Ok(());
        }
        if let Some((frame, _)) = decoder.decode(partial)? {
            let go = on_frame(frame);
            partial.clear();
            if !go {
                return Ok(());
            }
        }
    }
    let mut at = 0;
    while let Some((frame, used)) = decoder.decode(&data[at..])? {
        at += used;
        if !on_frame(frame) {
            return Ok(());
        }
    }
    partial.extend_from_slice(&data[at..]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn too_large_is_decided_from_the_length_field_alone() {
        let decoder = Decoder::new(100);
        let len = (MIN_LEN + 101).to_be_bytes();
        assert_eq!(
            decoder.decode(&len),
            Err(DecodeError::FrameTooLarge {
                body_len: 101,
                max_body: 100
            })
        );
        // A 4 GiB claim is refused just the same, with nothing after it.
        assert!(matches!(
            decoder.decode(&u32::MAX.to_be_bytes()),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        // Exactly max_body is fine.
        let ok = (MIN_LEN + 100).to_be_bytes();
        assert_eq!(decoder.decode(&ok), Ok(None));
    }

    #[test]
    fn short_length_is_bad_frame() {
        for len in 0..MIN_LEN {
            assert_eq!(
                Decoder::default().decode(&len.to_be_bytes()),
                Err(DecodeError::BadFrame { len })
            );
        }
    }

    #[test]
    fn unknown_kind_names_the_id_once_the_header_is_in() {
        let mut bytes = vec![0, 0, 0, 10, 0x7f, 0];
        assert_eq!(Decoder::default().decode(&bytes), Ok(None));
        bytes.extend_from_slice(&99u64.to_be_bytes());
        let err = Decoder::default().decode(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnknownKind { kind: 0x7f, id: 99 });
        assert_eq!(err.code(), ErrorCode::UnknownKind);
        assert_eq!(err.offending_id(), 99);
    }

    #[test]
    fn unknown_flag_bits_are_kept_and_ignored() {
        let mut bytes = Vec::new();
        encode::header(&mut bytes, Kind::Ping, 0xff, 5, 0);
        let (frame, used) = Decoder::default().decode(&bytes).unwrap().unwrap();
        assert_eq!(
            (frame.kind, frame.flags, frame.id, used),
            (Kind::Ping, 0xff, 5, 14)
        );
    }

    #[test]
    fn drain_keeps_the_partial_tail() {
        let mut buf = Vec::new();
        encode::frame(&mut buf, Kind::Data, 1, b"one");
        encode::frame(&mut buf, Kind::Data, 2, b"two");
        let whole = buf.len();
        encode::frame(&mut buf, Kind::Data, 3, b"three");
        buf.truncate(whole + 5);
        let mut ids = Vec::new();
        drain_frames(&Decoder::default(), &mut buf, |f| {
            ids.push(f.id);
            true
        })
        .unwrap();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn feed_copies_only_what_a_split_frame_lacks() {
        let decoder = Decoder::default();
        let mut stream = Vec::new();
        encode::frame(&mut stream, Kind::Data, 1, &[1; 100]);
        encode::frame(&mut stream, Kind::Data, 2, &[2; 100]);
        encode::frame(&mut stream, Kind::Data, 3, &[3; 100]);
        let mut partial = Vec::new();
        let mut ids = Vec::new();
        // Cut inside frame 1's body, then give the rest in one read.
        feed(&decoder, &mut partial, &stream[..50], |f| {
            ids.push(f.id);
            true
        })
        .unwrap();
        assert_eq!(partial.len(), 50);
        feed(&decoder, &mut partial, &stream[50..], |f| {
            ids.push(f.id);
            true
        })
        .unwrap();
        assert_eq!(ids, vec![1, 2, 3]);
        assert!(partial.is_empty());
        // Only frame 1's 114 bytes were ever buffered, not the 264 bytes of the second read.
        assert!(partial.capacity() < 200, "{}", partial.capacity());
    }

    #[test]
    fn feed_reports_a_bad_length_before_the_frame_completes() {
        let decoder = Decoder::new(100);
        let mut partial = vec![0, 0];
        let err = feed(&decoder, &mut partial, &[0, 200], |_| true).unwrap_err();
        assert!(matches!(err, DecodeError::FrameTooLarge { .. }));
        let mut partial = vec![0, 0, 0, 10, 0x7f];
        let err = feed(&decoder, &mut partial, &[0; 9], |_| true).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownKind { kind: 0x7f, .. }));
    }

    #[test]
    fn drain_stops_when_asked() {
        let mut buf = Vec::new();
        encode::frame(&mut buf, Kind::Data, 1, b"");
        encode::frame(&mut buf, Kind::Data, 2, b"");
        let mut seen = 0;
        drain_frames(&Decoder::default(), &mut buf, |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert_eq!(buf.len(), 14);
    }
}
