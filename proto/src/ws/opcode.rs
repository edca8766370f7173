//! The opcodes of RFC 6455 §5.2: what a frame carries.

/// A frame's opcode. The reserved values (0x3–0x7, 0xB–0xF) have no variant: the decoder
/// refuses them with [`crate::ws::ProtocolError::UnknownOpcode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    /// The next fragment of the open message.
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    /// Every opcode RFC 6455 defines.
    pub const ALL: [Opcode; 6] = [
        Opcode::Continuation,
        Opcode::Text,
        Opcode::Binary,
        Opcode::Close,
        Opcode::Ping,
        Opcode::Pong,
    ];

    /// The opcode for the low four bits of a frame's first byte, or `None` for a reserved one.
    pub fn from_u8(value: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| op.as_u8() == value)
    }

    /// The wire value (four bits).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Close, ping and pong: at most 125 bytes of payload, never fragmented, allowed between
    /// the fragments of a message.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nibble_is_an_opcode_or_reserved() {
        let known: Vec<u8> = (0..16).filter(|v| Opcode::from_u8(*v).is_some()).collect();
        assert_eq!(known, vec![0x0, 0x1, 0x2, 0x8, 0x9, 0xA]);
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u8(op.as_u8()), Some(op));
        }
    }

    #[test]
    fn control_opcodes_have_the_high_bit() {
        let control: Vec<Opcode> = Opcode::ALL.into_iter().filter(|o| o.is_control()).collect();
        assert_eq!(control, vec![Opcode::Close, Opcode::Ping, Opcode::Pong]);
    }
}
