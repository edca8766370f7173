//! Names in the fleet engine: a device's keys (one hash tag, so one slot: the functions of
//! `tether.lua` touch them together), the resume index, the session ids and token hashes
//! written there, and each host's bus channel.

use ring::digest;

/// The three keys of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Hash: host, gw, session, tok, state; expires unless its host refreshes it.
    pub route: String,
    /// The device's message id counter.
    pub msg: String,
    /// Hash of durable, unacknowledged pushes: id → "EXPIRES_UNIX_MS:PAYLOAD".
    pub pending: String,
}

impl Device {
    pub(crate) fn new(device: &str) -> Device {
        Device {
            route: format!("{{t:{device}}}:r"),
            msg: format!("{{t:{device}}}:m"),
            pending: format!("{{t:{device}}}:p"),
        }
    }
}

/// The resume index: a resume token's hash → its device.
pub(crate) fn resume(token_hash: &str) -> String {
    format!("t:resume:{token_hash}")
}

/// A host's bus channel: pushes for its sessions and orders to drop them.
pub(crate) fn bus(host: &str) -> String {
    format!("tether:bus:{host}")
}

/// A session id as the router table writes it.
pub(crate) fn session(id: u64) -> String {
    format!("{id:016x}")
}

/// What the engine keeps of a resume token: the hex of the first 16 bytes of its SHA-256
/// (the token itself is a credential and never leaves the host).
pub(crate) fn token_hash(token: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA256, token);
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devices_keys_share_one_hash_tag_even_with_braces_in_its_name() {
        for name in ["d1", "a{b}c", "}{", ""] {
            let k = Device::new(name);
            let tag = |key: &str| {
                let open = key.find('{').unwrap();
                let close = open + key[open..].find('}').unwrap();
                key[open..=close].to_string()
            };
            assert_eq!(tag(&k.route), tag(&k.msg));
            assert_eq!(tag(&k.route), tag(&k.pending));
        }
        assert_eq!(session(0xab), "00000000000000ab");
        assert_eq!(token_hash(b"x").len(), 32);
        assert_ne!(token_hash(b"x"), token_hash(b"y"));
        assert_eq!(bus("h1"), "tether:bus:h1");
    }
}
