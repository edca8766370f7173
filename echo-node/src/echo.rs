//! What a node answers to each frame, without any I/O.
//!
//! [`Echo::handle`] appends the reply (if any) to the connection's output buffer and says
//! whether the connection goes on, must close after flushing, or whether the request wants
//! the compute pool. The reactor does the rest.

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
}

/// The heartbeat interval an echo node announces in LOGIN_OK.
pub(crate) const HEARTBEAT_S: u32 = 30;

impl Echo {
    pub(crate) fn new(reactor: usize, compute: bool) -> Echo {
        Echo {
            compute,
            reactor,
            sessions: 0,
        }
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
            reply(out, &request);
            Outcome::Continue
        }
    }
}

/// Appends the echo of `request`: DATA for DATA, RESPONSE with the same route for REQUEST.
pub(crate) fn reply(out: &mut Vec<u8>, request: &Request<'_>) {
    match request.kind {
        Kind::Request => encode::routed(
            out,
            Kind::Response,
            request.id,
            request.route,
            request.payload,
        ),
        _ => encode::frame(out, Kind::Data, request.id, request.payload),
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
