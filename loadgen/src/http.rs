//! Just enough HTTP/1.1 for a client, sans-IO: `http://host:port[/base]` URLs, GET and POST
//! requests as bytes, and a response parser that says "complete", "need more" or why the
//! bytes are not a response.
//!
//! Two callers: the workers fetch `/ip_list` from tether-ipconfig on their own nonblocking
//! sockets ([`crate::worker`]), and the push driver POSTs to tether-state's `/v1/push` over
//! one blocking keep-alive connection ([`crate::pusher`]). A body is delimited by
//! `Content-Length`, by chunked transfer coding, or by the end of the connection.

use std::net::{SocketAddr, ToSocketAddrs};

use thiserror::Error;

/// Largest response head (status line and headers) accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// A parsed `http://` URL: where to connect and what to send as `Host` and path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// The address `host:port` resolved to when the URL was parsed.
    pub addr: SocketAddr,
    /// `host:port` as written, for the `Host` header.
    pub host: String,
    /// The path after the authority without a trailing `/` (often empty).
    pub base: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UrlError {
    #[error("only http:// URLs are supported")]
    Scheme,
    #[error("no host:port after http://")]
    NoAuthority,
    #[error("{0:?} does not resolve: {1}")]
    Resolve(String, String),
}

impl Url {
    /// Parses `http://host[:port][/base]` (port 80 by default) and resolves the host.
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let rest = text.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        let (authority, base) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(UrlError::NoAuthority);
        }
        let with_port = if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = match with_port.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => with_port
                .to_socket_addrs()
                .map_err(|e| UrlError::Resolve(with_port.clone(), e.to_string()))?
                .next()
                .ok_or_else(|| UrlError::Resolve(with_port.clone(), "no address".to_string()))?,
        };
        Ok(Url {
            addr,
            host: authority.to_string(),
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The request target for `path` (which starts with `/`) under this URL's base.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Whether an authority ends in `:port` (an IPv6 literal's colons are inside brackets).
fn has_port(authority: &str) -> bool {
    match authority.strip_prefix('[') {
        Some(bracketed) => bracketed
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => authority.contains(':'),
    }
}

/// A GET for `path` on `host`, asking the server to close the connection after answering.
pub(crate) fn get(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A POST of a JSON `body` to `path` on `host`, keeping the connection open, with
/// `Authorization: Bearer <bearer>` when given.
pub(crate) fn post_json(host: &str, path: &str, body: &[u8], bearer: Option<&[u8]>) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(token) = bearer {
        request.extend_from_slice(b"Authorization: Bearer ");
        request.extend_from_slice(token);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close` (or the body ran to the end of the connection).
    pub close: bool,
}

/// Why bytes are not an HTTP/1.1 response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum HttpError {
    #[error("not an HTTP/1.x status line")]
    StatusLine,
    #[error("a malformed header line")]
    Header,
    #[error("the response head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("a bad Content-Length")]
    ContentLength,
    #[error("bad chunked transfer coding")]
    Chunked,
    #[error("the body is over the limit")]
    BodyTooLarge,
    #[error("the connection closed before the response was complete")]
    Truncated,
}

/// Parses the response at the front of `buf`. `Ok(None)`: incomplete, read more (`eof`
/// false) — with `eof` true an incomplete response is [`HttpError::Truncated`], and a body
/// with neither length nor chunking ends at `eof`. `Ok(Some((response, used)))` otherwise.
pub(crate) fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<(Response, usize)>, HttpError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        return if eof {
            Err(HttpError::Truncated)
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(buf.get(..head_end).unwrap_or_default())
        .map_err(|_| HttpError::Header)?;
    let mut lines = head.split("\r\n");
    let status = status_code(lines.next().unwrap_or_default())?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| HttpError::ContentLength)?;
            if length.is_some_and(|m| m != n) {
                return Err(HttpError::ContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    let body_start = head_end + 4;
    let rest = buf.get(body_start..).unwrap_or_default();
    let no_body = status / 100 == 1 || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if chunked {
        match dechunk(rest, max_body)? {
            Some(done) => done,
            None if eof => return Err(HttpError::Truncated),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if n > max_body {
            return Err(HttpError::BodyTooLarge);
        }
        match rest.get(..n) {
            Some(body) => (body.to_vec(), n),
            None if eof => return Err(HttpError::Truncated),
            None => return Ok(None),
        }
    } else {
        // Delimited by the end of the connection.
        if rest.len() > max_body {
            return Err(HttpError::BodyTooLarge);
        }
        if !eof {
            return Ok(None);
        }
        close = true;
        (rest.to_vec(), rest.len())
    };
    Ok(Some((
        Response {
            status,
            body,
            close,
        },
        body_start + used,
    )))
}

/// `HTTP/1.x NNN reason` → NNN.
fn status_code(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::StatusLine);
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 {
        return Err(HttpError::StatusLine);
    }
    code.parse().map_err(|_| HttpError::StatusLine)
}

/// Decodes a chunked body at the front of `buf`: `Ok(None)` while incomplete, else the body
/// and the bytes used (trailers included).
fn dechunk(buf: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let rest = buf.get(at..).unwrap_or_default();
        let Some(line_end) = find(rest, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(rest.get(..line_end).unwrap_or_default())
            .map_err(|_| HttpError::Chunked)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Chunked)?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, each ending in CRLF, then an empty line.
            loop {
                let rest = buf.get(at..).unwrap_or_default();
                let Some(end) = find(rest, b"\r\n") else {
                    return Ok(None);
                };
                at += end + 2;
                if end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len().saturating_add(size) > max_body {
            return Err(HttpError::BodyTooLarge);
        }
        let Some(data) = buf.get(at..at.saturating_add(size)) else {
            return Ok(None);
        };
        body.extend_from_slice(data);
        at += size;
        match buf.get(at..at + 2) {
            Some(b"\r\n") => at += 2,
            Some(_) => return Err(HttpError::Chunked),
            None if buf.get(at).is_some_and(|&b| b != b'\r') => return Err(HttpError::Chunked),
            None => return Ok(None),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn urls_give_address_host_and_base() {
        let url = Url::parse("http://127.0.0.1:6789").unwrap();
        assert_eq!(url.addr, "127.0.0.1:6789".parse().unwrap());
        assert_eq!(
            (url.host.as_str(), url.path("/ip_list").as_str()),
            ("127.0.0.1:6789", "/ip_list")
        );
        let url = Url::parse("http://127.0.0.1:8902/api/").unwrap();
        assert_eq!(url.path("/v1/push"), "/api/v1/push");
        assert_eq!(Url::parse("http://127.0.0.1").unwrap().addr.port(), 80);
        assert_eq!(Url::parse("http://[::1]:9").unwrap().addr.port(), 9);
        assert_eq!(Url::parse("http://[::1]").unwrap().addr.port(), 80);
        assert_eq!(Url::parse("https://x:1"), Err(UrlError::Scheme));
        assert_eq!(Url::parse("http:///x"), Err(UrlError::NoAuthority));
        assert!(matches!(
            Url::parse("http://no-such-host.invalid:1"),
            Err(UrlError::Resolve(..))
        ));
    }

    #[test]
    fn requests_are_well_formed() {
        let get = String::from_utf8(get("h:1", "/ip_list")).unwrap();
        assert!(get.starts_with("GET /ip_list HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(get.ends_with("Connection: close\r\n\r\n"));
        let post = post_json("h:1", "/v1/push", b"{}", None);
        let text = String::from_utf8(post).unwrap();
        assert!(text.contains("Content-Length: 2\r\n\r\n{}"));
        assert!(!text.contains("Authorization"));
        let post = post_json("h:1", "/v1/push", b"{}", Some(b"t0k"));
        let text = String::from_utf8(post).unwrap();
        assert!(
            text.contains("Content-Length: 2\r\nAuthorization: Bearer t0k\r\n\r\n{}"),
            "{text}"
        );
    }

    #[test]
    fn a_content_length_body_is_complete_at_its_length_in_any_chunking() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhelloEXTRA";
        for cut in 0..wire.len() - 5 {
            assert_eq!(
                parse_response(&wire[..cut], false, MAX),
                Ok(None),
                "cut {cut}"
            );
        }
        let (response, used) = parse_response(wire, false, MAX).unwrap().unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"hello"[..])
        );
        assert!(!response.close);
        assert_eq!(&wire[used..], b"EXTRA");
        assert_eq!(
            parse_response(&wire[..70], true, MAX),
            Err(HttpError::Truncated)
        );
        assert_eq!(parse_response(wire, false, 4), Err(HttpError::BodyTooLarge));
    }

    #[test]
    fn a_body_without_length_ends_with_the_connection() {
        let wire =
            b"HTTP/1.0 503 Service Unavailable\r\nConnection: close\r\n\r\n{\"error\":\"x\"}";
        assert_eq!(parse_response(wire, false, MAX), Ok(None));
        let (response, used) = parse_response(wire, true, MAX).unwrap().unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.body, b"{\"error\":\"x\"}");
        assert!(response.close);
        assert_eq!(used, wire.len());
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n";
        for cut in 0..wire.len() {
            assert_eq!(
                parse_response(&wire[..cut], false, MAX),
                Ok(None),
                "cut {cut}"
            );
        }
        let (response, used) = parse_response(wire, false, MAX).unwrap().unwrap();
        assert_eq!(response.body, b"hello!");
        assert_eq!(used, wire.len());
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse_response(bad, false, MAX), Err(HttpError::Chunked));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab";
        assert_eq!(parse_response(bad, false, MAX), Err(HttpError::Chunked));
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n";
        assert_eq!(parse_response(bad, false, MAX), Err(HttpError::Chunked));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for wire in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\xff: x\r\n\r\n",
        ] {
            assert!(parse_response(wire, true, MAX).is_err(), "{wire:?}");
        }
        let huge = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(
            parse_response(&huge, false, MAX),
            Err(HttpError::HeadTooLarge)
        );
        // 204 has no body even without a length.
        let (r, used) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", false, MAX)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.len(), used), (204, 0, 27));
    }
}
