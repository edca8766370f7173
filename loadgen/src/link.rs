//! The load generator's side of the gateway's transports (`--tls`, `--ws`, `--wss`): what
//! lies between a connection's socket and its v1 frames.
//!
//! A [`Link`] turns the bytes read from the socket into v1 bytes ([`Link::receive`]) and the
//! v1 frames a connection queued into bytes for the socket ([`Link::send`]). TLS is rustls'
//! buffered `ClientConnection` (this is not the product: simple beats lean here, though its
//! buffers stay small while idle); WebSocket is `tether_proto::ws`'s client side: the
//! upgrade request, masked binary messages (each holding the whole v1 frames of one flush),
//! pongs for the server's pings, the close echoed. A plain TCP connection has no link.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::pem::PemObject;
use tether_proto::ws::{
    self, encode as wse, Assembler, ClientHandshake, Config, Event, ExpectedResponse,
};

use crate::cause::Cause;

/// What the connections of a run speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn uses_tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    /// Its name in `/ip_list`'s `transports`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// How every connection of a run sets up its link: built once per process.
#[derive(Clone)]
pub(crate) struct LinkSpec {
    transport: Transport,
    tls: Option<Arc<ClientConfig>>,
    server_name: ServerName<'static>,
    /// `Host` and path of the upgrade request. Leaked once per worker, so the response
    /// check each connection keeps (which borrows them) lives as long as it.
    host: &'static str,
    path: &'static str,
}

impl std::fmt::Debug for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSpec")
            .field("transport", &self.transport)
            .field("host", &self.host)
            .field("path", &self.path)
            .finish()
    }
}

impl LinkSpec {
    /// The spec for `transport`, trusting the PEM certificates in `ca` (with TLS) and
    /// naming the server `server_name` (SNI, certificate check and `Host`).
    pub(crate) fn new(
        transport: Transport,
        ca: Option<&Path>,
        server_name: &str,
        path: &str,
    ) -> Result<LinkSpec, String> {
        let tls = if transport.uses_tls() {
            let ca = ca.ok_or("--tls and --wss need --tls-ca (the certificate to trust)")?;
            Some(client_config(ca)?)
        } else {
            None
        };
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("--tls-server-name {server_name:?}: {e}"))?;
        Ok(LinkSpec {
            transport,
            tls,
            server_name: name,
            host: Box::leak(server_name.to_string().into_boxed_str()),
            path: Box::leak(path.to_string().into_boxed_str()),
        })
    }

    /// A link for a new connection, `None` over plain TCP. `nonce` seeds its WebSocket key
    /// and masks.
    pub(crate) fn start(&self, nonce: u64) -> Result<Option<Box<Link>>, Cause> {
        let tls = match (&self.tls, self.transport.uses_tls()) {
            (Some(config), true) => Some(
                ClientConnection::new(config.clone(), self.server_name.clone())
                    .map_err(|_| Cause::TlsError)?,
            ),
            _ => None,
        };
        let mut link = Link {
            tls,
            ws: None,
            wire: Vec::new(),
            wpos: 0,
            plain: Vec::new(),
        };
        match self.transport {
            Transport::Tcp => return Ok(None),
            Transport::Tls => {}
            Transport::Ws | Transport::Wss => {
                let mut rng = Mask(nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&rng.next().to_le_bytes());
                key[8..].copy_from_slice(&rng.next().to_le_bytes());
                let mut request = Vec::new();
                let expected = ClientHandshake {
                    host: self.host,
                    path: self.path,
                    origin: None,
                    protocol: Some("tether.v1"),
                }
                .write_request(&key, &mut request)
                .map_err(|_| Cause::WsError)?;
                link.ws = Some(WsClient {
                    state: Assembler::new(),
                    expected: Some(expected),
                    partial: Vec::new(),
                    mask: rng,
                });
                link.lower_write(&request)?;
            }
        }
        Ok(Some(Box::new(link)))
    }
}

fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--tls-ca {}: no certificate in it", ca.display()));
    }
    // The ring provider, as the gateway (no post-quantum key exchange: hence deprecated).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Masking keys: the gateway unmasks whatever key it gets, and a load generator needs no
/// secrecy from itself (a browser's keys must be unpredictable; these are xorshift).
#[derive(Debug, Clone, Copy)]
struct Mask(u64);

impl Mask {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn key(&mut self) -> [u8; 4] {
        (self.next() as u32).to_le_bytes()
    }
}

#[derive(Debug)]
struct WsClient {
    state: Assembler,
    /// Until the 101 is in: what to check it against.
    expected: Option<ExpectedResponse<'static>>,
    /// The response head so far, then a cut frame or an open message.
    partial: Vec<u8>,
    mask: Mask,
}

/// One connection's transport state.
pub(crate) struct Link {
    tls: Option<ClientConnection>,
    ws: Option<WsClient>,
    /// Bytes for the socket, and how many of them were written.
    wire: Vec<u8>,
    wpos: usize,
    /// v1 bytes received, for the connection to decode.
    plain: Vec<u8>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("tls", &self.tls.is_some())
            .field("ws", &self.ws)
            .finish()
    }
}

impl Link {
    /// Takes bytes read from the socket (changed in place); the v1 bytes they carried are in
    /// [`Link::plain`] until the next call. Answers the transport owes (TLS records, pongs,
    /// a close) are queued for [`Link::write`].
    pub(crate) fn receive(&mut self, data: &mut [u8]) -> Result<(), Cause> {
        self.plain.clear();
        let mut lower = Vec::new();
        let bytes: &mut [u8] = match self.tls.as_mut() {
            Some(tls) => {
                let mut rest: &[u8] = data;
                while !rest.is_empty() {
                    tls.read_tls(&mut rest).map_err(|_| Cause::TlsError)?;
                    let state = tls.process_new_packets().map_err(|e| {
                        tracing::debug!(error = %e, "TLS failed");
                        Cause::TlsError
                    })?;
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let at = lower.len();
                        lower.resize(at + n, 0);
                        tls.reader()
                            .read_exact(&mut lower[at..])
                            .map_err(|_| Cause::TlsError)?;
                    }
                    if state.peer_has_closed() {
                        break;
                    }
                }
                &mut lower
            }
            None => data,
        };
        let Some(ws) = self.ws.as_mut() else {
            self.plain.extend_from_slice(bytes);
            return self.flush_tls();
        };
        let mut owed = Vec::new();
        let fed = ws_receive(ws, bytes, &mut self.plain, &mut owed);
        if !owed.is_empty() {
            self.lower_write(&owed)?;
        }
        fed?;
        self.flush_tls()
    }

    /// The v1 bytes the last [`Link::receive`] yielded.
    pub(crate) fn plain(&self) -> &[u8] {
        &self.plain
    }

    /// Encodes queued v1 frames for the socket; returns how many of `v1` it took (none until
    /// a WebSocket upgrade is answered).
    pub(crate) fn send(&mut self, v1: &[u8]) -> Result<usize, Cause> {
        if v1.is_empty() {
            return Ok(0);
        }
        match self.ws.as_mut() {
            Some(ws) if ws.expected.is_some() => Ok(0),
            Some(ws) => {
                let key = ws.mask.key();
                let mut message = Vec::with_capacity(v1.len() + 14);
                wse::binary_header(&mut message, v1.len(), Some(key));
                let at = message.len();
                message.extend_from_slice(v1);
                ws::apply_mask(&mut message[at..], key, 0);
                self.lower_write(&message)?;
                Ok(v1.len())
            }
            None => {
                self.lower_write(v1)?;
                Ok(v1.len())
            }
        }
    }

    /// Bytes for the layer below WebSocket: TLS plaintext, or the socket.
    fn lower_write(&mut self, bytes: &[u8]) -> Result<(), Cause> {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.writer().write_all(bytes).map_err(|_| Cause::TlsError)?;
                self.flush_tls()
            }
            None => {
                self.wire.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn flush_tls(&mut self) -> Result<(), Cause> {
        if let Some(tls) = self.tls.as_mut() {
            while tls.wants_write() {
                tls.write_tls(&mut self.wire).map_err(|_| Cause::TlsError)?;
            }
        }
        Ok(())
    }

    /// Writes what is queued for the socket until done or it would block.
    pub(crate) fn write(&mut self, socket: &mut impl Write) -> Result<(), Cause> {
        while self.wpos < self.wire.len() {
            match socket.write(&self.wire[self.wpos..]) {
                Ok(0) => return Err(Cause::IoError),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Cause::of_stream_error(&e)),
            }
        }
        if self.wpos == self.wire.len() {
            self.wire = Vec::new();
            self.wpos = 0;
        }
        Ok(())
    }

    /// Bytes queued for the socket.
    pub(crate) fn pending(&self) -> usize {
        self.wire.len() - self.wpos
    }
}

/// The WebSocket side of a read: the 101 first, then frames; binary messages' bytes go to
/// `plain`, answers (pong, close) to `owed`.
fn ws_receive(
    ws: &mut WsClient,
    bytes: &mut [u8],
    plain: &mut Vec<u8>,
    owed: &mut Vec<u8>,
) -> Result<(), Cause> {
    let mut rest;
    let bytes = match ws.expected {
        Some(expected) => {
            ws.partial.extend_from_slice(bytes);
            let head = match expected.read(&ws.partial) {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade refused");
                    return Err(Cause::WsError);
                }
            };
            ws.expected = None;
            rest = ws.partial.split_off(head);
            ws.partial.clear();
            &mut rest[..]
        }
        None => bytes,
    };
    let mut closed = None;
    let mut text = false;
    let fed = ws::feed(
        &Config::client(),
        &mut ws.state,
        &mut ws.partial,
        bytes,
        |event| {
            match event {
                Event::Binary(message) => plain.extend_from_slice(message),
                Event::Ping(payload) => wse::pong(owed, payload, Some(ws_key(payload))),
                Event::Pong(_) => {}
                Event::Text(_) => text = true,
                Event::Close(close) => closed = Some(close.code),
            }
            closed.is_none() && !text
        },
    );
    if let Err(e) = fed {
        tracing::debug!(error = %e, "bad WebSocket frame from the server");
        return Err(Cause::WsError);
    }
    if text {
        return Err(Cause::WsError);
    }
    if let Some(code) = closed {
        let key = ws.mask.key();
        ws.state.close(owed, code, "", Some(key));
        return Err(Cause::Eof);
    }
    Ok(())
}

/// A pong's mask: any key will do (see [`Mask`]).
fn ws_key(payload: &[u8]) -> [u8; 4] {
    let mut key = [0x5a; 4];
    for (i, b) in payload.iter().take(4).enumerate() {
        key[i] ^= b;
    }
    key
}
