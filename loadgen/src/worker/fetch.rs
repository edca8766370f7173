//! Asking tether-ipconfig for `/ip_list` on the connection's own nonblocking socket, so a
//! crowd of connections told GOAWAY at once never stalls the worker: the GET is queued
//! when the socket is opened, written once it connects, and the answer read as it comes.
//!
//! The request says `Connection: close` and the answer is taken at the server's EOF, so the
//! server closes first and the TIME_WAIT stays on its side (a load generator opening
//! hundreds of thousands of these would otherwise run out of local ports). A server that
//! keeps the socket open anyway is answered at the phase deadline with what it sent.

use std::time::Instant;

use mio::{Interest, Token};

use super::Worker;
use crate::cause::Cause;
use crate::conn::State;
use crate::dial;
use crate::http::{self, Response};
use crate::ip_list;
use crate::link::Transport;

/// Bytes of answer kept at most.
const LIMIT: usize = http::MAX_HEAD + ip_list::MAX_BODY;

impl Worker<'_> {
    /// Opens a socket to ipconfig and queues `GET /ip_list`.
    pub(super) fn start_fetch(&mut self, k: usize, now: Instant) {
        let Some(url) = self.config.ipconfig.as_ref() else {
            return;
        };
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        conn.state = State::Resolving;
        conn.peer = None;
        let opened = dial::connect(url.addr, conn.source).and_then(|mut stream| {
            self.poll
                .registry()
                .register(
                    &mut stream,
                    Token(k),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| Cause::of_connect_error(&e))?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                conn.stream = Some(stream);
                conn.connected = false;
                conn.queue_bytes(&http::get(&url.host, &url.path("/ip_list")));
                self.set_phase(k, now, self.config.connect_timeout);
            }
            Err(cause) => {
                tracing::debug!(cause = cause.name(), ipconfig = %url.addr, "cannot reach ipconfig");
                self.attempt_failed(k, Cause::IpListUnreachable, now);
            }
        }
    }

    /// An event on the ipconfig socket: finish connecting, send, read; at EOF, use the
    /// answer.
    pub(super) fn service_fetch(&mut self, k: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if !conn.connected {
            let finished = match conn.stream.as_ref() {
                Some(stream) => dial::finished(stream),
                None => Ok(false),
            };
            match finished {
                Ok(true) => conn.connected = true,
                Ok(false) => return,
                Err(cause) => {
                    tracing::debug!(cause = cause.name(), "cannot reach ipconfig");
                    return self.attempt_failed(k, Cause::IpListUnreachable, now);
                }
            }
        }
        if conn.flush().is_err() {
            return self.attempt_failed(k, Cause::IpListUnreachable, now);
        }
        match conn.read_raw(&mut self.scratch, LIMIT) {
            Ok(true) => self.answered(k, true, now),
            Ok(false) => {}
            Err(cause) => self.attempt_failed(k, cause, now),
        }
    }

    /// The fetch's deadline passed: a complete answer already read is used, else it timed
    /// out.
    pub(super) fn fetch_deadline(&mut self, k: usize, now: Instant) {
        self.answered(k, false, now);
    }

    /// Parses what ipconfig sent (`eof`: all of it) and goes on to the gateways it lists.
    fn answered(&mut self, k: usize, eof: bool, now: Instant) {
        let Some(conn) = self.conns.get(k) else {
            return;
        };
        let response = match http::parse_response(conn.received(), eof, ip_list::MAX_BODY) {
            Ok(Some((response, _))) => response,
            Ok(None) => return self.attempt_failed(k, Cause::IpListTimeout, now),
            Err(e) => {
                tracing::debug!(error = %e, "bad /ip_list answer");
                let cause = if e == http::HttpError::Truncated && conn.received().is_empty() {
                    Cause::IpListUnreachable
                } else {
                    Cause::IpListBad
                };
                return self.attempt_failed(k, cause, now);
            }
        };
        self.unhook(k);
        match gateways(&response, self.config.transport) {
            Ok(listed) => self.try_gateways(k, &listed, now),
            Err(cause) => self.attempt_failed(k, cause, now),
        }
    }
}

/// The gateways an `/ip_list` answer lists for `transport`, or the cause it gives none.
fn gateways(response: &Response, transport: Transport) -> Result<Vec<std::net::SocketAddr>, Cause> {
    match response.status {
        200 => ip_list::parse(&response.body, transport).map_err(|e| {
            tracing::debug!(error = %e, "unusable /ip_list answer");
            Cause::IpListBad
        }),
        503 => Err(Cause::IpListUnavailable),
        _ => Err(Cause::IpListHttp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &[u8]) -> Response {
        Response {
            status,
            body: body.to_vec(),
            close: true,
        }
    }

    #[test]
    fn answers_map_to_gateways_or_causes() {
        let ok = response(
            200,
            br#"{"gateways":[{"id":"a","addr":"127.0.0.1:9"}],"generated_at_ms":1}"#,
        );
        let gateways = |r: &Response| gateways(r, Transport::Tcp);
        assert_eq!(gateways(&ok), Ok(vec!["127.0.0.1:9".parse().unwrap()]));
        let none = response(503, br#"{"error":"no gateway is available"}"#);
        assert_eq!(gateways(&none), Err(Cause::IpListUnavailable));
        assert_eq!(gateways(&response(404, b"{}")), Err(Cause::IpListHttp));
        assert_eq!(gateways(&response(200, b"[]")), Err(Cause::IpListBad));
        assert_eq!(
            gateways(&response(200, br#"{"gateways":[]}"#)),
            Err(Cause::IpListBad)
        );
    }
}
