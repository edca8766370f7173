//! The layers without sockets: a rustls client and the WebSocket client codec talk to a
//! [`Session`] through byte vectors.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tether_proto::ws::{self, encode as wse, Assembler, ClientHandshake, Config, Event};
use tether_proto::{encode, Decoder, Kind};

use super::*;
use crate::metrics::{Metrics, TlsHandshake, WsClose, WsUpgrade};

/// A certificate for `localhost` (ECDSA P-256), its PEM files, and a client that trusts it.
struct Pki {
    dir: PathBuf,
    client: Arc<ClientConfig>,
}

impl Pki {
    fn new(name: &str, version: &'static rustls::SupportedProtocolVersion) -> Pki {
        let made =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let dir = std::env::temp_dir().join(format!("tether-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("cert");
        std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("key");
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).expect("root");
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Pki {
            dir,
            client: Arc::new(client),
        }
    }

    fn server(&self, resumption: &Resumption) -> Arc<ServerConfig> {
        server_config(
            &self.dir.join("cert.pem"),
            &self.dir.join("key.pem"),
            resumption,
        )
        .expect("server config")
    }

    fn connect(&self) -> ClientConnection {
        ClientConnection::new(
            self.client.clone(),
            ServerName::try_from("localhost").unwrap(),
        )
        .expect("client")
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One reactor's layers, and what it handed to the v1 side.
struct Gateway {
    layers: Layers,
    metrics: Metrics,
    decoder: Decoder,
    partial: Vec<u8>,
}

impl Gateway {
    fn new() -> Gateway {
        let handshake = ws::ServerHandshake {
            origins: vec!["https://app.example".into()],
            ..ws::ServerHandshake::default()
        };
        Gateway {
            layers: Layers::new(WsPolicy::new(handshake, 65_536), 8),
            metrics: Metrics::new(),
            decoder: Decoder::default(),
            partial: Vec::new(),
        }
    }

    fn open(&mut self, transport: Transport) -> Session {
        assert!(self.layers.open(7, transport).expect("open"));
        self.layers.take(7).expect("session")
    }

    /// Bytes from the client in; the v1 frames they held out, as (kind, id, body).
    fn receive(&mut self, s: &mut Session, bytes: &[u8]) -> (Received, Vec<(Kind, u64, Vec<u8>)>) {
        let mut data = bytes.to_vec();
        let mut frames = Vec::new();
        let env = Env {
            ws: &self.layers.ws,
            decoder: &self.decoder,
            metrics: &self.metrics,
        };
        let received = s.receive(
            &mut self.layers.pool,
            &env,
            &mut data,
            &mut self.partial,
            &mut self.layers.plain,
            |f| {
                frames.push((f.kind, f.id, f.body.to_vec()));
                true
            },
        );
        (received, frames)
    }

    /// The v1 frames `v1` out (closing when told); the bytes for the socket.
    fn send(&mut self, s: &mut Session, v1: &[u8], closing: Option<CloseReason>) -> Vec<u8> {
        let taken = s.send(
            &mut self.layers.pool,
            v1,
            closing,
            &mut self.layers.plain,
            &self.metrics,
        );
        assert_eq!(taken, v1.len(), "every frame taken");
        self.wire(s)
    }

    /// What the session has for the socket.
    fn wire(&mut self, s: &mut Session) -> Vec<u8> {
        let mut wire = Vec::new();
        s.write(&mut self.layers.pool, &mut wire).expect("write");
        wire
    }
}

fn v1(kind: Kind, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode::frame(&mut out, kind, id, body);
    out
}

/// Runs the TLS handshake between `client` and `s` to its end.
fn handshake(gw: &mut Gateway, s: &mut Session, client: &mut ClientConnection) {
    for _ in 0..10 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("client write");
        }
        if !to_server.is_empty() {
            let (received, frames) = gw.receive(s, &to_server);
            assert_eq!((received, frames.len()), (Received::More, 0));
        }
        let to_client = gw.wire(s);
        if !to_client.is_empty() {
            client.read_tls(&mut &to_client[..]).expect("client read");
            client.process_new_packets().expect("client process");
        }
        if !client.is_handshaking() && !s.handshaking() {
            return;
        }
    }
    panic!("handshake did not finish");
}

/// The plaintext the client got from `wire`.
fn client_reads(client: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
    client.read_tls(&mut &wire[..]).expect("read_tls");
    client.process_new_packets().expect("process");
    let mut plain = Vec::new();
    let _ = client.reader().read_to_end(&mut plain);
    plain
}

fn client_writes(client: &mut ClientConnection, plain: &[u8]) -> Vec<u8> {
    client.writer().write_all(plain).expect("write");
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("write_tls");
    }
    wire
}

#[test]
fn tls_carries_v1_frames_both_ways_over_1_2_and_1_3() {
    for (name, version) in [
        ("12", &rustls::version::TLS12),
        ("13", &rustls::version::TLS13),
    ] {
        let pki = Pki::new(name, version);
        let mut gw = Gateway::new();
        gw.layers.set_tls(pki.server(&Resumption::new().unwrap()));
        let mut s = gw.open(Transport::Tls);
        assert!(s.handshaking());
        let mut client = pki.connect();
        handshake(&mut gw, &mut s, &mut client);
        assert_eq!(client.protocol_version(), Some(version.version));
        // A v1 frame cut across two records: the first half waits in the v1 partial.
        let mut two = v1(Kind::Data, 1, b"hello");
        two.extend(v1(Kind::Ping, 2, b""));
        let (r, frames) = gw.receive(&mut s, &client_writes(&mut client, &two[..9]));
        assert_eq!((r, frames.len()), (Received::More, 0));
        let (r, frames) = gw.receive(&mut s, &client_writes(&mut client, &two[9..]));
        assert_eq!(r, Received::More);
        assert_eq!(
            frames,
            vec![(Kind::Data, 1, b"hello".to_vec()), (Kind::Ping, 2, vec![])]
        );
        // A record cut across reads waits in `tls_in`.
        let wire = client_writes(&mut client, &v1(Kind::Data, 3, b"x"));
        let (r, frames) = gw.receive(&mut s, &wire[..4]);
        assert_eq!(
            (r, frames.len(), s.has_partial()),
            (Received::More, 0, true)
        );
        let (_, frames) = gw.receive(&mut s, &wire[4..]);
        assert_eq!(frames, vec![(Kind::Data, 3, b"x".to_vec())]);
        // Replies go out as records, and an idle session holds no buffer.
        let reply = v1(Kind::Pong, 2, b"");
        let wire = gw.send(&mut s, &reply, None);
        assert_eq!(client_reads(&mut client, &wire), reply);
        assert!(s.io.is_none(), "an idle TLS session keeps no buffer");
        // Closing: the last frames, then close_notify.
        let goodbye = v1(Kind::Error, 0, b"\x00\x0cbye");
        let wire = gw.send(&mut s, &goodbye, Some(CloseReason::Kicked));
        assert_eq!(client_reads(&mut client, &wire), goodbye);
        assert!(matches!(
            client.reader().read(&mut [0; 8]),
            Ok(0) // close_notify: a clean end of stream
        ));
        assert_eq!(gw.metrics.tls_handshakes.value(TlsHandshake::Full), 1);
    }
}

#[test]
fn tls_sessions_resume_across_a_certificate_reload() {
    for (name, version) in [
        ("r12", &rustls::version::TLS12),
        ("r13", &rustls::version::TLS13),
    ] {
        let pki = Pki::new(name, version);
        let resumption = Resumption::new().unwrap();
        let mut gw = Gateway::new();
        gw.layers.set_tls(pki.server(&resumption));
        for round in 0..2 {
            if round == 1 {
                // A SIGHUP builds a new configuration from the same files and resumption.
                gw.layers.set_tls(pki.server(&resumption));
            }
            let mut s = gw.open(Transport::Tls);
            let mut client = pki.connect();
            handshake(&mut gw, &mut s, &mut client);
            // TLS 1.3 tickets come after the handshake, with the first reply.
            let wire = gw.send(&mut s, &v1(Kind::Pong, 1, b""), None);
            assert_eq!(client_reads(&mut client, &wire), v1(Kind::Pong, 1, b""));
            gw.layers.close(7);
        }
        assert_eq!(
            (
                gw.metrics.tls_handshakes.value(TlsHandshake::Full),
                gw.metrics.tls_handshakes.value(TlsHandshake::Resumed)
            ),
            (1, 1),
            "TLS {name}"
        );
    }
}

#[test]
fn tls_garbage_fails_with_an_alert() {
    let pki = Pki::new("bad", &rustls::version::TLS13);
    let mut gw = Gateway::new();
    gw.layers.set_tls(pki.server(&Resumption::new().unwrap()));
    let mut s = gw.open(Transport::Tls);
    let (r, _) = gw.receive(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r, Received::Close(CloseReason::TlsError));
    let alert = gw.wire(&mut s);
    assert_eq!(alert.first(), Some(&0x15), "a TLS alert record: {alert:?}");
    assert_eq!(gw.metrics.tls_handshakes.value(TlsHandshake::Failed), 1);
    // Nothing more is sent, even when the reactor closes it with a v1 error.
    assert!(gw
        .send(
            &mut s,
            &v1(Kind::Error, 0, b""),
            Some(CloseReason::TlsError)
        )
        .is_empty());
}

#[test]
fn no_certificate_means_no_tls_connection() {
    let mut gw = Gateway::new();
    assert!(gw.layers.open(1, Transport::Tls).is_err());
    assert_eq!(gw.layers.open(1, Transport::Tcp), Ok(false));
    assert_eq!(gw.layers.len(), 0);
}

/// A WebSocket client: the upgrade, then masked frames.
struct WsClient {
    state: Assembler,
    partial: Vec<u8>,
}

const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

impl WsClient {
    fn upgrade(gw: &mut Gateway, s: &mut Session, origin: Option<&str>) -> (WsClient, Vec<u8>) {
        let mut request = Vec::new();
        let expected = ClientHandshake {
            host: "localhost",
            path: "/ws",
            origin,
            protocol: Some("tether.v1"),
        }
        .write_request(&[9; 16], &mut request)
        .expect("request");
        // The head in two reads: nothing until it is whole.
        let (r, _) = gw.receive(s, &request[..20]);
        assert_eq!(r, Received::More);
        assert!(gw.send(s, &[], None).is_empty());
        let (r, _) = gw.receive(s, &request[20..]);
        let response = gw.send(s, &[], None);
        if r == Received::More {
            let head = expected.read(&response).expect("101").expect("whole");
            assert_eq!(head, response.len());
        }
        (
            WsClient {
                state: Assembler::new(),
                partial: Vec::new(),
            },
            response,
        )
    }

    /// Every event in `wire`, as text.
    fn events(&mut self, wire: &[u8]) -> Vec<String> {
        let mut data = wire.to_vec();
        let mut events = Vec::new();
        ws::feed(
            &Config::client(),
            &mut self.state,
            &mut self.partial,
            &mut data,
            |e| {
                events.push(match e {
                    Event::Binary(m) => format!("binary {:?}", m),
                    Event::Ping(p) => format!("ping {p:?}"),
                    Event::Pong(p) => format!("pong {:?}", String::from_utf8_lossy(p)),
                    Event::Close(c) => format!("close {:?}", c.code.map(|c| c.0)),
                    Event::Text(t) => format!("text {t}"),
                });
                true
            },
        )
        .expect("valid frames from the gateway");
        events
    }
}

#[test]
fn websocket_upgrade_then_v1_frames_in_binary_messages() {
    let mut gw = Gateway::new();
    let mut s = gw.open(Transport::Ws);
    let (mut client, _) = WsClient::upgrade(&mut gw, &mut s, None);
    assert_eq!(gw.metrics.ws_upgrades.value(WsUpgrade::Accepted), 1);
    // Two v1 frames in one message; then one message in three fragments with a ping
    // between them.
    let mut two = v1(Kind::Data, 1, b"a");
    two.extend(v1(Kind::Ping, 2, b""));
    let mut wire = Vec::new();
    wse::binary(&mut wire, &two, KEY);
    let frag = v1(Kind::Data, 3, b"fragmented");
    wse::frame(&mut wire, false, ws::Opcode::Binary, &frag[..5], KEY);
    wse::ping(&mut wire, b"hi", KEY);
    wse::frame(&mut wire, false, ws::Opcode::Continuation, &frag[5..9], KEY);
    wse::frame(&mut wire, true, ws::Opcode::Continuation, &frag[9..], KEY);
    // Byte by byte: any chunking gives the same frames.
    let mut frames = Vec::new();
    for byte in &wire {
        let (r, mut got) = gw.receive(&mut s, &[*byte]);
        assert_eq!(r, Received::More);
        frames.append(&mut got);
    }
    assert_eq!(
        frames,
        vec![
            (Kind::Data, 1, b"a".to_vec()),
            (Kind::Ping, 2, vec![]),
            (Kind::Data, 3, b"fragmented".to_vec())
        ]
    );
    // The pong, then the replies merged into one binary message.
    let mut replies = v1(Kind::Pong, 2, b"");
    replies.extend(v1(Kind::Data, 1, b"a"));
    let out = gw.send(&mut s, &replies, None);
    assert_eq!(
        client.events(&out),
        vec!["pong \"hi\"".to_string(), format!("binary {replies:?}")]
    );
    assert!(s.io.is_none(), "an idle WebSocket session keeps no buffer");
    // The client closes: its code is echoed.
    let mut close = Vec::new();
    wse::close(&mut close, Some(ws::CloseCode(4000)), "done", KEY);
    assert_eq!(
        gw.receive(&mut s, &close).0,
        Received::Close(CloseReason::PeerClosed)
    );
    assert_eq!(
        client.events(&gw.send(&mut s, &[], Some(CloseReason::PeerClosed))),
        ["close Some(4000)"]
    );
    assert_eq!(gw.metrics.ws_closes.value(WsClose::Other), 1);
}

#[test]
fn websocket_protocol_errors_close_with_their_code() {
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "unmasked",
            {
                let mut w = Vec::new();
                wse::binary(&mut w, b"x", None);
                w
            },
            1002,
        ),
        ("reserved bits", vec![0xc2, 0x80, 1, 2, 3, 4], 1002),
        ("reserved opcode", vec![0x83, 0x80, 1, 2, 3, 4], 1002),
        (
            "text",
            {
                let mut w = Vec::new();
                wse::frame(&mut w, true, ws::Opcode::Text, b"hi", KEY);
                w
            },
            1003,
        ),
        ("fragmented ping", vec![0x09, 0x80, 1, 2, 3, 4], 1002),
        (
            "continuation first",
            {
                let mut w = Vec::new();
                wse::frame(&mut w, true, ws::Opcode::Continuation, b"x", KEY);
                w
            },
            1002,
        ),
        (
            "too big from the header",
            vec![0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0],
            1009,
        ),
        (
            "close reason not UTF-8",
            {
                let mut w = Vec::new();
                wse::frame(&mut w, true, ws::Opcode::Close, b"\x03\xe8\xff\xfe", KEY);
                w
            },
            1007,
        ),
        (
            "close code 1005",
            {
                let mut w = Vec::new();
                wse::frame(&mut w, true, ws::Opcode::Close, &1005u16.to_be_bytes(), KEY);
                w
            },
            1002,
        ),
    ];
    for (name, wire, code) in cases {
        let mut gw = Gateway::new();
        let mut s = gw.open(Transport::Ws);
        let (mut client, _) = WsClient::upgrade(&mut gw, &mut s, None);
        let (r, frames) = gw.receive(&mut s, &wire);
        assert_eq!(
            (r, frames.len()),
            (Received::Close(CloseReason::WsError), 0),
            "{name}"
        );
        let out = gw.send(&mut s, &v1(Kind::Pong, 9, b""), Some(CloseReason::WsError));
        assert_eq!(
            client.events(&out),
            [format!("close Some({code})")],
            "{name}"
        );
    }
}

#[test]
fn a_message_that_is_not_whole_v1_frames_is_a_v1_error() {
    let mut gw = Gateway::new();
    let mut s = gw.open(Transport::Ws);
    let (mut client, _) = WsClient::upgrade(&mut gw, &mut s, None);
    let mut frame = v1(Kind::Data, 5, b"abc");
    frame.pop();
    let mut wire = Vec::new();
    wse::binary(&mut wire, &frame, KEY);
    let (r, _) = gw.receive(&mut s, &wire);
    assert!(
        matches!(r, Received::BadMessage(MessageError::Truncated { .. })),
        "{r:?}"
    );
    // The reactor answers with ERROR BAD_FRAME and closes: 1008 after it.
    let mut error = Vec::new();
    encode::error(&mut error, 0, tether_proto::ErrorCode::BadFrame, "cut");
    let out = gw.send(&mut s, &error, Some(CloseReason::BadFrame));
    assert_eq!(
        client.events(&out),
        [format!("binary {error:?}"), "close Some(1008)".to_string()]
    );
}

#[test]
fn websocket_upgrades_are_refused_with_an_http_status() {
    let mut gw = Gateway::new();
    let mut s = gw.open(Transport::Ws);
    let (_, response) = WsClient::upgrade(&mut gw, &mut s, Some("https://evil.example"));
    assert!(
        response.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(gw.metrics.ws_upgrades.value(WsUpgrade::Forbidden), 1);
    let mut s = gw.open(Transport::Ws);
    let (_, response) = WsClient::upgrade(&mut gw, &mut s, Some("https://app.example"));
    assert!(response.starts_with(b"HTTP/1.1 101 "));
    let mut s = gw.open(Transport::Ws);
    let (r, _) = gw.receive(&mut s, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r, Received::Close(CloseReason::WsRefused));
    assert!(gw
        .send(&mut s, &[], Some(CloseReason::WsRefused))
        .starts_with(b"HTTP/1.1 426 "));
}

#[test]
fn websocket_over_tls() {
    let pki = Pki::new("wss", &rustls::version::TLS13);
    let mut gw = Gateway::new();
    gw.layers.set_tls(pki.server(&Resumption::new().unwrap()));
    let mut s = gw.open(Transport::Wss);
    let mut client = pki.connect();
    handshake(&mut gw, &mut s, &mut client);
    let mut request = Vec::new();
    let expected = ClientHandshake {
        host: "localhost",
        path: "/",
        origin: None,
        protocol: Some("tether.v1"),
    }
    .write_request(&[3; 16], &mut request)
    .unwrap();
    let mut wire = client_writes(&mut client, &request);
    let mut message = Vec::new();
    wse::binary(&mut message, &v1(Kind::Data, 8, b"over tls"), KEY);
    wire.extend(client_writes(&mut client, &message));
    let (r, frames) = gw.receive(&mut s, &wire);
    assert_eq!(
        (r, frames),
        (Received::More, vec![(Kind::Data, 8, b"over tls".to_vec())])
    );
    let reply = v1(Kind::Data, 8, b"over tls");
    let plain = client_reads(&mut client, &gw.send(&mut s, &reply, None));
    let head = expected.read(&plain).unwrap().unwrap();
    let mut ws_client = WsClient {
        state: Assembler::new(),
        partial: Vec::new(),
    };
    assert_eq!(
        ws_client.events(&plain[head..]),
        [format!("binary {reply:?}")]
    );
    assert!(s.io.is_none());
    // Draining: 1001, then close_notify.
    let plain = client_reads(
        &mut client,
        &gw.send(&mut s, &[], Some(CloseReason::Shutdown)),
    );
    assert_eq!(ws_client.events(&plain), ["close Some(1001)"]);
}

#[test]
fn an_idle_session_is_small() {
    // In the reactor's map: a u32 key and this, per layered connection.
    assert!(
        std::mem::size_of::<Session>() <= 24,
        "{}",
        std::mem::size_of::<Session>()
    );
    assert!(std::mem::size_of::<WsLayer>() <= 12);
}
