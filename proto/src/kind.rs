//! The `kind` byte of the header: which message a frame carries.
//!
//! Client kinds (0x01–0x0E) travel between clients and the gateway; state kinds (0x40–0x5F)
//! between gateways and the state daemon over its Unix socket; backend kinds (0x81–0x86)
//! between the gateway and echo nodes. Which kinds a receiver accepts in which
//! direction is the receiver's business; this enum only says which bytes are kinds at all.

/// A frame kind known to protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// c→g: log in with a token (body: UTF-8 JWT).
    Login = 0x01,
    /// g→c: login accepted (body: JSON `{"session","resume_token","heartbeat_s"}`).
    LoginOk = 0x02,
    /// c→g: keep-alive; answered by PONG with the same id.
    Ping = 0x03,
    /// g→c: answer to PING.
    Pong = 0x04,
    /// both: a request payload (c→g) or the node's reply (g→c), matched by id.
    Data = 0x05,
    /// g→c: a server push (id = message id).
    Push = 0x06,
    /// c→g: acknowledges a PUSH by message id.
    Ack = 0x07,
    /// c→g: resume a session on a new connection (body: resume token).
    Resume = 0x08,
    /// g→c: the gateway is going away (body: JSON `{"reason"}`).
    GoAway = 0x09,
    /// g→c: an error (body: u16 code + UTF-8 reason).
    Error = 0x0A,
    /// g→c: room messages, merged (id = the last one's sequence number; body: see
    /// [`crate::room`]).
    Room = 0x0B,
    /// c→g: join a room (id = request id; body: u64 after + room name).
    Join = 0x0C,
    /// c→g: leave a room (id = request id; body: room name).
    Leave = 0x0D,
    /// g→c: a JOIN or LEAVE was done (id = its id; body: JSON `{"room","seq","member"}`).
    RoomOk = 0x0E,
    /// g→s: first frame on a state link (body: the gateway id, UTF-8).
    Hello = 0x40,
    /// s→g: the link is accepted (body: JSON `{"heartbeat_s","resume_window_s","max_pending"}`).
    HelloOk = 0x41,
    /// g→s: live logged-in routes after (re)connecting (body: n × u64 route).
    Announce = 0x42,
    /// g→s: the announcement is complete (empty body).
    AnnounceEnd = 0x43,
    /// g→s: a client's LOGIN (body: u64 route + token).
    StateLogin = 0x44,
    /// s→g: login or resume accepted (body: u64 route + the client's LOGIN_OK JSON).
    StateLoginOk = 0x45,
    /// s→g: login or resume refused (body: u64 route + u16 code + reason).
    LoginFail = 0x46,
    /// g→s: these routes showed life (body: n × u64 route).
    Heartbeat = 0x47,
    /// g→s: a logged-in connection closed (body: u64 route + UTF-8 reason).
    Closed = 0x48,
    /// g→s: a client's RESUME (body: u64 route + resume token).
    StateResume = 0x49,
    /// g→s: a client's ACK (id = message id; body: u64 route).
    StateAck = 0x4B,
    /// g→s: a STATE_PUSH the gateway could not deliver: the route is not a logged-in
    /// connection (id = message id; body: u64 route).
    Undelivered = 0x4C,
    /// g→s: a client's JOIN (id = its id; body: u64 route + u64 after + room name).
    StateJoin = 0x4D,
    /// g→s: a client's LEAVE (id = its id; body: u64 route + room name).
    StateLeave = 0x4E,
    /// g→s: a node's NODE_PUBLISH, relayed (body: u8 name length + room + payload).
    StatePublish = 0x4F,
    /// s→g: close this client (body: u64 route + u16 code + reason).
    Kick = 0x50,
    /// s→g: deliver a push (id = message id; body: u64 route + payload).
    StatePush = 0x51,
    /// s→g: a JOIN or LEAVE was done (id = its id; body: u64 route + the client's ROOM_OK JSON).
    StateRoomOk = 0x52,
    /// s→g: a JOIN or LEAVE was refused (id = its id; body: u64 route + u16 code + reason).
    RoomFail = 0x53,
    /// s→g: every room the session on this route is in (body: u64 route + n × (u8 length +
    /// name)); replaces what the gateway knew.
    Membership = 0x54,
    /// s→g: room messages (id = the last one's sequence number; body: u64 route, 0 for every
    /// member on this link, + a ROOM body).
    RoomMessage = 0x55,
    /// s→g: the link is refused or broken; the daemon closes it (body: u16 code + reason).
    StateError = 0x5F,
    /// g→n: a client request (body: u64 route + payload).
    Request = 0x81,
    /// n→g: the reply to a REQUEST (body: u64 route + payload).
    Response = 0x82,
    /// g→n: health probe.
    NodePing = 0x83,
    /// n→g: answer to NODE_PING.
    NodePong = 0x84,
    /// n→g: a request failed (body: u64 route + u16 code + reason).
    NodeError = 0x85,
    /// n→g: publish to a room (body: u8 name length + room + payload).
    NodePublish = 0x86,
}

impl Kind {
    /// Every kind of protocol v1, in wire order.
    pub const ALL: [Kind; 42] = [
        Kind::Login,
        Kind::LoginOk,
        Kind::Ping,
        Kind::Pong,
        Kind::Data,
        Kind::Push,
        Kind::Ack,
        Kind::Resume,
        Kind::GoAway,
        Kind::Error,
        Kind::Room,
        Kind::Join,
        Kind::Leave,
        Kind::RoomOk,
        Kind::Hello,
        Kind::HelloOk,
        Kind::Announce,
        Kind::AnnounceEnd,
        Kind::StateLogin,
        Kind::StateLoginOk,
        Kind::LoginFail,
        Kind::Heartbeat,
        Kind::Closed,
        Kind::StateResume,
        Kind::StateAck,
        Kind::Undelivered,
        Kind::StateJoin,
        Kind::StateLeave,
        Kind::StatePublish,
        Kind::Kick,
        Kind::StatePush,
        Kind::StateRoomOk,
        Kind::RoomFail,
        Kind::Membership,
        Kind::RoomMessage,
        Kind::StateError,
        Kind::Request,
        Kind::Response,
        Kind::NodePing,
        Kind::NodePong,
        Kind::NodeError,
        Kind::NodePublish,
    ];

    /// The kind for a wire byte, or `None` when the byte names no kind.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Login,
            0x02 => Kind::LoginOk,
            0x03 => Kind::Ping,
            0x04 => Kind::Pong,
            0x05 => Kind::Data,
            0x06 => Kind::Push,
            0x07 => Kind::Ack,
            0x08 => Kind::Resume,
            0x09 => Kind::GoAway,
            0x0A => Kind::Error,
            0x0B => Kind::Room,
            0x0C => Kind::Join,
            0x0D => Kind::Leave,
            0x0E => Kind::RoomOk,
            0x40 => Kind::Hello,
            0x41 => Kind::HelloOk,
            0x42 => Kind::Announce,
            0x43 => Kind::AnnounceEnd,
            0x44 => Kind::StateLogin,
            0x45 => Kind::StateLoginOk,
            0x46 => Kind::LoginFail,
            0x47 => Kind::Heartbeat,
            0x48 => Kind::Closed,
            0x49 => Kind::StateResume,
            0x4B => Kind::StateAck,
            0x4C => Kind::Undelivered,
            0x4D => Kind::StateJoin,
            0x4E => Kind::StateLeave,
            0x4F => Kind::StatePublish,
            0x50 => Kind::Kick,
            0x51 => Kind::StatePush,
            0x52 => Kind::StateRoomOk,
            0x53 => Kind::RoomFail,
            0x54 => Kind::Membership,
            0x55 => Kind::RoomMessage,
            0x5F => Kind::StateError,
            0x81 => Kind::Request,
            0x82 => Kind::Response,
            0x83 => Kind::NodePing,
            0x84 => Kind::NodePong,
            0x85 => Kind::NodeError,
            0x86 => Kind::NodePublish,
            _ => return None,
        })
    }

    /// The wire byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name used in design.md, logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Login => "LOGIN",
            Kind::LoginOk => "LOGIN_OK",
            Kind::Ping => "PING",
            Kind::Pong => "PONG",
            Kind::Data => "DATA",
            Kind::Push => "PUSH",
            Kind::Ack => "ACK",
            Kind::Resume => "RESUME",
            Kind::GoAway => "GOAWAY",
            Kind::Error => "ERROR",
            Kind::Room => "ROOM",
            Kind::Join => "JOIN",
            Kind::Leave => "LEAVE",
            Kind::RoomOk => "ROOM_OK",
            Kind::Hello => "HELLO",
            Kind::HelloOk => "HELLO_OK",
            Kind::Announce => "ANNOUNCE",
            Kind::AnnounceEnd => "ANNOUNCE_END",
            Kind::StateLogin => "STATE_LOGIN",
            Kind::StateLoginOk => "STATE_LOGIN_OK",
            Kind::LoginFail => "LOGIN_FAIL",
            Kind::Heartbeat => "HEARTBEAT",
            Kind::Closed => "CLOSED",
            Kind::StateResume => "STATE_RESUME",
            Kind::StateAck => "STATE_ACK",
            Kind::Undelivered => "UNDELIVERED",
            Kind::StateJoin => "STATE_JOIN",
            Kind::StateLeave => "STATE_LEAVE",
            Kind::StatePublish => "STATE_PUBLISH",
            Kind::Kick => "KICK",
            Kind::StatePush => "STATE_PUSH",
            Kind::StateRoomOk => "STATE_ROOM_OK",
            Kind::RoomFail => "ROOM_FAIL",
            Kind::Membership => "MEMBERSHIP",
            Kind::RoomMessage => "ROOM_MESSAGE",
            Kind::StateError => "STATE_ERROR",
            Kind::Request => "REQUEST",
            Kind::Response => "RESPONSE",
            Kind::NodePing => "NODE_PING",
            Kind::NodePong => "NODE_PONG",
            Kind::NodeError => "NODE_ERROR",
            Kind::NodePublish => "NODE_PUBLISH",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_maps_back_to_itself_or_to_nothing() {
        for byte in 0..=u8::MAX {
            if let Some(kind) = Kind::from_u8(byte) {
                assert_eq!(kind.as_u8(), byte);
            }
        }
        let known = (0..=u8::MAX).filter_map(Kind::from_u8).count();
        assert_eq!(known, Kind::ALL.len());
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind.as_u8()), Some(kind));
        }
    }
}
