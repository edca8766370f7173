//! What the receiver tells its caller to do with each frame that completes something.

use super::close_code::CloseCode;

/// One thing the peer's bytes ask of the caller. Payloads borrow the caller's buffers (the
/// read buffer, or the pooled buffer an open message was joined in) until the callback
/// returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole binary message: over Tether, one or more whole v1 frames (see
    /// [`crate::ws::v1_frames`]).
    Binary(&'a [u8]),
    /// A whole text message, valid UTF-8 (only with [`crate::ws::TextPolicy::Deliver`]).
    Text(&'a str),
    /// A ping: answer with [`crate::ws::encode::pong`] carrying the same payload. Not reported
    /// once this side has sent a close.
    Ping(&'a [u8]),
    /// A pong (an answer to a ping, or a unilateral heartbeat): nothing to do.
    Pong(&'a [u8]),
    /// The peer's close frame. Answer it with [`crate::ws::Assembler::close`] (which writes
    /// nothing if this side already sent one) echoing `code`, flush, then close the socket.
    /// Nothing the peer sends after it is read.
    Close(Close<'a>),
}

/// A received close frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close<'a> {
    /// `None` when the payload was empty.
    pub code: Option<CloseCode>,
    /// UTF-8, possibly empty.
    pub reason: &'a str,
}
