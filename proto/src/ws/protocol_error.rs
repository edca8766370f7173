//! Why a peer's WebSocket bytes end the connection, and the close code each reason maps to.

use thiserror::Error;

use super::close_code::CloseCode;
use super::opcode::Opcode;

/// A violation of RFC 6455 (or of a limit) by the peer. Every variant is fatal: the receiver
/// sends a close frame with [`ProtocolError::close_code`] and closes the socket. Frame-level
/// variants are decided from the frame's header alone, before its payload has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("reserved bits 0x{bits:x} set with no extension negotiated")]
    ReservedBits { bits: u8 },
    #[error("reserved opcode 0x{opcode:x}")]
    UnknownOpcode { opcode: u8 },
    #[error("fragmented control frame ({opcode:?})")]
    FragmentedControl { opcode: Opcode },
    #[error("control frame payload of {len} bytes (at most 125)")]
    ControlTooLong { len: u64 },
    #[error("unmasked frame from a client")]
    Unmasked,
    #[error("masked frame from a server")]
    Masked,
    #[error("64-bit payload length with the most significant bit set")]
    LengthTopBit,
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooBig { len: u64, max: u32 },
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooBig { len: u64, max: u32 },
    #[error("continuation frame with no message open")]
    ContinuationWithoutStart,
    #[error("new {opcode:?} frame while a fragmented message is open")]
    DataWhileFragmented { opcode: Opcode },
    #[error("text messages are not accepted: Tether carries binary messages")]
    TextRefused,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("close frame with a 1-byte payload")]
    CloseTooShort,
    #[error("close code {code} may not be sent")]
    InvalidCloseCode { code: u16 },
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
}

impl ProtocolError {
    /// The code of the close frame that answers this violation.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::FrameTooBig { .. } | ProtocolError::MessageTooBig { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::TextRefused => CloseCode::UNSUPPORTED_DATA,
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_maps_to_its_code() {
        assert_eq!(ProtocolError::Unmasked.close_code(), CloseCode(1002));
        assert_eq!(
            ProtocolError::InvalidCloseCode { code: 999 }.close_code(),
            CloseCode(1002)
        );
        assert_eq!(ProtocolError::TextRefused.close_code(), CloseCode(1003));
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(
            ProtocolError::InvalidCloseReason.close_code(),
            CloseCode(1007)
        );
        assert_eq!(
            ProtocolError::FrameTooBig { len: 9, max: 8 }.close_code(),
            CloseCode(1009)
        );
        assert_eq!(
            ProtocolError::MessageTooBig { len: 9, max: 8 }.close_code(),
            CloseCode(1009)
        );
    }
}
