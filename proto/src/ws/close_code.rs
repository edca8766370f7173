//! Close status codes (RFC 6455 §7.4): which ones a peer may send, and which one Tether's
//! gateway sends for each reason it closes.

use crate::error_code::ErrorCode;

/// A close frame's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (a gateway draining, a client leaving a page).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke RFC 6455 (framing, fragmentation, control frames, close codes).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a kind of data the endpoint does not accept (Tether: text messages).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: data inconsistent with its message type (a text message or close reason that is
    /// not UTF-8).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a generic policy violation (Tether: a v1 error that closes the connection).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a frame or message larger than the receiver's limit.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1013: try again later (Tether: OVERLOADED).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may put this code in a close frame: 1000–1003, 1007–1014 (defined by
    /// RFC 6455 or registered with IANA), 3000–3999 (registered) and 4000–4999 (private).
    /// 0–999, 1004–1006, 1015, 1016–2999 and 5000 and above are refused with 1002; 1005 and
    /// 1006 exist only to be reported locally, never sent.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// The code a gateway closes with after sending a v1 ERROR that closes the connection, or
    /// `None` for the errors that answer one request and leave the connection open.
    pub fn after_v1_error(code: ErrorCode) -> Option<CloseCode> {
        if !code.closes_connection() {
            return None;
        }
        Some(match code {
            ErrorCode::FrameTooLarge => CloseCode::MESSAGE_TOO_BIG,
            ErrorCode::Overloaded => CloseCode::TRY_AGAIN_LATER,
            _ => CloseCode::POLICY_VIOLATION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_ranges_are_exactly_the_allowed_ones() {
        let valid: Vec<u16> = (0..=u16::MAX)
            .filter(|c| CloseCode(*c).is_valid_on_wire())
            .collect();
        let mut expected: Vec<u16> = Vec::new();
        expected.extend(1000..=1003);
        expected.extend(1007..=1014);
        expected.extend(3000..=4999);
        assert_eq!(valid, expected);
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }

    #[test]
    fn every_closing_v1_error_has_a_close_code() {
        for code in ErrorCode::ALL {
            let close = CloseCode::after_v1_error(code);
            assert_eq!(close.is_some(), code.closes_connection(), "{code:?}");
            assert!(close.is_none_or(CloseCode::is_valid_on_wire));
        }
        assert_eq!(
            CloseCode::after_v1_error(ErrorCode::FrameTooLarge),
            Some(CloseCode::MESSAGE_TOO_BIG)
        );
        assert_eq!(CloseCode::after_v1_error(ErrorCode::NoBackend), None);
    }
}
