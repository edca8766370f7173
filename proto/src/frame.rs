//! A decoded frame, borrowing its body from the buffer it was decoded from.

use crate::kind::Kind;

/// Bytes of the `len` field.
pub(crate) const LEN_FIELD_LEN: usize = 4;
/// Bytes of the whole header: len (4) + kind (1) + flags (1) + id (8).
pub const HEADER_LEN: usize = 14;
/// The smallest valid value of `len`: kind + flags + id, with an empty body.
pub const MIN_LEN: u32 = 10;
/// The default largest body a receiver accepts.
pub const DEFAULT_MAX_BODY: u32 = 65_536;

/// One frame: header fields plus a body borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: Kind,
    /// 0 in v1; receivers ignore bits they do not know.
    pub flags: u8,
    pub id: u64,
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// A frame with no flags set.
    pub fn new(kind: Kind, id: u64, body: &'a [u8]) -> Frame<'a> {
        Frame {
            kind,
            flags: 0,
            id,
            body,
        }
    }

    /// Bytes this frame takes on the wire, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    /// Appends the frame to `out` (no allocation when `out` has the capacity).
    pub fn encode(&self, out: &mut Vec<u8>) {
        crate::encode::header(out, self.kind, self.flags, self.id, self.body.len());
        out.extend_from_slice(self.body);
    }
}
