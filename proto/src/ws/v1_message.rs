//! The v1 frames a binary message carries: over WebSocket, each binary message holds one or
//! more whole v1 frames, back to back, and a v1 frame never spans two messages.

use thiserror::Error;

use crate::decode::{DecodeError, Decoder};
use crate::error_code::ErrorCode;
use crate::frame::Frame;

/// Why a binary message is not a run of whole v1 frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("binary message ends inside a v1 frame ({left} bytes left over)")]
    Truncated { left: usize },
}

impl MessageError {
    /// The v1 ERROR code to answer with (then close, with
    /// [`crate::ws::CloseCode::after_v1_error`] of it).
    pub fn code(&self) -> ErrorCode {
        match self {
            MessageError::Decode(e) => e.code(),
            MessageError::Truncated { .. } => ErrorCode::BadFrame,
        }
    }

    /// The id to put in the ERROR frame (see [`DecodeError::offending_id`]).
    pub fn offending_id(&self) -> u64 {
        match self {
            MessageError::Decode(e) => e.offending_id(),
            MessageError::Truncated { .. } => 0,
        }
    }
}

/// Hands each v1 frame of a binary message to `on_frame`, in place. An empty message carries
/// no frame and is not an error. `on_frame` returns `false` to stop. The frames before an
/// error have been handed over when it is returned.
pub fn v1_frames<F>(decoder: &Decoder, message: &[u8], mut on_frame: F) -> Result<(), MessageError>
where
    F: FnMut(Frame<'_>) -> bool,
{
    let mut at = 0;
    while at < message.len() {
        let Some((frame, used)) = decoder.decode(&message[at..])? else {
            return Err(MessageError::Truncated {
                left: message.len() - at,
            });
        };
        at += used;
        if !on_frame(frame) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use crate::kind::Kind;

    #[test]
    fn several_frames_in_one_message() {
        let mut message = Vec::new();
        encode::frame(&mut message, Kind::Data, 1, b"a");
        encode::frame(&mut message, Kind::Ping, 2, b"");
        let mut ids = Vec::new();
        v1_frames(&Decoder::default(), &message, |f| {
            ids.push((f.kind, f.id));
            true
        })
        .unwrap();
        assert_eq!(ids, vec![(Kind::Data, 1), (Kind::Ping, 2)]);
        assert_eq!(v1_frames(&Decoder::default(), &[], |_| true), Ok(()));
    }

    #[test]
    fn a_frame_cut_at_the_end_of_the_message_is_bad_frame() {
        let mut message = Vec::new();
        encode::frame(&mut message, Kind::Data, 1, b"a");
        encode::frame(&mut message, Kind::Data, 2, b"bcd");
        message.truncate(message.len() - 1);
        let mut n = 0;
        let err = v1_frames(&Decoder::default(), &message, |_| {
            n += 1;
            true
        })
        .unwrap_err();
        assert_eq!(n, 1);
        assert_eq!(err, MessageError::Truncated { left: 16 });
        assert_eq!(err.code(), ErrorCode::BadFrame);
    }

    #[test]
    fn decode_errors_keep_their_codes() {
        let err = v1_frames(&Decoder::new(10), &(10u32 + 11).to_be_bytes(), |_| true).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FrameTooLarge);
    }
}
