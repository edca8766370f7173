//! A refused upgrade: the HTTP status, a short reason, and the whole response a server sends
//! before closing the socket.

use std::io::Write;

/// The statuses a server refuses an upgrade with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 400: a malformed request, or a required field missing or wrong.
    BadRequest,
    /// 403: an `Origin` not on the allow-list (or none, when one is required).
    Forbidden,
    /// 404: a path that does not upgrade.
    NotFound,
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 426: not a WebSocket upgrade, or a WebSocket version other than 13.
    UpgradeRequired,
    /// 431: the request head passed the size cap.
    HeaderFieldsTooLarge,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::Forbidden => 403,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::UpgradeRequired => 426,
            Status::HeaderFieldsTooLarge => 431,
        }
    }

    pub fn phrase(self) -> &'static str {
        match self {
            Status::BadRequest => "Bad Request",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::UpgradeRequired => "Upgrade Required",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
        }
    }

    /// Fields this status requires (RFC 9110 §15.5.6 and §15.5.22, RFC 6455 §4.4).
    fn fields(self) -> &'static str {
        match self {
            Status::MethodNotAllowed => "Allow: GET\r\n",
            Status::UpgradeRequired => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
            _ => "",
        }
    }
}

/// Why a server refuses an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    /// A short reason, also the response's body.
    pub reason: &'static str,
}

impl Refusal {
    pub fn new(status: Status, reason: &'static str) -> Refusal {
        Refusal { status, reason }
    }

    /// Appends the response: status line, `Connection: close`, the fields the status needs,
    /// and the reason as a plain-text body. The server closes the socket once it is written.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nConnection: close\r\nContent-Type: text/plain; \
             charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{}\n",
            self.status.code(),
            self.status.phrase(),
            self.reason.len() + 1,
            self.status.fields(),
            self.reason,
        );
    }

    /// The response as a new buffer.
    pub fn response(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_response(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_is_exact() {
        let refusal = Refusal::new(Status::UpgradeRequired, "WebSocket version 13 required");
        assert_eq!(
            String::from_utf8(refusal.response()).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 30\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n\
             WebSocket version 13 required\n"
        );
    }

    #[test]
    fn every_status_parses_back_with_its_code() {
        for status in [
            Status::BadRequest,
            Status::Forbidden,
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::UpgradeRequired,
            Status::HeaderFieldsTooLarge,
        ] {
            let bytes = Refusal::new(status, "why").response();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut response = httparse::Response::new(&mut headers);
            let head = match response.parse(&bytes) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{other:?}"),
            };
            assert_eq!(response.code, Some(status.code()));
            assert_eq!(&bytes[head..], b"why\n");
        }
    }
}
