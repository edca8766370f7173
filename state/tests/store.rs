//! The session store driven with frames and a fake clock, no sockets: login, heartbeat
//! deadlines, resume windows, pushes with acknowledgement and retransmit backoff, duplicate
//! logins, gateway re-announcement, rebuilding the same state from its journal records and
//! from a snapshot, and refusing what a journal the daemon did not write can hold (unknown
//! gateways, ids at the end of u64) without a panic; rooms: who may join, where a window
//! goes, membership following a session and surviving the journal.

use std::sync::Arc;

use proptest::prelude::*;
use tether_proto::{encode, Decoder, Frame, Kind, NodeErrorBody, Routed};
use tether_state::config::{Config, DuplicateLogin};
use tether_state::metrics::Metrics;
use tether_state::record::Record;
use tether_state::store::{Now, PushRefused, PushStatus, Rules, Store};
use tether_state::token;

const SECRET: &[u8] = b"store test secret";
const T0_UNIX: u64 = 1_800_000_000_000;
/// The clocks when a rig's store starts.
const START: Now = Now {
    mono_ms: 1_000_000,
    unix_ms: T0_UNIX,
};

fn rules(tweak: impl FnOnce(&mut Config)) -> Rules {
    let mut config = Config {
        heartbeat_s: 1,
        resume_window_s: 2,
        push_retry_base_ms: 100,
        push_retry_cap_ms: 400,
        push_retry_max: 4,
        ..Config::default()
    };
    tweak(&mut config);
    Rules::new(&config, token::KeySet::hs256(SECRET))
}

/// What a gateway received, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    gw: u16,
    kind: Kind,
    id: u64,
    route: u64,
    code: Option<u16>,
    body: Vec<u8>,
}

struct Rig {
    store: Store,
    t: u64,
    journal: Vec<Vec<u8>>,
}

impl Rig {
    fn new(rules: Rules) -> Rig {
        // As the daemon starts: an (empty) replay first.
        Rig::replayed(rules, &[])
    }

    /// A store rebuilt from `journal`, as the daemon starts.
    fn replayed(rules: Rules, journal: &[Vec<u8>]) -> Rig {
        let now = START;
        let mut store = Store::new(rules, Arc::new(Metrics::default()), now);
        for record in journal {
            store.replay(record, now).expect("a record the store takes");
        }
        store.finish_replay(now);
        Rig {
            store,
            t: 0,
            journal: Vec::new(),
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: START.mono_ms + self.t,
            unix_ms: START.unix_ms + self.t,
        }
    }

    /// Moves the clock by `ms`, firing timers on the way every 10 ms, and collects output.
    fn wait(&mut self, ms: u64) -> Vec<Got> {
        let mut got = Vec::new();
        let end = self.t + ms;
        while self.t < end {
            self.t = (self.t + 10).min(end);
            self.store.advance(self.now());
            got.extend(self.output());
        }
        got
    }

    fn frame(&mut self, gw: u16, kind: Kind, id: u64, body: &[u8]) -> Vec<Got> {
        let now = self.now();
        self.store
            .on_frame(gw, &Frame::new(kind, id, body), now)
            .expect("a well-formed frame");
        self.output()
    }

    fn output(&mut self) -> Vec<Got> {
        for record in self.store.records() {
            self.journal.push(record.to_vec());
        }
        self.store.clear_records();
        let mut got = Vec::new();
        self.store.drain_out(|gw, bytes| {
            let decoder = Decoder::new(1 << 20);
            let mut at = 0;
            while let Some((frame, used)) = decoder.decode(&bytes[at..]).unwrap() {
                at += used;
                let (route, code, body) = match frame.kind {
                    Kind::LoginFail | Kind::Kick | Kind::RoomFail => {
                        let e = NodeErrorBody::parse(frame.body).unwrap();
                        (e.route, Some(e.code), e.reason.as_bytes().to_vec())
                    }
                    Kind::HelloOk => (0, None, frame.body.to_vec()),
                    _ => {
                        let r = Routed::parse(frame.body).unwrap();
                        (r.route, None, r.payload.to_vec())
                    }
                };
                got.push(Got {
                    gw,
                    kind: frame.kind,
                    id: frame.id,
                    route,
                    code,
                    body,
                });
            }
        });
        got
    }

    fn hello(&mut self, name: &str) -> u16 {
        let gw = self.store.hello(name);
        let got = self.output();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, Kind::HelloOk);
        let json: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
        assert_eq!(json["heartbeat_s"], 1);
        gw
    }

    fn token(&self, device: &str) -> String {
        token::sign(SECRET, device, T0_UNIX / 1000 + 3600)
    }

    fn login(&mut self, gw: u16, route: u64, device: &str) -> serde_json::Value {
        let token = self.token(device);
        let mut body = route.to_be_bytes().to_vec();
        body.extend_from_slice(token.as_bytes());
        let got = self.frame(gw, Kind::StateLogin, 77, &body);
        let ok = got
            .iter()
            .find(|g| g.kind == Kind::StateLoginOk)
            .unwrap_or_else(|| panic!("no LOGIN_OK in {got:?}"));
        assert_eq!((ok.gw, ok.id, ok.route), (gw, 77, route));
        serde_json::from_slice(&ok.body).unwrap()
    }

    fn heartbeat(&mut self, gw: u16, routes: &[u64]) {
        let mut out = Vec::new();
        encode::routes(&mut out, Kind::Heartbeat, routes);
        let got = self.frame(gw, Kind::Heartbeat, 0, &out[14..]);
        assert!(got.is_empty(), "{got:?}");
    }

    fn routed(&mut self, gw: u16, kind: Kind, id: u64, route: u64, rest: &[u8]) -> Vec<Got> {
        let mut body = route.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        self.frame(gw, kind, id, &body)
    }

    fn view(&self, device: &str) -> Option<serde_json::Value> {
        self.store
            .view(device, self.now())
            .map(|v| serde_json::to_value(v).unwrap())
    }
}

#[test]
fn login_answers_with_a_session_and_a_resume_token() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let ok = rig.login(gw, 5, "phone-1");
    let session = ok["session"].as_str().unwrap();
    assert_eq!(session.len(), 16);
    let resume = ok["resume_token"].as_str().unwrap();
    assert!(resume.starts_with(&format!("{session}.")), "{resume}");
    assert_eq!(resume.len(), 16 + 1 + 32);
    assert_eq!(ok["heartbeat_s"], 1);
    let view = rig.view("phone-1").unwrap();
    assert_eq!(view["state"], "online");
    assert_eq!(view["gateway"], "gw-a");
    assert_eq!(view["route"], 5);
    assert_eq!(view["session"], session);
}

#[test]
fn bad_tokens_get_login_fail_auth_failed() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let now_s = T0_UNIX / 1000;
    let cases = [
        token::sign(b"other secret", "d", now_s + 60),
        token::sign(SECRET, "d", now_s - 3600),
        token::sign_claims(SECRET, &serde_json::json!({ "exp": now_s + 60 })),
        "not a token".to_string(),
    ];
    for (i, t) in cases.iter().enumerate() {
        let got = rig.routed(gw, Kind::StateLogin, i as u64, 9, t.as_bytes());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].kind, got[0].id, got[0].route, got[0].code),
            (Kind::LoginFail, i as u64, 9, Some(5))
        );
    }
    assert!(rig.store.is_empty());
}

#[test]
fn heartbeats_keep_a_session_and_silence_kicks_it_with_timeout() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "alive");
    rig.login(gw, 2, "silent");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(rig.wait(900));
        rig.heartbeat(gw, &[1]);
    }
    // 4.5 s: the silent one was kicked once, at 3 s (+ one 10 ms tick); the other never.
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].kind, got[0].route, got[0].code),
        (Kind::Kick, 2, Some(10))
    );
    assert_eq!(rig.view("alive").unwrap()["state"], "online");
    assert_eq!(rig.view("silent").unwrap()["state"], "detached");
    // The detached one is removed when its 2 s resume window passes.
    rig.wait(1000);
    rig.heartbeat(gw, &[1]);
    rig.wait(1000);
    assert!(rig.view("silent").is_none());
    assert!(rig.view("alive").is_some());
}

#[test]
fn resume_inside_the_window_moves_the_session_and_resends_pushes_in_order() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let ok = rig.login(gw, 1, "d");
    let token = ok["resume_token"].as_str().unwrap().to_string();
    let now = rig.now();
    let (m1, s1) = rig.store.push("d", b"one", None, now).unwrap();
    let (m2, _) = rig.store.push("d", b"two", None, now).unwrap();
    assert_eq!(s1, PushStatus::Delivered);
    let sent = rig.output();
    assert_eq!(
        sent.iter().map(|g| g.id).collect::<Vec<_>>(),
        [m1.unwrap(), m2.unwrap()]
    );
    assert!(rig
        .routed(gw, Kind::Closed, 0, 1, b"client went away")
        .is_empty());
    assert_eq!(rig.view("d").unwrap()["state"], "detached");
    // A push while detached is queued.
    let (m3, s3) = rig.store.push("d", b"three", None, rig.now()).unwrap();
    assert_eq!(s3, PushStatus::Queued);
    assert!(rig.output().is_empty());
    rig.wait(1500);
    let gw_b = rig.hello("gw-b");
    let got = rig.routed(gw_b, Kind::StateResume, 8, 40, token.as_bytes());
    assert_eq!(got[0].kind, Kind::StateLoginOk);
    let again: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(again["session"], ok["session"]);
    let pushes: Vec<(u64, &[u8])> = got[1..]
        .iter()
        .map(|g| {
            assert_eq!((g.kind, g.gw, g.route), (Kind::StatePush, gw_b, 40));
            (g.id, g.body.as_slice())
        })
        .collect();
    assert_eq!(
        pushes,
        [
            (m1.unwrap(), &b"one"[..]),
            (m2.unwrap(), b"two"),
            (m3.unwrap(), b"three")
        ]
    );
    let view = rig.view("d").unwrap();
    assert_eq!(
        (view["state"].as_str(), view["gateway"].as_str()),
        (Some("online"), Some("gw-b"))
    );
}

#[test]
fn resume_after_the_window_or_with_a_wrong_secret_fails() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let ok = rig.login(gw, 1, "d");
    let token = ok["resume_token"].as_str().unwrap().to_string();
    let mut forged = token.clone();
    forged.replace_range(
        token.len() - 1..,
        if token.ends_with('0') { "1" } else { "0" },
    );
    rig.routed(gw, Kind::Closed, 0, 1, b"");
    let got = rig.routed(gw, Kind::StateResume, 3, 2, forged.as_bytes());
    assert_eq!((got[0].kind, got[0].code), (Kind::LoginFail, Some(5)));
    rig.wait(2100);
    let got = rig.routed(gw, Kind::StateResume, 4, 2, token.as_bytes());
    assert_eq!(
        (got[0].kind, got[0].id, got[0].code),
        (Kind::LoginFail, 4, Some(5))
    );
    assert!(rig.view("d").is_none());
}

#[test]
fn an_ack_stops_retransmits_and_silence_backs_off_then_waits() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "acker");
    rig.login(gw, 2, "mute");
    let now = rig.now();
    let (acked, _) = rig.store.push("acker", b"a", None, now).unwrap();
    let (ignored, _) = rig.store.push("mute", b"m", None, now).unwrap();
    rig.output();
    assert!(rig
        .routed(gw, Kind::StateAck, acked.unwrap(), 1, b"")
        .is_empty());
    assert_eq!(rig.view("acker").unwrap()["pending"], 0);
    // Sends of the unacknowledged one: at 0 (above), then +100, +200, +400 (cap), then none.
    let mut times = Vec::new();
    for _ in 0..150 {
        let t = rig.t;
        for g in rig.wait(10) {
            assert_eq!(
                (g.kind, g.id, g.route),
                (Kind::StatePush, ignored.unwrap(), 2)
            );
            times.push(t + 10);
        }
        rig.heartbeat(gw, &[1, 2]);
    }
    assert_eq!(times.len(), 3, "{times:?}");
    let gaps: Vec<u64> = std::iter::once(times[0])
        .chain(times.windows(2).map(|w| w[1] - w[0]))
        .collect();
    for (gap, want) in gaps.iter().zip([100, 200, 400]) {
        assert!((want..=want + 20).contains(gap), "gaps {gaps:?}");
    }
    assert_eq!(rig.view("mute").unwrap()["pending"], 1);
}

#[test]
fn a_full_queue_refuses_and_an_unknown_device_is_offline() {
    let mut rig = Rig::new(rules(|c| c.max_pending = 2));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "d");
    let now = rig.now();
    assert!(rig.store.push("d", b"1", None, now).is_ok());
    assert!(rig.store.push("d", b"2", None, now).is_ok());
    assert_eq!(
        rig.store.push("d", b"3", None, now),
        Err(PushRefused::QueueFull { pending: 2 })
    );
    assert_eq!(
        rig.store.push("nobody", b"x", None, now),
        Ok((None, PushStatus::Offline))
    );
}

#[test]
fn pushes_past_their_ttl_are_dropped() {
    let mut rig = Rig::new(rules(|c| c.push_retry_max = 1));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "d");
    let now = rig.now();
    rig.store.push("d", b"short", Some(1), now).unwrap();
    rig.store.push("d", b"long", Some(60), now).unwrap();
    rig.output();
    rig.wait(500);
    rig.heartbeat(gw, &[1]);
    assert_eq!(rig.view("d").unwrap()["pending"], 2);
    rig.wait(600);
    assert_eq!(rig.view("d").unwrap()["pending"], 1);
}

#[test]
fn a_second_login_kicks_the_first_and_takes_its_pushes_or_is_refused() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "d");
    let (msg, _) = rig.store.push("d", b"p", None, rig.now()).unwrap();
    rig.output();
    let token = rig.token("d");
    let got = rig.routed(gw, Kind::StateLogin, 5, 2, token.as_bytes());
    let kinds: Vec<(Kind, u64)> = got.iter().map(|g| (g.kind, g.route)).collect();
    assert_eq!(
        kinds,
        [
            (Kind::Kick, 1),
            (Kind::StateLoginOk, 2),
            (Kind::StatePush, 2)
        ]
    );
    assert_eq!(got[0].code, Some(12));
    assert_eq!(got[2].id, msg.unwrap());
    assert_eq!(rig.store.len(), 1);

    let mut rig = Rig::new(rules(|c| c.duplicate_login = DuplicateLogin::Refuse));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "d");
    let token = rig.token("d");
    let got = rig.routed(gw, Kind::StateLogin, 5, 2, token.as_bytes());
    assert_eq!((got[0].kind, got[0].code), (Kind::LoginFail, Some(5)));
    assert_eq!(rig.view("d").unwrap()["route"], 1);
}

#[test]
fn ending_a_session_kicks_its_connection_and_nothing_can_resume_it() {
    let metrics = Arc::new(Metrics::default());
    let mut rig = Rig::new(rules(|_| {}));
    rig.store = Store::new(rules(|_| {}), metrics.clone(), START);
    rig.store.finish_replay(START);
    let gw = rig.hello("gw-a");
    let token = rig.login(gw, 1, "d")["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    rig.store.push("d", b"p1", None, rig.now()).unwrap();
    rig.store.push("d", b"p2", None, rig.now()).unwrap();
    rig.output();
    let ended = rig.store.end_session("d").expect("a session to end");
    assert_eq!(
        serde_json::to_value(&ended).unwrap(),
        serde_json::json!({
            "session": ended.session,
            "device_id": "d",
            "was_online": true,
            "dropped_pushes": 2,
        })
    );
    let got = rig.output();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].kind, got[0].route, got[0].code),
        (Kind::Kick, 1, Some(12))
    );
    assert_eq!(rig.view("d"), None);
    assert_eq!(rig.store.end_session("d"), None, "nothing left to end");
    assert_eq!(metrics.kicks_operator.get(), 1);
    assert_eq!(metrics.pushes_expired.get(), 2);
    // Its resume token is dead.
    let got = rig.routed(gw, Kind::StateResume, 3, 2, token.as_bytes());
    assert_eq!((got[0].kind, got[0].code), (Kind::LoginFail, Some(5)));
    // The journal agrees: a restart does not bring it back.
    let journal = rig.journal.clone();
    let replayed = Rig::replayed(rules(|_| {}), &journal);
    assert_eq!(replayed.view("d"), None);

    // A detached session is removed without a KICK.
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "e");
    rig.routed(gw, Kind::Closed, 0, 1, b"");
    let ended = rig.store.end_session("e").unwrap();
    assert!(!ended.was_online);
    assert!(rig.output().is_empty());
    assert_eq!(rig.view("e"), None);
}

#[test]
fn after_a_reconnect_unannounced_sessions_are_detached() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "kept");
    rig.login(gw, 2, "gone");
    let (msg, _) = rig.store.push("kept", b"p", None, rig.now()).unwrap();
    rig.output();
    rig.store.link_down(gw);
    assert_eq!(
        rig.store.push("kept", b"q", None, rig.now()).unwrap().1,
        PushStatus::Queued
    );
    assert_eq!(rig.hello("gw-a"), gw);
    let mut body = Vec::new();
    encode::routes(&mut body, Kind::Announce, &[1]);
    let got = rig.frame(gw, Kind::Announce, 0, &body[14..]);
    // Announcing re-sends what the lost link may have swallowed.
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, msg.unwrap());
    rig.login(gw, 3, "fresh");
    assert!(rig.frame(gw, Kind::AnnounceEnd, 0, b"").is_empty());
    assert_eq!(rig.view("kept").unwrap()["state"], "online");
    assert_eq!(rig.view("fresh").unwrap()["state"], "online");
    assert_eq!(rig.view("gone").unwrap()["state"], "detached");
}

#[test]
fn malformed_bodies_and_wrong_kinds_are_link_faults() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let now = rig.now();
    for (kind, body) in [
        (Kind::StateLogin, &[1u8, 2, 3][..]),
        (Kind::Heartbeat, &[0u8; 9][..]),
        (Kind::StatePush, &[0u8; 8][..]),
        (Kind::Hello, &b"again"[..]),
    ] {
        let fault = rig
            .store
            .on_frame(gw, &Frame::new(kind, 4, body), now)
            .unwrap_err();
        assert_eq!(fault.id, 4);
        assert!(matches!(fault.code.as_u16(), 1 | 3), "{fault:?}");
    }
}

/// What `GET /v1/sessions/{device}` shows for devices a, b and c, without the last heartbeat
/// (a replay gives every session a fresh one).
fn views(store: &Store, now: Now) -> Vec<serde_json::Value> {
    ["a", "b", "c"]
        .iter()
        .map(|d| {
            let mut v = serde_json::to_value(store.view(d, now)).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("last_heartbeat_unix_ms");
            }
            v
        })
        .collect()
}

/// The state rebuilt from the journal records, and from a snapshot, equals the original.
#[test]
fn replaying_the_journal_or_a_snapshot_rebuilds_the_same_sessions() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let gw_b = rig.hello("gw-b");
    rig.login(gw, 1, "a");
    let token_b = rig.login(gw_b, 1, "b")["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    rig.login(gw, 2, "c");
    let now = rig.now();
    let (m1, _) = rig.store.push("a", b"a1", None, now).unwrap();
    rig.store.push("a", b"a2", None, now).unwrap();
    rig.store.push("b", b"b1", None, now).unwrap();
    rig.output();
    rig.routed(gw, Kind::StateAck, m1.unwrap(), 1, b"");
    rig.routed(gw_b, Kind::Closed, 0, 1, b"");
    rig.routed(gw, Kind::StateResume, 1, 9, token_b.as_bytes());
    rig.routed(gw, Kind::Closed, 0, 2, b"");
    rig.login(gw, 3, "a"); // takes over a's session and its one pending push

    let expected = views(&rig.store, rig.now());
    assert_eq!(expected[0]["pending"], 1);
    assert_eq!(expected[1]["route"], 9);
    assert_eq!(expected[2]["state"], "detached");

    let mut replayed = Store::new(rules(|_| {}), Arc::new(Metrics::default()), rig.now());
    for record in &rig.journal {
        replayed.replay(record, rig.now()).unwrap();
    }
    replayed.finish_replay(rig.now());
    assert_eq!(views(&replayed, rig.now()), expected);

    let mut snapshot: Vec<Vec<u8>> = Vec::new();
    rig.store.snapshot(rig.now(), |record| {
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        snapshot.push(bytes);
    });
    let mut restored = Store::new(rules(|_| {}), Arc::new(Metrics::default()), rig.now());
    for record in &snapshot {
        restored.replay(record, rig.now()).unwrap();
    }
    restored.finish_replay(rig.now());
    assert_eq!(views(&restored, rig.now()), expected);

    // Ids keep increasing across the restart: a new push gets a fresh message id.
    let (next, _) = restored.push("b", b"new", None, rig.now()).unwrap();
    assert!(next.unwrap() > m1.unwrap() + 2);
}

/// A daemon restarted from an older copy of its journal (a restored backup) never issues a
/// message id it issued after that copy was taken: clients drop ids they have seen.
#[test]
fn ids_issued_after_restoring_an_older_journal_are_new() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let first = rig.login(gw, 1, "a")["session"]
        .as_str()
        .unwrap()
        .to_string();
    let backup = rig.journal.clone();
    let now = rig.now();
    let mut issued = Vec::new();
    for _ in 0..100 {
        let (msg, status) = rig.store.push("a", b"after the backup", None, now).unwrap();
        assert_eq!(status, PushStatus::Delivered);
        issued.push(msg.unwrap());
    }
    rig.output();

    rig.t += 1; // the daemon is down a millisecond, then restored from the backup
    let mut restored = Store::new(rules(|_| {}), Arc::new(Metrics::default()), rig.now());
    for record in &backup {
        restored.replay(record, rig.now()).unwrap();
    }
    restored.finish_replay(rig.now());
    let (msg, _) = restored
        .push("a", b"after the restore", None, rig.now())
        .unwrap();
    let newest = *issued.iter().max().unwrap();
    assert!(
        msg.unwrap() > newest,
        "{msg:?} was issued before (up to {newest})"
    );
    let view = serde_json::to_value(restored.view("a", rig.now())).unwrap();
    assert_eq!(
        view["session"], first,
        "the backed-up session itself is kept"
    );
}

/// A store's whole state as snapshot records, encoded.
fn snapshot_of(store: &Store, now: Now) -> Vec<Vec<u8>> {
    let mut snapshot = Vec::new();
    store.snapshot(now, |record| {
        let mut bytes = Vec::new();
        record.encode(&mut bytes);
        snapshot.push(bytes);
    });
    snapshot
}

/// A detached session and a newer online one on the same gateway route (a gateway that
/// restarted hands out its routes again), the online one in the lower slab slot: the snapshot
/// brings both back as they were, the online one still online.
#[test]
fn a_snapshot_keeps_an_online_session_on_the_route_of_a_detached_one() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 5, "c"); // slot 0, freed below
    rig.login(gw, 1, "a"); // slot 1
    rig.routed(gw, Kind::Closed, 0, 5, b"");
    rig.wait(1000);
    rig.heartbeat(gw, &[1]);
    rig.wait(1100); // c's resume window is over: slot 0 is free
    assert!(rig.view("c").is_none());
    rig.routed(gw, Kind::Closed, 0, 1, b"");
    rig.login(gw, 1, "b"); // slot 0, on a's route
    let expected = views(&rig.store, rig.now());
    assert_eq!(expected[0]["state"], "detached");
    assert_eq!(
        (expected[1]["state"].as_str(), expected[1]["route"].as_u64()),
        (Some("online"), Some(1))
    );

    let snapshot = snapshot_of(&rig.store, rig.now());
    let mut restored = Store::new(rules(|_| {}), Arc::new(Metrics::default()), rig.now());
    for record in &snapshot {
        restored.replay(record, rig.now()).unwrap();
    }
    restored.finish_replay(rig.now());
    assert_eq!(views(&restored, rig.now()), expected);
}

fn encoded(record: Record<'_>) -> Vec<u8> {
    let mut bytes = Vec::new();
    record.encode(&mut bytes);
    bytes
}

/// The journal of gateway 0, "gw-a", through which device `a` logged in as session 5, route 1.
fn one_session() -> Vec<Vec<u8>> {
    vec![
        encoded(Record::Gateway {
            index: 0,
            name: "gw-a",
        }),
        encoded(Record::Login {
            session: 5,
            replaces: 0,
            gateway: 0,
            route: 1,
            login_unix_ms: T0_UNIX,
            secret: [7; 16],
            device: "a",
        }),
    ]
}

fn replayed(journal: &[Vec<u8>], now: Now) -> Store {
    let mut store = Store::new(rules(|_| {}), Arc::new(Metrics::default()), now);
    for record in journal {
        store.replay(record, now).unwrap();
    }
    store
}

/// A journal the daemon did not write (damaged past its checksums, or forged) can name a
/// gateway index no GATEWAY record registered: the record is refused, saying which index, and
/// changes nothing.
#[test]
fn a_record_naming_an_unregistered_gateway_is_refused_and_changes_nothing() {
    let mut store = replayed(&one_session(), START);
    let attach = encoded(Record::Attach {
        session: 5,
        gateway: 7,
        route: 2,
    });
    let login = encoded(Record::Login {
        session: 6,
        replaces: 5,
        gateway: 3,
        route: 1,
        login_unix_ms: T0_UNIX,
        secret: [8; 16],
        device: "a",
    });
    for (record, index) in [(attach, 7), (login, 3)] {
        let refused = store.replay(&record, START).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(&format!("gateway index {index}")),
            "{refused}"
        );
    }
    store.finish_replay(START);
    store.publish();
    let view = &views(&store, START)[0];
    assert_eq!(
        (
            view["session"].as_str(),
            view["gateway"].as_str(),
            view["route"].as_u64(),
            view["state"].as_str()
        ),
        (
            Some("0000000000000005"),
            Some("gw-a"),
            Some(1),
            Some("online")
        )
    );
}

/// Ids come from the journal too. One that leaves no next id (u64::MAX) is refused; counters
/// that run out while the daemon runs refuse the login or push that needs a new id, and
/// never wrap (to ids already handed out) or panic.
#[test]
fn ids_at_the_end_of_u64_are_refused_never_wrapped() {
    let mut store = replayed(&one_session(), START);
    for record in [
        Record::Login {
            session: u64::MAX,
            replaces: 0,
            gateway: 0,
            route: 2,
            login_unix_ms: T0_UNIX,
            secret: [8; 16],
            device: "b",
        },
        Record::Push {
            session: 5,
            msg: u64::MAX,
            expires_unix_ms: T0_UNIX + 60_000,
            payload: b"p",
        },
    ] {
        let refused = store.replay(&encoded(record), START).unwrap_err();
        assert!(
            refused.to_string().contains(&u64::MAX.to_string()),
            "{refused}"
        );
    }
    store.finish_replay(START);
    assert_eq!(store.len(), 1);
    assert_eq!(views(&store, START)[0]["pending"], 0);

    // Counters one below the end: one more login and one more push, then none.
    let mut journal = one_session();
    journal.push(encoded(Record::Counters {
        next_session: u64::MAX - 1,
        next_msg: u64::MAX - 1,
    }));
    let mut rig = Rig::replayed(rules(|_| {}), &journal);
    let gw = rig.hello("gw-a");
    assert_eq!(rig.login(gw, 2, "b")["session"], "fffffffffffffffe");
    let token = rig.token("c");
    let got = rig.routed(gw, Kind::StateLogin, 9, 3, token.as_bytes());
    assert_eq!(
        (got.len(), got[0].kind, got[0].id, got[0].code),
        (1, Kind::LoginFail, 9, Some(13))
    );
    assert!(rig.view("c").is_none());
    let now = rig.now();
    assert_eq!(
        rig.store.push("b", b"last", None, now),
        Ok((Some(u64::MAX - 1), PushStatus::Delivered))
    );
    assert_eq!(
        rig.store.push("b", b"one too many", None, now),
        Err(PushRefused::IdsExhausted)
    );
    assert_eq!(rig.view("b").unwrap()["pending"], 1);
}

/// Times in the journal are wall-clock milliseconds a record can set to anything, and the
/// wall clock itself can read 1970 (no RTC) behind a monotonic clock that has run for hours:
/// deadlines saturate instead of overflowing.
#[test]
fn times_at_the_ends_of_the_clock_never_overflow_a_deadline() {
    let now = Now {
        mono_ms: 5_000_000,
        unix_ms: 1_000,
    };
    let mut journal = one_session();
    journal.extend([
        encoded(Record::Login {
            session: 6,
            replaces: 0,
            gateway: 0,
            route: 2,
            login_unix_ms: u64::MAX,
            secret: [9; 16],
            device: "b",
        }),
        encoded(Record::Detach {
            session: 5,
            at_unix_ms: u64::MAX,
        }),
        encoded(Record::Detach {
            session: 6,
            at_unix_ms: 0,
        }),
        encoded(Record::Push {
            session: 5,
            msg: 9,
            expires_unix_ms: u64::MAX,
            payload: b"kept",
        }),
        encoded(Record::Push {
            session: 6,
            msg: 10,
            expires_unix_ms: 0,
            payload: b"expired",
        }),
    ]);
    let mut store = replayed(&journal, now);
    store.finish_replay(now);
    let a = &views(&store, now)[0];
    assert_eq!(
        (
            a["state"].as_str(),
            a["resume_until_unix_ms"].as_u64(),
            a["pending"].as_u64()
        ),
        // The deadline saturated at the end of the monotonic clock, shown on the wall clock.
        (
            Some("detached"),
            Some(u64::MAX - (now.mono_ms - now.unix_ms)),
            Some(1)
        )
    );
    // b was detached at the epoch, a second before `now`: its 2 s window ends a second on.
    let later = Now {
        mono_ms: now.mono_ms + 2_000,
        unix_ms: now.unix_ms + 2_000,
    };
    store.advance(later);
    store.publish();
    let after = views(&store, later);
    assert_eq!(after[1], serde_json::Value::Null);
    assert_eq!(after[0]["pending"], 1);
    // COUNTERS, GATEWAY, and a's LOGIN, DETACH and PUSH, which replay as they were.
    let snapshot = snapshot_of(&store, later);
    assert_eq!(snapshot.len(), 5);
    let restored = replayed(&snapshot, later);
    assert_eq!(views(&restored, later), after);
}

/// Records of every kind over a few ids, gateways, routes and devices, so that they collide,
/// with ids and times at the ends of their range; and arbitrary bytes.
fn any_record() -> impl Strategy<Value = Vec<u8>> {
    let id = || prop_oneof![0..4u64, Just(u64::MAX - 1), Just(u64::MAX)];
    let time = || prop_oneof![Just(T0_UNIX), Just(0), Just(u64::MAX), any::<u64>()];
    let device = || prop::sample::select(&["a", "b", "c"][..]);
    prop_oneof![
        (id(), id()).prop_map(|(next_session, next_msg)| encoded(Record::Counters {
            next_session,
            next_msg
        })),
        (0..4u16, prop::sample::select(&["gw-a", "gw-b", ""][..]))
            .prop_map(|(index, name)| encoded(Record::Gateway { index, name })),
        (id(), id(), 0..4u16, 0..3u64, time(), device()).prop_map(
            |(session, replaces, gateway, route, login_unix_ms, device)| encoded(Record::Login {
                session,
                replaces,
                gateway,
                route,
                login_unix_ms,
                secret: [1; 16],
                device,
            })
        ),
        (id(), time()).prop_map(|(session, at_unix_ms)| encoded(Record::Detach {
            session,
            at_unix_ms
        })),
        (id(), 0..4u16, 0..3u64).prop_map(|(session, gateway, route)| encoded(Record::Attach {
            session,
            gateway,
            route
        })),
        id().prop_map(|session| encoded(Record::Remove { session })),
        (id(), id(), time()).prop_map(|(session, msg, expires_unix_ms)| encoded(Record::Push {
            session,
            msg,
            expires_unix_ms,
            payload: b"p",
        })),
        (id(), id()).prop_map(|(session, msg)| encoded(Record::Ack { session, msg })),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a journal holds, replay takes or refuses each record without a panic; the
    /// store then runs (a gateway links, timers fire, sessions are viewed); and its snapshot
    /// replays without a single refusal into the same sessions.
    #[test]
    fn any_journal_replays_without_a_panic_and_snapshots_faithfully(
        journal in prop::collection::vec(any_record(), 0..40)
    ) {
        let mut store = Store::new(rules(|_| {}), Arc::new(Metrics::default()), START);
        for record in &journal {
            let _ = store.replay(record, START);
        }
        store.finish_replay(START);
        store.publish();
        let expected = views(&store, START);

        let snapshot = snapshot_of(&store, START);
        let mut restored = Store::new(rules(|_| {}), Arc::new(Metrics::default()), START);
        for record in &snapshot {
            prop_assert_eq!(restored.replay(record, START), Ok(()));
        }
        restored.finish_replay(START);
        prop_assert_eq!(views(&restored, START), expected);

        let later = Now {
            mono_ms: START.mono_ms + 86_400_000,
            unix_ms: START.unix_ms + 86_400_000,
        };
        let gw = store.hello("gw-a");
        let end = Frame::new(Kind::AnnounceEnd, 0, b"");
        prop_assert_eq!(store.on_frame(gw, &end, START), Ok(()));
        store.advance(later);
        store.publish();
        store.drain_out(|_, _| {});
        // A day without a heartbeat: every session was detached (or is gone).
        for view in views(&store, later) {
            prop_assert!(view.is_null() || view["state"] == "detached", "{view}");
        }
    }
}

#[test]
fn a_route_announced_after_its_session_expired_is_kicked_not_kept_as_a_zombie() {
    // Fault: with the link down longer than 3 × heartbeat_s, the daemon detached the
    // session and its KICK went nowhere; back up, the gateway announced the route, the
    // daemon ignored it, and the client carried on with no session (pushes "offline").
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "zombie");
    rig.login(gw, 2, "removed");
    rig.store.link_down(gw);
    let got = rig.wait(3100);
    assert!(got.is_empty(), "the link is down: {got:?}");
    assert_eq!(rig.view("zombie").unwrap()["state"], "detached");
    rig.wait(2100);
    assert!(rig.view("removed").is_none(), "past its resume window");
    assert_eq!(rig.hello("gw-a"), gw);
    let mut body = Vec::new();
    encode::routes(&mut body, Kind::Announce, &[1, 2]);
    let got = rig.frame(gw, Kind::Announce, 0, &body[14..]);
    let kicked: Vec<(Kind, u64, Option<u16>)> =
        got.iter().map(|g| (g.kind, g.route, g.code)).collect();
    assert_eq!(
        kicked,
        [(Kind::Kick, 1, Some(10)), (Kind::Kick, 2, Some(10))],
        "both told: TIMEOUT, so each reconnects and resumes or logs in"
    );
    // A HEARTBEAT naming an unknown route is answered the same way.
    let mut body = Vec::new();
    encode::routes(&mut body, Kind::Heartbeat, &[9]);
    let got = rig.frame(gw, Kind::Heartbeat, 0, &body[14..]);
    assert_eq!(
        got.iter().map(|g| (g.kind, g.route)).collect::<Vec<_>>(),
        [(Kind::Kick, 9)]
    );
}

#[test]
fn a_push_the_gateway_could_not_deliver_stays_queued_and_detaches_the_session() {
    // Fault: a PUSH for a connection no longer logged in was dropped by the gateway while
    // the daemon counted it delivered, and the session stayed "online" there.
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    let ok = rig.login(gw, 1, "d");
    let token = ok["resume_token"].as_str().unwrap().to_string();
    let (msg, status) = rig.store.push("d", b"lost", None, rig.now()).unwrap();
    assert_eq!(status, PushStatus::Delivered);
    rig.output();
    let got = rig.routed(gw, Kind::Undelivered, msg.unwrap(), 1, b"");
    assert!(got.is_empty(), "{got:?}");
    let view = rig.view("d").unwrap();
    assert_eq!(
        (view["state"].as_str(), view["pending"].as_u64()),
        (Some("detached"), Some(1))
    );
    // The next connection gets it.
    let got = rig.routed(gw, Kind::StateResume, 5, 2, token.as_bytes());
    assert_eq!(got[0].kind, Kind::StateLoginOk);
    assert_eq!(
        (got[1].kind, got[1].id, got[1].route),
        (Kind::StatePush, msg.unwrap(), 2)
    );
    assert_eq!(got[1].body, b"lost");
    // UNDELIVERED for a route the daemon does not have online changes nothing.
    assert!(rig.routed(gw, Kind::Undelivered, 99, 7, b"").is_empty());
    assert_eq!(rig.view("d").unwrap()["state"], "online");
}

#[test]
fn pending_push_bytes_are_capped_for_the_whole_daemon() {
    // Fault: pending pushes were capped per session only (1,024 × 64 KiB): one device that
    // never ACKs grew the daemon by 63 MB.
    let mut rig = Rig::new(rules(|c| c.max_pending_bytes = 10));
    let gw = rig.hello("gw-a");
    rig.login(gw, 1, "a");
    rig.login(gw, 2, "b");
    let (first, _) = rig.store.push("a", b"12345678", None, rig.now()).unwrap();
    assert_eq!(
        rig.store.push("b", b"123", None, rig.now()),
        Err(PushRefused::DaemonFull { max_bytes: 10 }),
        "another device's push is refused too: the cap is the daemon's"
    );
    rig.store.push("b", b"12", None, rig.now()).unwrap();
    rig.output();
    // An ACK frees its bytes.
    rig.routed(gw, Kind::StateAck, first.unwrap(), 1, b"");
    rig.store.push("b", b"12345678", None, rig.now()).unwrap();
}

fn login_with_rooms(
    rig: &mut Rig,
    gw: u16,
    route: u64,
    device: &str,
    rooms: serde_json::Value,
) -> serde_json::Value {
    let claims = serde_json::json!({"sub": device, "exp": T0_UNIX / 1000 + 3600, "rooms": rooms});
    let token = token::sign_claims(SECRET, &claims);
    let got = rig.routed(gw, Kind::StateLogin, 5, route, token.as_bytes());
    let ok = got
        .iter()
        .find(|g| g.kind == Kind::StateLoginOk)
        .unwrap_or_else(|| panic!("no LOGIN_OK in {got:?}"));
    serde_json::from_slice(&ok.body).unwrap()
}

fn join(rig: &mut Rig, gw: u16, route: u64, room: &str, after: u64) -> Vec<Got> {
    let mut body = Vec::new();
    tether_proto::room::Join { after, room }.write(&mut body);
    rig.routed(gw, Kind::StateJoin, 9, route, &body)
}

fn room_names(body: &[u8]) -> Vec<String> {
    tether_proto::room::names(body)
        .map(|n| n.unwrap().to_string())
        .collect()
}

#[test]
fn a_client_joins_only_what_its_token_grants_and_each_join_tells_its_gateway() {
    let mut rig = Rig::new(rules(|c| c.max_rooms_per_session = 2));
    let gw = rig.hello("gw-a");
    login_with_rooms(&mut rig, gw, 1, "a", serde_json::json!(["lobby", "chat/*"]));
    rig.login(gw, 2, "b"); // no claim: may join nothing itself

    let got = join(&mut rig, gw, 1, "lobby", 0);
    let kinds: Vec<Kind> = got.iter().map(|g| g.kind).collect();
    assert_eq!(kinds, [Kind::Membership, Kind::StateRoomOk], "{got:?}");
    assert_eq!(room_names(&got[0].body), ["lobby"]);
    let ok: serde_json::Value = serde_json::from_slice(&got[1].body).unwrap();
    assert_eq!(
        (ok["room"].as_str(), ok["member"].as_bool()),
        (Some("lobby"), Some(true))
    );

    // Again: no new membership, still ROOM_OK.
    let got = join(&mut rig, gw, 1, "lobby", 0);
    assert_eq!(
        got.iter().map(|g| g.kind).collect::<Vec<_>>(),
        [Kind::StateRoomOk]
    );
    // Not granted, and past max_rooms_per_session: FORBIDDEN.
    for (route, room) in [(2, "lobby"), (1, "elsewhere")] {
        let got = join(&mut rig, gw, route, room, 0);
        assert_eq!(
            (got[0].kind, got[0].code),
            (Kind::RoomFail, Some(16)),
            "{got:?}"
        );
    }
    join(&mut rig, gw, 1, "chat/1", 0);
    let got = join(&mut rig, gw, 1, "chat/2", 0);
    assert_eq!(got[0].kind, Kind::RoomFail, "max 2 rooms: {got:?}");
    // The application's join needs no grant.
    let now = rig.now();
    assert!(rig.store.join_device("b", "lobby", now).unwrap().member);
    let got = rig.output();
    assert_eq!((got[0].kind, got[0].route), (Kind::Membership, 2));
    let view = rig.store.room_view("lobby").unwrap();
    assert_eq!((view.members, view.online, view.links), (2, 2, 1));
}

#[test]
fn a_window_goes_once_to_each_link_with_members_and_follows_a_resume() {
    let mut rig = Rig::new(rules(|c| c.room_merge_ms = 100));
    let gw_a = rig.hello("gw-a");
    let gw_b = rig.hello("gw-b");
    let token = login_with_rooms(&mut rig, gw_a, 1, "a", serde_json::json!(["*"]))["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    login_with_rooms(&mut rig, gw_a, 2, "b", serde_json::json!(["*"]));
    rig.login(gw_b, 1, "c");
    join(&mut rig, gw_a, 1, "r", 0);
    join(&mut rig, gw_a, 2, "r", 0);

    let now = rig.now();
    let first = rig.store.publish_room("r", b"1", now).unwrap();
    assert_eq!(first.links, 1);
    rig.store.publish_room("r", b"2", now).unwrap();
    assert!(rig.output().is_empty(), "nothing before the window closes");
    let got = rig.wait(100);
    assert_eq!(got.len(), 1, "one frame for the one link: {got:?}");
    let g = &got[0];
    assert_eq!(
        (g.gw, g.kind, g.route, g.id),
        (gw_a, Kind::RoomMessage, 0, first.seq + 1)
    );
    let batch = tether_proto::room::Batch::parse(&g.body).unwrap();
    assert_eq!(
        batch
            .entries()
            .map(|e| e.payload.to_vec())
            .collect::<Vec<_>>(),
        [b"1", b"2"]
    );

    // a resumes on gw-b: its membership goes there, and so does the next window.
    rig.routed(gw_a, Kind::Closed, 0, 1, b"");
    let got = rig.routed(gw_b, Kind::StateResume, 3, 7, token.as_bytes());
    let membership = got
        .iter()
        .find(|g| g.kind == Kind::Membership)
        .expect("MEMBERSHIP");
    assert_eq!((membership.gw, membership.route), (gw_b, 7));
    assert_eq!(room_names(&membership.body), ["r"]);
    let now = rig.now();
    assert_eq!(rig.store.publish_room("r", b"3", now).unwrap().links, 2);
    let got = rig.wait(100);
    let mut gws: Vec<u16> = got.iter().map(|g| g.gw).collect();
    gws.sort();
    assert_eq!(gws, [gw_a, gw_b]);

    // A JOIN with `after` replays what history holds after it, to that route only.
    let got = join(&mut rig, gw_b, 7, "r", first.seq);
    let replay = got
        .iter()
        .find(|g| g.kind == Kind::RoomMessage)
        .expect("a replay");
    assert_eq!(replay.route, 7);
    let batch = tether_proto::room::Batch::parse(&replay.body).unwrap();
    assert_eq!(batch.flags, tether_proto::room::REPLAY);
    assert_eq!(batch.entries().count(), 2);

    // The broadcast merges like a room and goes to every linked gateway.
    let now = rig.now();
    assert_eq!(rig.store.broadcast(b"all", now).links, 2);
    assert_eq!(rig.wait(100).len(), 2);
}

#[test]
fn rooms_and_grants_survive_the_journal_and_a_new_login_takes_them_over() {
    let mut rig = Rig::new(rules(|_| {}));
    let gw = rig.hello("gw-a");
    login_with_rooms(&mut rig, gw, 1, "a", serde_json::json!(["x*"]));
    join(&mut rig, gw, 1, "x1", 0);
    join(&mut rig, gw, 1, "x2", 0);
    rig.routed(gw, Kind::StateLeave, 4, 1, b"x2");
    let now = rig.now();
    rig.store.join_device("a", "y", now).unwrap();
    rig.output();

    let check = |store: &Store| {
        for (room, members) in [("x1", 1), ("y", 1)] {
            assert_eq!(
                store.room_view(room).map(|v| v.members),
                Some(members),
                "{room}"
            );
        }
        assert!(store.room_view("x2").is_none());
    };
    check(&rig.store);
    let replayed = Rig::replayed(rules(|_| {}), &rig.journal);
    check(&replayed.store);
    let snapshot = snapshot_of(&rig.store, rig.now());
    let mut restored = Rig::replayed(rules(|_| {}), &snapshot);
    check(&restored.store);
    // The grants came back too: the restored session may still join x3 itself.
    restored.hello("gw-a");
    let mut ann = Vec::new();
    encode::routes(&mut ann, Kind::Announce, &[1]);
    let got = restored.frame(0, Kind::Announce, 0, &ann[14..]);
    assert!(got.iter().any(|g| g.kind == Kind::Membership), "{got:?}");
    let got = join(&mut restored, 0, 1, "x3", 0);
    assert!(got.iter().any(|g| g.kind == Kind::StateRoomOk), "{got:?}");

    // A second login of the device takes the rooms over (as it takes the pushes).
    let got_ok = login_with_rooms(&mut rig, gw, 2, "a", serde_json::json!([]));
    assert!(got_ok["session"].is_string());
    let view = rig.store.room_view("x1").unwrap();
    assert_eq!((view.members, view.online), (1, 1));
}
