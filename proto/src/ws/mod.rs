//! The WebSocket transport (RFC 6455), sans-IO: Tether's v1 frames carried in binary
//! messages, one or more whole v1 frames per message.
//!
//! The pieces, in the order a connection meets them:
//!
//! - the opening handshake: [`ServerHandshake::read`] (the gateway) turns the bytes of an
//!   HTTP/1.1 upgrade request into "incomplete", [`Accepted`] (the exact 101 response, and
//!   where the WebSocket bytes start) or a [`Refusal`] (an HTTP error response);
//!   [`ClientHandshake::write_request`] and [`ExpectedResponse::read`] are the client's
//!   side (the load generator, tests);
//! - frames: [`decode_frame`] (payloads unmasked in place) and the encoders in [`encode`];
//! - messages: the [`Assembler`] state machine, driven over each read by [`feed()`], which
//!   tells the caller what to do through [`Event`]s or fails with a [`ProtocolError`] that
//!   names its close code;
//! - the payload: [`v1_frames`] hands out the v1 frames of a binary message.
//!
//! # Memory model
//!
//! The gateway holds very many idle connections, so an idle connection holds no buffer:
//!
//! - In a connection's slot: one [`Assembler`], 8 bytes, `Copy`. It is all the codec keeps
//!   between reads. The limits and policies ([`Config`], [`ServerHandshake`]) are shared by
//!   every connection of a reactor.
//! - During one read: the reactor's read buffer. [`feed()`] decodes every frame wholly inside
//!   it where it lies, unmasking in place, and hands whole single-frame messages over as
//!   slices of it: no copy, no allocation.
//! - Only while bytes are pending: a `partial` buffer the caller lends from its pool. It
//!   holds the start of a frame cut by the end of a read (only the bytes the frame lacks are
//!   ever added, never a whole read) and the joined payload of an open fragmented message.
//!   [`feed()`] leaves it empty whenever no frame is cut and no message is open, so the caller
//!   can give it back. Its size is bounded by [`Config::max_message`] plus one frame header,
//!   checked from each header before the payload arrives.
//! - Until the upgrade completes: the request bytes so far, at most
//!   [`ServerHandshake::max_head`] (8 KiB by default), in the same pooled buffer; the
//!   handshake itself is stateless.
//!
//! Sending needs no state beyond [`Assembler::close_sent`]: the encoders append to the
//! caller's write buffer, and [`encode::binary_header`] lets the gateway write a message's
//! header and then encode v1 frames straight after it.

mod accept_key;
mod assembler;
mod client_handshake;
mod close_code;
mod config;
mod event;
mod feed;
mod frame_decode;
mod frame_encode;
mod http_head;
mod mask;
mod opcode;
mod protocol_error;
mod refusal;
mod server_handshake;
mod utf8;
mod v1_message;

/// Frame encoders (RFC 6455 §5.2) that append to a caller's `Vec<u8>`.
pub mod encode {
    pub use super::frame_encode::{
        binary, binary_header, close, frame, header, header_len, ping, pong,
    };
}

pub use assembler::{Assembler, Complete};
pub use client_handshake::{ClientHandshake, ExpectedResponse, InvalidField, ResponseError};
pub use close_code::CloseCode;
pub use config::{Config, Role, TextPolicy};
pub use event::{Close, Event};
pub use feed::feed;
pub use frame_decode::{decode_frame, header_len, Frame, FrameHead};
pub use mask::apply_mask;
pub use opcode::Opcode;
pub use protocol_error::ProtocolError;
pub use refusal::{Refusal, Status};
pub use server_handshake::{origin_allowed, Accepted, Handshake, ServerHandshake};
pub use v1_message::{v1_frames, MessageError};
