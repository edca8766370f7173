//! What one side of a WebSocket connection accepts: its role and its limits. One value is
//! shared by every connection of a reactor; none of it lives in a connection's slot.

use crate::frame::{DEFAULT_MAX_BODY, HEADER_LEN};

/// Which end of the connection this codec is. A server receives masked frames and sends
/// unmasked ones; a client the other way round (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// What to do with text messages. Tether carries v1 frames in binary messages only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPolicy {
    /// Fail the connection with 1003 as soon as a text frame's header arrives (the gateway).
    Refuse,
    /// Validate text as UTF-8 (1007 on the first invalid byte, across fragments) and deliver
    /// it as [`crate::ws::Event::Text`].
    Deliver,
}

/// The default largest message: one v1 frame with the default largest body (65,550 bytes).
pub(super) const DEFAULT_MAX_MESSAGE: u32 = HEADER_LEN as u32 + DEFAULT_MAX_BODY;

/// A receiver's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub role: Role,
    /// The largest payload of one frame; a larger one fails with 1009 from its header alone.
    pub max_frame: u32,
    /// The largest payload of one message, its fragments joined; a fragment whose header
    /// would take the message past it fails with 1009 before its payload arrives.
    pub max_message: u32,
    pub text: TextPolicy,
}

impl Config {
    /// A server (the gateway): binary only, [`DEFAULT_MAX_MESSAGE`] for frames and messages.
    pub fn server() -> Config {
        Config {
            role: Role::Server,
            max_frame: DEFAULT_MAX_MESSAGE,
            max_message: DEFAULT_MAX_MESSAGE,
            text: TextPolicy::Refuse,
        }
    }

    /// A client (the load generator), with the same limits as [`Config::server`].
    pub fn client() -> Config {
        Config {
            role: Role::Client,
            ..Config::server()
        }
    }
}
