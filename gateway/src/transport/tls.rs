//! The TLS layer of a client connection, on rustls' unbuffered API: records in, plaintext
//! out; plaintext in, records out. It owns no buffer.
//!
//! `rustls::server::UnbufferedServerConnection` keeps only the connection's own state (keys,
//! sequence numbers, the handshake's progress): the bytes on either side are the caller's.
//! Records are decrypted from the reactor's read buffer where they lie (only the start of a
//! record cut by the end of a read is kept, in the connection's pooled `tls_in`), and
//! records to send are encrypted straight into its pooled `wire_out`. So an idle TLS
//! connection holds this struct and the heap state rustls keeps for its keys, and nothing
//! else (see doc/architecture.md for the bytes measured).

use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{HandshakeKind, ServerConfig};

use crate::metrics::{Metrics, TlsHandshake};

/// Room added to `wire_out` before encoding, beyond what a record needs; grown to what
/// rustls asks for when short.
const ENCODE_ROOM: usize = 4096;
/// Bytes a record adds to its plaintext, at most (header, explicit nonce, tag, content type).
const RECORD_OVERHEAD: usize = 5 + 8 + 16 + 1;
/// The largest plaintext of one record.
const MAX_FRAGMENT: usize = 16 * 1024;

/// What a read did to a TLS connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TlsRead {
    /// Go on: plaintext (if any) was appended, records to send (if any) were queued.
    Open,
    /// The peer sent close_notify: nothing more will come.
    PeerClosed,
    /// The peer broke TLS (or the handshake failed): the alert, if rustls made one, is
    /// queued; close once it is written.
    Failed(String),
}

/// One connection's TLS state.
pub(crate) struct TlsLayer {
    conn: UnbufferedServerConnection,
    /// The handshake is done: application data flows both ways.
    established: bool,
    /// close_notify is queued; nothing more is encrypted.
    closed: bool,
    /// In the reactor's list of deferred handshakes.
    pub(crate) deferred: bool,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("established", &self.established)
            .field("closed", &self.closed)
            .finish()
    }
}

impl TlsLayer {
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            conn: UnbufferedServerConnection::new(config)?,
            established: false,
            closed: false,
            deferred: false,
        })
    }

    /// Whether the handshake is still going on (its reads cost CPU: see the handshake budget).
    pub(crate) fn handshaking(&self) -> bool {
        !self.established
    }

    /// Takes newly read bytes. When `tls_in` holds the start of a record from earlier reads,
    /// `data` is appended to it; otherwise the records are processed in `data` itself and
    /// only an incomplete tail is copied to `tls_in`. Decrypted application data is appended
    /// to `plain`, handshake records and alerts to `wire_out`.
    pub(crate) fn receive(
        &mut self,
        data: &mut [u8],
        tls_in: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        wire_out: &mut Vec<u8>,
        metrics: &Metrics,
    ) -> TlsRead {
        if tls_in.is_empty() {
            let (used, read) = self.process(data, plain, wire_out, metrics);
            tls_in.extend_from_slice(&data[used..]);
            read
        } else {
            tls_in.extend_from_slice(data);
            let (used, read) = self.process(tls_in, plain, wire_out, metrics);
            tls_in.drain(..used);
            read
        }
    }

    /// Runs rustls over `incoming` until it needs more bytes; returns how many bytes of
    /// `incoming` it is done with.
    fn process(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        wire_out: &mut Vec<u8>,
        metrics: &Metrics,
    ) -> (usize, TlsRead) {
        let mut used = 0;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[used..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    return (used, self.fail(e, wire_out, metrics));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plain.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                used += discard;
                                return (used, self.fail(e, wire_out, metrics));
                            }
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    if let Err(e) = encode_into(wire_out, |buf| encode.encode(buf)) {
                        used += discard;
                        return (used, TlsRead::Failed(e));
                    }
                }
                // Queued in `wire_out`: the reactor writes it with everything else.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::BlockedHandshake => {
                    used += discard;
                    return (used, TlsRead::Open);
                }
                ConnectionState::WriteTraffic(_) => {
                    used += discard;
                    if !self.established {
                        self.established = true;
                        metrics.tls(match self.conn.handshake_kind() {
                            Some(HandshakeKind::Resumed) => TlsHandshake::Resumed,
                            _ => TlsHandshake::Full,
                        });
                    }
                    return (used, TlsRead::Open);
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    used += discard;
                    return (used, TlsRead::PeerClosed);
                }
                // Early data is off (`max_early_data_size` is 0), and a future state is not
                // one this gateway knows how to serve.
                _ => {
                    used += discard;
                    return (used, TlsRead::Failed("unexpected TLS state".into()));
                }
            }
            used += discard;
        }
    }

    /// After an error: the alert rustls queued for it, if any, goes to `wire_out`.
    fn fail(&mut self, e: rustls::Error, wire_out: &mut Vec<u8>, metrics: &Metrics) -> TlsRead {
        if !self.established {
            metrics.tls(TlsHandshake::Failed);
        }
        self.closed = true;
        // A failed connection still hands out what it queued (the alert) before the error.
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(wire_out, |buf| encode.encode(buf)).is_err() {
                        break;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => break,
            }
        }
        TlsRead::Failed(e.to_string())
    }

    /// Encrypts `plaintext` into records appended to `wire_out`, with close_notify after it
    /// when `close`. Returns how much of `plaintext` was taken: all of it once the handshake
    /// is done, none before (it waits; or, when closing, it is dropped: a connection that
    /// never finished its handshake cannot be told anything).
    pub(crate) fn send(
        &mut self,
        plaintext: &[u8],
        close: bool,
        tls_in: &mut [u8],
        wire_out: &mut Vec<u8>,
    ) -> usize {
        if self.closed {
            return plaintext.len();
        }
        if !self.established {
            return if close { plaintext.len() } else { 0 };
        }
        loop {
            // `tls_in` holds at most an incomplete record (every whole one was read), so
            // rustls finds nothing to read in it; passing it keeps its view of the buffer.
            let status = self.conn.process_tls_records(tls_in);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    if encode_into(wire_out, |buf| encode.encode(buf)).is_err() {
                        self.closed = true;
                        return plaintext.len();
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let records = plaintext.len().div_ceil(MAX_FRAGMENT).max(1);
                    let room = plaintext.len() + records * RECORD_OVERHEAD;
                    let sealed =
                        encrypt_into(wire_out, room, |buf| traffic.encrypt(plaintext, buf));
                    if close && sealed {
                        encrypt_into(wire_out, 64, |buf| traffic.queue_close_notify(buf));
                    }
                    if !sealed || close {
                        self.closed = true;
                    }
                    return plaintext.len();
                }
                // The peer's close or a read the reactor stopped early (it is closing):
                // nothing more can be sent.
                _ => {
                    self.closed = true;
                    return plaintext.len();
                }
            }
        }
    }
}

/// Runs an `encode` that writes into a slice, growing `wire_out`'s spare room until it fits.
fn encode_into(
    wire_out: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), String> {
    let mut room = ENCODE_ROOM;
    loop {
        let start = wire_out.len();
        wire_out.resize(start + room, 0);
        match encode(&mut wire_out[start..]) {
            Ok(n) => {
                wire_out.truncate(start + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(need)) if need.required_size > room => {
                wire_out.truncate(start);
                room = need.required_size;
            }
            Err(e) => {
                wire_out.truncate(start);
                return Err(e.to_string());
            }
        }
    }
}

/// Like [`encode_into`] for encryption, starting with `room` bytes; returns whether it
/// worked (it fails only when the keys are exhausted).
fn encrypt_into(
    wire_out: &mut Vec<u8>,
    mut room: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> bool {
    loop {
        let start = wire_out.len();
        wire_out.resize(start + room, 0);
        match encrypt(&mut wire_out[start..]) {
            Ok(n) => {
                wire_out.truncate(start + n);
                return true;
            }
            Err(EncryptError::InsufficientSize(need)) if need.required_size > room => {
                wire_out.truncate(start);
                room = need.required_size;
            }
            Err(_) => {
                wire_out.truncate(start);
                return false;
            }
        }
    }
}
