//! What a node answers to each frame, without any I/O.
//!
//! [`Echo::handle`] appends the reply (if any) to the connection's output buffer and says
//! whether the connection goes on, must close after flushing, or whether the request wants
//! the compute pool. The reactor does the rest.
//!
//! With a publish room (`publish_room`), [`Echo::reply`] follows every RESPONSE with a
//! NODE_PUBLISH of the same payload to that room, on the same link: the gateway relays it to
//! its state daemon, which sends it to the room's members.

use tether_proto::room::Publish;
use tether_proto::{encode, ErrorCode, Frame, Kind, Routed};

/// What the reactor does after [`Echo::handle`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<'a> {
    /// Done: any reply is in the output buffer.
    Continue,
    /// An ERROR that closes the connection is in the output buffer: stop reading, flush,
    /// close.
    Close,
    /// The request wants compute time: submit it to the pool.
    Offload(Request<'a>),
}

/// A DATA or REQUEST waiting for compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request<'a> {
    pub kind: Kind,
    pub id: u64,
    /// The route key of a REQUEST; 0 for DATA, which has none.
    pub route: u64,
    pub payload: &'a [u8],
}

/// Per-reactor responder state.
#[derive(Debug)]
pub(crate) struct Echo {
    /// When true, DATA and REQUEST are offloaded instead of answered inline.
    compute: bool,
    /// Makes anonymous session names unique across reactors.
    reactor: usize,
    sessions: u64,
    /// The room every REQUEST's payload is published to, if any (a checked name).
    publish_room: Option<String>,
    /// The largest body the node sends in a NODE_PUBLISH: the node's own `max_body`, which
    /// it takes its gateways to share (a larger frame would cost the whole link).
    max_body: usize,
}

/// The heartbeat interval an echo node announces in LOGIN_OK.
pub(crate) const HEARTBEAT_S: u32 = 30;

impl Echo {
    pub(crate) fn new(reactor: usize, compute: bool) -> Echo {
        Echo {
            compute,
            reactor,
            sessions: 0,
            publish_room: None,
            max_body: tether_proto::DEFAULT_MAX_BODY as usize,
        }
    }

    /// Publishes every REQUEST's payload to `room` (a name `room::valid_name` accepts), in
    /// NODE_PUBLISH bodies of at most `max_body` bytes.
    pub(crate) fn publishing(mut self, room: Option<String>, max_body: u32) -> Echo {
        self.publish_room = room;
        self.max_body = max_body as usize;
        self
    }

    /// Answers one frame into `out`.
    pub(crate) fn handle<'a>(&mut self, frame: Frame<'a>, out: &mut Vec<u8>) -> Outcome<'a> {
        match frame.kind {
            Kind::Data => {
                let request = Request {
                    kind: Kind::Data,
                    id: frame.id,
                    route: 0,
                    payload: frame.body,
                };
                self.answer(request, out)
            }
            Kind::Request => match Routed::parse(frame.body) {
                Ok(routed) => {
                    let request = Request {
                        kind: Kind::Request,
                        id: frame.id,
                        route: routed.route,
                        payload: routed.payload,
                    };
                    self.answer(request, out)
                }
                Err(e) => fail(out, frame.id, ErrorCode::BadFrame, &e.to_string()),
            },
            Kind::Ping => {
                encode::frame(out, Kind::Pong, frame.id, &[]);
                Outcome::Continue
            }
            Kind::NodePing => {
                encode::frame(out, Kind::NodePong, frame.id, &[]);
                Outcome::Continue
            }
            Kind::Login => {
                self.sessions += 1;
                let body = format!(
                    r#"{{"session":"anon-{}-{}","resume_token":"","heartbeat_s":{HEARTBEAT_S}}}"#,
                    self.reactor, self.sessions
                );
                encode::frame(out, Kind::LoginOk, frame.id, body.as_bytes());
                Outcome::Continue
            }
            // A node sends no pushes, so there is nothing to acknowledge.
            Kind::Ack => Outcome::Continue,
            Kind::Resume => {
                encode::error(
                    out,
                    frame.id,
                    ErrorCode::Unavailable,
                    "an echo node holds no sessions",
                );
                Outcome::Continue
            }
            // Node replies, client-bound kinds and the state link's kinds are not for a node.
            _ => fail(
                out,
                frame.id,
                ErrorCode::UnknownKind,
                &format!("a node does not accept {}", frame.kind.name()),
            ),
        }
    }

    fn answer<'a>(&self, request: Request<'a>, out: &mut Vec<u8>) -> Outcome<'a> {
        if self.compute {
            Outcome::Offload(request)
        } else {
            self.reply(out, &request);
            Outcome::Continue
        }
    }

    /// Appends the echo of `request`: DATA for DATA, RESPONSE with the same route for
    /// REQUEST, and after a RESPONSE the NODE_PUBLISH of its payload when there is a publish
    /// room. A payload too large for one NODE_PUBLISH is answered but not published.
    pub(crate) fn reply(&self, out: &mut Vec<u8>, request: &Request<'_>) {
        match request.kind {
            Kind::Request => {
                encode::routed(
                    out,
                    Kind::Response,
                    request.id,
                    request.route,
                    request.payload,
                );
                if let Some(room) = &self.publish_room {
                    let publish = Publish {
                        room,
                        payload: request.payload,
                    };
                    if publish.body_len() <= self.max_body {
                        encode::header(out, Kind::NodePublish, 0, 0, publish.body_len());
                        publish.write(out);
                    }
                }
            }
            _ => encode::frame(out, Kind::Data, request.id, request.payload),
        }
    }
}

/// Appends the answer for a request the pool had no room for. A gateway's REQUEST gets
/// NODE_ERROR and its link stays; a client's DATA gets ERROR OVERLOADED, which closes
/// (design.md: code 6 is followed by close). Returns the outcome for the connection.
pub(crate) fn overloaded(out: &mut Vec<u8>, request: &Request<'_>) -> Outcome<'static> {
    const REASON: &str = "compute queue full";
    match request.kind {
        Kind::Request => {
            encode::node_error(
                out,
                request.id,
                request.route,
                ErrorCode::Overloaded,
                REASON,
            );
            Outcome::Continue
        }
        _ => fail(out, request.id, ErrorCode::Overloaded, REASON),
    }
}

/// Appends an ERROR that closes the connection.
pub(crate) fn fail(out: &mut Vec<u8>, id: u64, code: ErrorCode, reason: &str) -> Outcome<'static> {
    encode::error(out, id, code, reason);
    Outcome::Close
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{Decoder, ErrorBody, NodeErrorBody};

    fn one_reply(out: &[u8]) -> (Kind, u64, Vec<u8>) {
        let (frame, used) = Decoder::default().decode(out).unwrap().unwrap();
        assert_eq!(used, out.len(), "exactly one reply");
        (frame.kind, frame.id, frame.body.to_vec())
    }

    fn handle(echo: &mut Echo, kind: Kind, id: u64, body: &[u8]) -> (bool, Vec<u8>) {
        let mut out = Vec::new();
        let outcome = echo.handle(Frame::new(kind, id, body), &mut out);
        (outcome == Outcome::Close, out)
    }

    #[test]
    fn data_and_request_are_echoed_inline() {
        let mut echo = Echo::new(0, false);
        let (close, out) = handle(&mut echo, Kind::Data, 5, b"abc");
        assert!(!close);
        assert_eq!(one_reply(&out), (Kind::Data, 5, b"abc".to_vec()));

        let mut body = 99u64.to_be_bytes().to_vec();
        body.extend_from_slice(b"payload");
        let (close, out) = handle(&mut echo, Kind::Request, 6, &body);
        assert!(!close);
        assert_eq!(one_reply(&out), (Kind::Response, 6, body));
    }

    /// Every frame in `out`, in order.
    fn replies(out: &[u8]) -> Vec<(Kind, u64, Vec<u8>)> {
        let mut at = 0;
        let mut all = Vec::new();
        while at < out.len() {
            let (frame, used) = Decoder::default().decode(&out[at..]).unwrap().unwrap();
            all.push((frame.kind, frame.id, frame.body.to_vec()));
            at += used;
        }
        all
    }

    fn request(route: u64, payload: &[u8]) -> Vec<u8> {
        let mut body = route.to_be_bytes().to_vec();
        body.extend_from_slice(payload);
        body
    }

    #[test]
    fn a_publishing_node_follows_each_response_with_a_publish_of_its_payload() {
        let mut echo = Echo::new(0, false).publishing(Some("lobby".into()), 64);
        let body = request(99, b"hello room");
        let (close, out) = handle(&mut echo, Kind::Request, 6, &body);
        assert!(!close);
        let all = replies(&out);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], (Kind::Response, 6, body));
        let (kind, id, publish) = &all[1];
        assert_eq!((*kind, *id), (Kind::NodePublish, 0));
        assert_eq!(
            Publish::parse(publish).unwrap(),
            Publish {
                room: "lobby",
                payload: b"hello room"
            }
        );
        // An empty payload is published too.
        let (_, out) = handle(&mut echo, Kind::Request, 7, &request(1, b""));
        assert_eq!(replies(&out)[1].2, b"\x05lobby");

        // A client's DATA is only echoed: a client link takes no NODE_PUBLISH.
        let (_, out) = handle(&mut echo, Kind::Data, 8, b"direct");
        assert_eq!(replies(&out), [(Kind::Data, 8, b"direct".to_vec())]);

        // A payload whose publish would pass max_body is answered, not published.
        let big = vec![b'x'; 64 - 5];
        let (_, out) = handle(&mut echo, Kind::Request, 9, &request(2, &big));
        let all = replies(&out);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, Kind::Response);
        let fits = vec![b'x'; 64 - 6];
        let (_, out) = handle(&mut echo, Kind::Request, 10, &request(2, &fits));
        assert_eq!(replies(&out).len(), 2);
    }

    #[test]
    fn a_publishing_node_publishes_what_the_pool_computed_too() {
        let mut echo = Echo::new(0, true).publishing(Some("demo/a".into()), 1024);
        let mut out = Vec::new();
        let body = request(5, b"later");
        let Outcome::Offload(req) = echo.handle(Frame::new(Kind::Request, 3, &body), &mut out)
        else {
            panic!("expected offload");
        };
        assert!(out.is_empty());
        echo.reply(&mut out, &req);
        let all = replies(&out);
        assert_eq!(all[0], (Kind::Response, 3, body));
        assert_eq!(Publish::parse(&all[1].2).unwrap().room, "demo/a");
        assert_eq!(Publish::parse(&all[1].2).unwrap().payload, b"later");
    }

    #[test]
    fn without_a_publish_room_nothing_is_published() {
        let (_, out) = handle(
            &mut Echo::new(0, false),
            Kind::Request,
            1,
            &request(1, b"p"),
        );
        assert_eq!(replies(&out).len(), 1);
    }

    #[test]
    fn pings_and_login_are_answered() {
        let mut echo = Echo::new(1, false);
        let (_, out) = handle(&mut echo, Kind::Ping, 8, b"");
        assert_eq!(one_reply(&out), (Kind::Pong, 8, vec![]));
        let (_, out) = handle(&mut echo, Kind::NodePing, 9, b"");
        assert_eq!(one_reply(&out), (Kind::NodePong, 9, vec![]));
        let (_, out) = handle(&mut echo, Kind::Login, 10, b"any token");
        let (kind, id, body) = one_reply(&out);
        assert_eq!((kind, id), (Kind::LoginOk, 10));
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"session":"anon-1-1","resume_token":"","heartbeat_s":30}"#
        );
        let (close, out) = handle(&mut echo, Kind::Ack, 11, b"");
        assert!(!close && out.is_empty());
    }

    #[test]
    fn resume_is_unavailable_and_keeps_the_connection() {
        let (close, out) = handle(&mut Echo::new(0, false), Kind::Resume, 3, b"tok");
        assert!(!close);
        let (kind, id, body) = one_reply(&out);
        assert_eq!((kind, id), (Kind::Error, 3));
        assert_eq!(ErrorBody::parse(&body).unwrap().code, 11);
    }

    #[test]
    fn kinds_a_node_does_not_accept_close_with_unknown_kind() {
        for kind in [Kind::Pong, Kind::Push, Kind::Response, Kind::NodeError] {
            let (close, out) = handle(&mut Echo::new(0, false), kind, 4, b"");
            assert!(close, "{kind:?}");
            let (k, id, body) = one_reply(&out);
            assert_eq!((k, id), (Kind::Error, 4));
            assert_eq!(ErrorBody::parse(&body).unwrap().code, 3);
        }
    }

    #[test]
    fn a_request_without_a_route_is_a_bad_frame() {
        let (close, out) = handle(&mut Echo::new(0, false), Kind::Request, 4, b"short");
        assert!(close);
        let (_, _, body) = one_reply(&out);
        assert_eq!(ErrorBody::parse(&body).unwrap().code, 1);
    }

    #[test]
    fn compute_mode_offloads_and_overload_answers_by_link() {
        let mut echo = Echo::new(0, true);
        let mut out = Vec::new();
        let mut body = 7u64.to_be_bytes().to_vec();
        body.extend_from_slice(b"x");
        let Outcome::Offload(request) = echo.handle(Frame::new(Kind::Request, 1, &body), &mut out)
        else {
            panic!("expected offload");
        };
        assert!(out.is_empty());
        assert_eq!(overloaded(&mut out, &request), Outcome::Continue);
        let (kind, _, reply) = one_reply(&out);
        assert_eq!(kind, Kind::NodeError);
        let parsed = NodeErrorBody::parse(&reply).unwrap();
        assert_eq!((parsed.route, parsed.code), (7, 6));

        out.clear();
        let data = Request {
            kind: Kind::Data,
            id: 2,
            route: 0,
            payload: b"y",
        };
        assert_eq!(overloaded(&mut out, &data), Outcome::Close);
        let (kind, id, reply) = one_reply(&out);
        assert_eq!((kind, id), (Kind::Error, 2));
        assert_eq!(ErrorBody::parse(&reply).unwrap().code, 6);
    }
}
