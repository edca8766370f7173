//! Tether's wire protocol, version 1, without any I/O.
//!
//! Every link (client ↔ gateway, gateway ↔ echo node, gateway ↔ state) carries the same
//! 14-byte header followed by a body:
//!
//! ```text
//! offset size field
//! 0      4    len    u32 big-endian: bytes after this field = 10 + body length
//! 4      1    kind   u8
//! 5      1    flags  u8: 0 in v1; receivers ignore unknown bits
//! 6      8    id     u64 big-endian
//! 14     …    body   len − 10 bytes
//! ```
//!
//! This crate turns bytes into [`Frame`]s and frames into bytes. It never touches a socket
//! and never allocates per frame: decoding borrows the body from the caller's buffer, and
//! encoding appends to a caller's `Vec<u8>`. Sockets, buffers and their pooling live in the
//! daemons.
//!
//! [`ws`] carries the same frames over WebSocket (RFC 6455), just as sans-IO: the upgrade
//! handshake, WebSocket framing and message assembly.
//!
//! [`room`] reads and writes the bodies of room messages, joins and publishes.
//!
//! [`report_auth`] signs and checks a gateway's load report to ipconfig (HMAC-SHA256 over
//! the gateway id, a timestamp and the body), just as sans-IO.

mod body;
mod decode;
pub mod encode;
mod error_code;
mod frame;
mod kind;
pub mod report_auth;
pub mod room;
pub mod ws;

pub use body::{routes, BodyError, ErrorBody, NodeErrorBody, Routed};
pub use decode::{drain_frames, feed, DecodeError, Decoder};
pub use error_code::ErrorCode;
pub use frame::{Frame, DEFAULT_MAX_BODY, HEADER_LEN, MIN_LEN};
pub use kind::Kind;
