//! The WebSocket layer of a client connection, on [`tether_proto::ws`]: the upgrade, then
//! binary messages carrying whole v1 frames; pings answered, closes echoed, bad frames failed
//! with their close code. It owns no buffer.
//!
//! Between reads a connection keeps only this struct (the 8-byte [`Assembler`] and whether
//! the upgrade is done). The request head while the upgrade is pending, the start of a frame
//! cut by the end of a read and the fragments of an open message wait in the connection's
//! pooled `ws_in`; answers the layer makes itself (the 101 or a refusal, pongs, closes) in its
//! pooled `ctl_out`, written before the next v1 frames.

use tether_proto::ws::{
    self, encode, Assembler, CloseCode, Config, Event, Handshake, MessageError, ProtocolError,
    ServerHandshake,
};
use tether_proto::{Decoder, Frame, HEADER_LEN};

use crate::metrics::{Metrics, WsUpgrade};

/// The largest binary message the gateway sends: several v1 frames are merged into one
/// message up to this size (a single larger frame goes alone).
const MAX_MESSAGE_OUT: usize = 64 * 1024;

/// What every WebSocket connection of a reactor shares: the upgrade's policy and the
/// receiver's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsPolicy {
    pub handshake: ServerHandshake,
    pub config: Config,
}

impl WsPolicy {
    /// A message may carry one v1 frame of the largest body the gateway accepts (or several
    /// smaller ones, up to the same size).
    pub(crate) fn new(handshake: ServerHandshake, max_body: u32) -> WsPolicy {
        let max_message = (HEADER_LEN as u32).saturating_add(max_body);
        WsPolicy {
            handshake,
            config: Config {
                max_frame: max_message,
                max_message,
                ..Config::server()
            },
        }
    }
}

/// What a read did to a WebSocket connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WsRead {
    /// Go on reading.
    Open,
    /// The v1 side asked to stop (the connection is closing).
    Stopped,
    /// The peer's close came and is answered: close once written.
    PeerClosed,
    /// The upgrade was refused: the HTTP response is queued; close once written.
    Refused,
    /// The peer broke RFC 6455: the close frame with its code is queued.
    Failed(ProtocolError),
    /// A binary message was not a run of whole v1 frames: the caller answers with a v1
    /// ERROR, which closes.
    BadMessage(MessageError),
}

/// One connection's WebSocket state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WsLayer {
    state: Assembler,
    upgraded: bool,
}

impl WsLayer {
    /// Takes bytes from below (the socket, or TLS), changing them in place (unmasking).
    /// Before the upgrade they go to `ws_in` until the request head is whole; after it, each
    /// v1 frame of each binary message goes to `on_frame`, which returns `false` to stop.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &mut self,
        policy: &WsPolicy,
        decoder: &Decoder,
        data: &mut [u8],
        ws_in: &mut Vec<u8>,
        ctl_out: &mut Vec<u8>,
        metrics: &Metrics,
        on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> WsRead {
        if self.upgraded {
            return self.feed(policy, decoder, data, ws_in, ctl_out, metrics, on_frame);
        }
        ws_in.extend_from_slice(data);
        let mut rest = match policy.handshake.read(ws_in) {
            Handshake::Incomplete => return WsRead::Open,
            Handshake::Refused(refusal) => {
                refusal.write_response(ctl_out);
                metrics.ws_upgrade(WsUpgrade::from_status(refusal.status));
                ws_in.clear();
                return WsRead::Refused;
            }
            Handshake::Accepted(accepted) => {
                accepted.write_response(ctl_out);
                metrics.ws_upgrade(WsUpgrade::Accepted);
                ws_in.split_off(accepted.head_len)
            }
        };
        ws_in.clear();
        self.upgraded = true;
        if rest.is_empty() {
            return WsRead::Open;
        }
        self.feed(
            policy, decoder, &mut rest, ws_in, ctl_out, metrics, on_frame,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        policy: &WsPolicy,
        decoder: &Decoder,
        data: &mut [u8],
        ws_in: &mut Vec<u8>,
        ctl_out: &mut Vec<u8>,
        metrics: &Metrics,
        mut on_frame: impl FnMut(Frame<'_>) -> bool,
    ) -> WsRead {
        let mut end = WsRead::Open;
        let mut peer_close = None;
        let fed = ws::feed(&policy.config, &mut self.state, ws_in, data, |event| {
            match event {
                Event::Binary(message) => {
                    let mut stopped = false;
                    let frames = ws::v1_frames(decoder, message, |frame| {
                        stopped = !on_frame(frame);
                        !stopped
                    });
                    match frames {
                        Err(e) => end = WsRead::BadMessage(e),
                        Ok(()) if stopped => end = WsRead::Stopped,
                        Ok(()) => return true,
                    }
                    false
                }
                // Refused from its header by `Config::server()`'s text policy.
                Event::Text(_) => true,
                Event::Ping(payload) => {
                    encode::pong(ctl_out, payload, None);
                    true
                }
                Event::Pong(_) => true,
                Event::Close(close) => {
                    peer_close = Some(close.code);
                    false
                }
            }
        });
        if let Err(e) = fed {
            self.close(ctl_out, e.close_code(), &e.to_string(), metrics);
            return WsRead::Failed(e);
        }
        if let Some(code) = peer_close {
            // Echo the peer's code (none for an empty close).
            if self.state.close(ctl_out, code, "", None) {
                metrics.ws_close(code.unwrap_or(CloseCode::NORMAL));
            }
            return WsRead::PeerClosed;
        }
        end
    }

    /// Whether v1 frames can be sent (the upgrade is done and no close went out).
    pub(crate) fn open(&self) -> bool {
        self.upgraded && !self.state.close_sent()
    }

    /// Appends `v1` (whole v1 frames) as binary messages of at most [`MAX_MESSAGE_OUT`]
    /// bytes, split between frames. Returns how much of `v1` was taken: all of it once
    /// upgraded, none before.
    pub(crate) fn send(&self, v1: &[u8], out: &mut Vec<u8>) -> usize {
        if !self.open() {
            return 0;
        }
        let mut at = 0;
        while at < v1.len() {
            let len = message_len(&v1[at..]);
            encode::binary_header(out, len, None);
            out.extend_from_slice(&v1[at..at + len]);
            at += len;
        }
        v1.len()
    }

    /// Appends this side's close frame, once.
    pub(crate) fn close(
        &mut self,
        out: &mut Vec<u8>,
        code: CloseCode,
        reason: &str,
        metrics: &Metrics,
    ) {
        if self.upgraded && self.state.close(out, Some(code), reason, None) {
            metrics.ws_close(code);
        }
    }
}

/// How many bytes at the front of `v1` make the next message: whole frames, at most
/// [`MAX_MESSAGE_OUT`] unless the first frame alone is bigger (a frame is never split).
fn message_len(v1: &[u8]) -> usize {
    let mut len = 0;
    while len < v1.len() {
        let frame = match v1.get(len..len + 4) {
            Some(field) => {
                4 + u32::from_be_bytes([field[0], field[1], field[2], field[3]]) as usize
            }
            None => v1.len() - len,
        };
        let frame = frame.min(v1.len() - len);
        if len > 0 && len + frame > MAX_MESSAGE_OUT {
            break;
        }
        len += frame;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::{encode as v1, Kind};

    #[test]
    fn frames_are_merged_into_messages_up_to_the_cap_and_never_split() {
        let mut out = Vec::new();
        for id in 0..3 {
            v1::frame(&mut out, Kind::Data, id, &[7; 30_000]);
        }
        let one = 14 + 30_000;
        assert_eq!(message_len(&out), 2 * one);
        assert_eq!(message_len(&out[2 * one..]), one);
        let mut big = Vec::new();
        v1::frame(&mut big, Kind::Data, 9, &[1; 70_000]);
        v1::frame(&mut big, Kind::Ping, 10, &[]);
        assert_eq!(message_len(&big), 14 + 70_000);
        assert_eq!(message_len(&big[14 + 70_000..]), 14);
    }
}
