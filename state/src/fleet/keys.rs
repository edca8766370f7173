//! Names in the fleet engine: a device's keys (one hash tag, so one slot: the functions of
//! `tether.lua` touch them together), the resume index, the session ids and token hashes
//! written there, and each host's bus channel.

use ring::digest;

/// The three keys of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// String: [`route_value`]; expires unless its host refreshes it.
    pub route: String,
    /// The device's message id counter.
    pub msg: String,
    /// Hash of durable, unacknowledged pushes: id → "EXPIRES_UNIX_MS:PAYLOAD".
    pub pending: String,
    /// String: the session's rooms and `rooms` grants (see [`rooms_value`]), for the host
    /// that takes the device over.
    pub rooms: String,
}

impl Device {
    pub(crate) fn new(device: &str) -> Device {
        Device {
            route: format!("{{t:{device}}}:r"),
            msg: format!("{{t:{device}}}:m"),
            pending: format!("{{t:{device}}}:p"),
            rooms: format!("{{t:{device}}}:g"),
        }
    }
}

/// A route as the router table holds it: host, gateway, session (hex), token hash and
/// state (`online` or `detached`), one per line (host and gateway ids have no control
/// characters; `tether.lua` reads and writes the same).
pub(crate) fn route_value(
    host: &str,
    gateway: &str,
    session: &str,
    tok: &str,
    state: &str,
) -> String {
    [host, gateway, session, tok, state].join("\n")
}

/// A route as [`route_value`] wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub host: String,
    pub gateway: String,
    pub session: String,
    pub online: bool,
}

/// Reads a route written by [`route_value`].
pub(crate) fn parse_route(value: &[u8]) -> Option<Route> {
    let value = std::str::from_utf8(value).ok()?;
    let mut fields = value.split('\n');
    let host = fields.next()?.to_string();
    let gateway = fields.next()?.to_string();
    let session = fields.next()?.to_string();
    let _tok = fields.next()?;
    let online = fields.next()? == "online";
    Some(Route {
        host,
        gateway,
        session,
        online,
    })
}

/// The session of `device` an operator ended through another host (see `tether_end`): in
/// the device's slot, read by binds only.
pub(crate) fn ended(device: &str) -> String {
    format!("{{t:{device}}}:e")
}

/// The resume index: a resume token's hash → its device.
pub(crate) fn resume(token_hash: &str) -> String {
    format!("t:resume:{token_hash}")
}

/// A room's sequence counter, in the room's own slot.
pub(crate) fn room_seq(room: &str) -> String {
    format!("{{r:{room}}}:s")
}

/// A room's channel: its numbered messages, for the hosts with a member in it (the
/// broadcast's is the room "").
pub(crate) fn room_channel(room: &str) -> String {
    format!("tether:room:{room}")
}

/// A session's rooms and grants as the engine keeps them: the rooms one per line, a blank
/// line, the grants one per line (room names have no control characters).
pub(crate) fn rooms_value(rooms: &[&str], grants: Option<&str>) -> String {
    let mut value = rooms.join("\n");
    if let Some(grants) = grants {
        value.push_str("\n\n");
        value.push_str(grants);
    }
    value
}

/// Reads [`rooms_value`]: the rooms, and the grants' lines when there were grants.
pub(crate) fn parse_rooms(value: &str) -> (Vec<&str>, Option<&str>) {
    let (rooms, grants) = match value.split_once("\n\n") {
        Some((rooms, grants)) => (rooms, Some(grants)),
        None => (value, None),
    };
    let rooms = rooms.split('\n').filter(|r| !r.is_empty()).collect();
    (rooms, grants)
}

/// A host's bus channel: pushes for its sessions and orders to drop them.
pub(crate) fn bus(host: &str) -> String {
    format!("tether:bus:{host}")
}

/// A session id as the router table writes it.
pub(crate) fn session(id: u64) -> String {
    let mut hex = String::with_capacity(16);
    crate::session::push_hex(&mut hex, &id.to_be_bytes());
    hex
}

/// What the engine keeps of a resume token: the hex of the first 16 bytes of its SHA-256
/// (the token itself is a credential and never leaves the host).
pub(crate) fn token_hash(token: &[u8]) -> String {
    let digest = digest::digest(&digest::SHA256, token);
    let mut hash = String::with_capacity(32);
    crate::session::push_hex(&mut hash, &digest.as_ref()[..16]);
    hash
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
            assert_eq!(tag(&k.route), tag(&ended(name)));
            assert_eq!(tag(&k.route), tag(&k.rooms));
        }
        assert_eq!(session(0xab), "00000000000000ab");
        assert_eq!(token_hash(b"x").len(), 32);
        assert_ne!(token_hash(b"x"), token_hash(b"y"));
        assert_eq!(bus("h1"), "tether:bus:h1");
        let route = route_value("h1", "gw-1", &session(7), "ab", "online");
        assert_eq!(route, "h1\ngw-1\n0000000000000007\nab\nonline");
        assert_eq!(
            parse_route(route.as_bytes()),
            Some(Route {
                host: "h1".into(),
                gateway: "gw-1".into(),
                session: session(7),
                online: true,
            })
        );
        assert_eq!(parse_route(b"h1\ngw-1"), None);
        for (rooms, grants) in [
            (vec!["a", "b"], Some("a\nc/*")),
            (vec![], Some("*")),
            (vec!["a"], None),
            (vec![], None),
        ] {
            let value = rooms_value(&rooms, grants);
            assert_eq!(parse_rooms(&value), (rooms, grants), "{value:?}");
        }
        assert_eq!(room_seq("x"), "{r:x}:s");
    }
}
