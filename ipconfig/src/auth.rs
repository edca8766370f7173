//! Who may report: the check every `POST /v1/report` passes when `report_keys_file` is set,
//! sans-IO (the headers, the body and the time come in; an id or a [`Refusal`] goes out).
//!
//! A report is accepted for gateway `id` when, in this order:
//!
//! 1. it carries the three headers of [`tether_proto::report_auth`], well formed;
//! 2. its signature verifies with one of the keys [`Credentials`] gives `id` (HMAC-SHA256,
//!    compared in constant time);
//! 3. its timestamp is within [`CLOCK_WINDOW_MS`] of this host's clock;
//! 4. its timestamp is later than that of the last report accepted for `id` (so a report
//!    captured on the wire cannot be played again, even within the window);
//! 5. and, checked by the handler once the body is parsed ([`check_body_id`]), the body's
//!    `id` is `id`: a key speaks for its own gateways only.
//!
//! Refusals 1–4 are 401 (no valid credential), 5 is 403 (a valid credential, for another
//! gateway). An unknown id and a wrong signature get the same answer, so probing tells a
//! stranger nothing; the metric's reason tells the operator which it was.
//!
//! The replay table holds the last accepted timestamp of each id seen within the window;
//! older entries are dropped (any report they would catch is refused by 3 anyway), so it
//! stays as small as the set of gateways reporting.

use std::collections::HashMap;

use tether_daemon::config::validate::member_id;
use tether_proto::report_auth::{verifies, ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use thiserror::Error;

use crate::credentials::Credentials;
use crate::metrics::Rejection;

/// How far a report's timestamp may be from this host's clock, either way.
pub(crate) const CLOCK_WINDOW_MS: u64 = 30_000;

/// The signature headers of one request, as received (None: absent or not visible ASCII).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Presented<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Why a report was refused before it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum Refusal {
    #[error("reports must be signed: send {ID_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} (set ipconfig_key_file on the gateway)")]
    Unsigned,
    #[error("header {header}: {problem}")]
    BadHeader {
        header: &'static str,
        problem: &'static str,
    },
    /// No key for the id (answered like [`Refusal::BadSignature`]).
    #[error("the signature does not verify for this gateway id")]
    UnknownId,
    #[error("the signature does not verify for this gateway id")]
    BadSignature,
    #[error("the timestamp is {skew_ms} ms from ipconfig's clock (at most ±{CLOCK_WINDOW_MS}); check the gateway's clock")]
    Expired { skew_ms: i128 },
    #[error(
        "the timestamp is not later than the last report accepted for this gateway (a replay?)"
    )]
    Replayed,
    #[error("a report signed for gateway {signed:?} cannot speak for gateway {body:?}")]
    Forbidden { signed: String, body: String },
}

impl Refusal {
    /// The HTTP status: 401 without a valid credential, 403 with one for another gateway.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Refusal::Forbidden { .. } => 403,
            _ => 401,
        }
    }

    /// The metric's reason.
    pub(crate) fn reason(&self) -> Rejection {
        match self {
            Refusal::Unsigned => Rejection::Unsigned,
            Refusal::BadHeader { .. } => Rejection::BadHeaders,
            Refusal::UnknownId => Rejection::UnknownId,
            Refusal::BadSignature => Rejection::BadSignature,
            Refusal::Expired { .. } => Rejection::Expired,
            Refusal::Replayed => Rejection::Replayed,
            Refusal::Forbidden { .. } => Rejection::Forbidden,
        }
    }
}

/// The credentials, and the last accepted timestamp of each gateway.
#[derive(Debug)]
pub(crate) struct Verifier {
    credentials: Credentials,
    last_accepted: HashMap<String, u64>,
    /// Prune the replay table when it grows past this.
    prune_at: usize,
}

impl Verifier {
    pub(crate) fn new(credentials: Credentials) -> Verifier {
        Verifier {
            credentials,
            last_accepted: HashMap::new(),
            prune_at: 1024,
        }
    }

    /// New credentials (SIGHUP); the replay table is kept.
    pub(crate) fn replace(&mut self, credentials: Credentials) {
        self.credentials = credentials;
    }

    /// Steps 1–4 of the module documentation for a request whose headers are `presented`
    /// and body is `body`, at `now_ms` (Unix ms). Returns the authenticated gateway id.
    pub(crate) fn authenticate(
        &mut self,
        presented: &Presented<'_>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<String, Refusal> {
        let (id, timestamp, signature) = match presented {
            Presented {
                id: None,
                timestamp: None,
                signature: None,
            } => return Err(Refusal::Unsigned),
            Presented {
                id,
                timestamp,
                signature,
            } => (
                id.ok_or(missing(ID_HEADER))?,
                timestamp.ok_or(missing(TIMESTAMP_HEADER))?,
                signature.ok_or(missing(SIGNATURE_HEADER))?,
            ),
        };
        if member_id(id).is_err() {
            return Err(Refusal::BadHeader {
                header: ID_HEADER,
                problem: "not a gateway id (1-128 printable ASCII characters, no spaces)",
            });
        }
        let timestamp = parse_timestamp(timestamp).ok_or(Refusal::BadHeader {
            header: TIMESTAMP_HEADER,
            problem: "not Unix time in milliseconds (decimal digits)",
        })?;
        let keys = self.credentials.keys_for(id);
        if keys.is_empty() {
            return Err(Refusal::UnknownId);
        }
        // Every key is tried (each in constant time): which one matched is not timed.
        let matched = keys.iter().fold(false, |ok, key| {
            verifies(key.expose(), id, timestamp, body, signature) | ok
        });
        if !matched {
            return Err(Refusal::BadSignature);
        }
        let skew_ms = i128::from(timestamp) - i128::from(now_ms);
        if skew_ms.unsigned_abs() > u128::from(CLOCK_WINDOW_MS) {
            return Err(Refusal::Expired { skew_ms });
        }
        if self
            .last_accepted
            .get(id)
            .is_some_and(|&last| timestamp <= last)
        {
            return Err(Refusal::Replayed);
        }
        self.last_accepted.insert(id.to_string(), timestamp);
        if self.last_accepted.len() > self.prune_at {
            let oldest_useful = now_ms.saturating_sub(CLOCK_WINDOW_MS);
            self.last_accepted
                .retain(|_, &mut last| last >= oldest_useful);
            self.prune_at = (self.last_accepted.len() * 2).max(1024);
        }
        Ok(id.to_string())
    }

    /// Gateways in the replay table now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.last_accepted.len()
    }
}

/// Step 5: the body's id is the authenticated one.
pub(crate) fn check_body_id(authenticated: &str, body_id: &str) -> Result<(), Refusal> {
    if authenticated == body_id {
        Ok(())
    } else {
        Err(Refusal::Forbidden {
            signed: authenticated.to_string(),
            body: body_id.to_string(),
        })
    }
}

fn missing(header: &'static str) -> Refusal {
    Refusal::BadHeader {
        header,
        problem: "missing (a signed report carries all three headers)",
    }
}

/// 1 to 20 decimal digits that fit a u64.
fn parse_timestamp(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::report_auth::sign;

    const KEY_1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const KEY_1_NEXT: &str = "1212121212121212121212121212121212121212121212121212121212121212";
    const KEY_2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const KEY_EDGE: &str = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    const NOW: u64 = 1_700_000_000_000;
    const BODY: &[u8] = br#"{"id":"gw-1"}"#;

    fn verifier() -> Verifier {
        let text = format!("gw-1 {KEY_1}\ngw-1 {KEY_1_NEXT}\ngw-2 {KEY_2}\nedge-* {KEY_EDGE}\n");
        Verifier::new(Credentials::parse(&text).unwrap())
    }

    /// The headers of a report signed with `key` for `id` at `ts`.
    fn signed(key: &str, id: &str, ts: u64, body: &[u8]) -> (String, String, String) {
        (
            id.to_string(),
            ts.to_string(),
            sign(key.as_bytes(), id, ts, body),
        )
    }

    fn present(h: &(String, String, String)) -> Presented<'_> {
        Presented {
            id: Some(&h.0),
            timestamp: Some(&h.1),
            signature: Some(&h.2),
        }
    }

    #[test]
    fn a_report_signed_with_any_of_its_ids_keys_passes_once() {
        let mut v = verifier();
        let first = signed(KEY_1, "gw-1", NOW, BODY);
        assert_eq!(v.authenticate(&present(&first), BODY, NOW).unwrap(), "gw-1");
        // The same report again: a replay.
        assert_eq!(
            v.authenticate(&present(&first), BODY, NOW + 5),
            Err(Refusal::Replayed)
        );
        // The next key of the same id, later: accepted (rotation).
        let next = signed(KEY_1_NEXT, "gw-1", NOW + 1, BODY);
        assert_eq!(
            v.authenticate(&present(&next), BODY, NOW + 5).unwrap(),
            "gw-1"
        );
        // An earlier timestamp than the last accepted, however valid: refused.
        let older = signed(KEY_1, "gw-1", NOW - 10, BODY);
        assert_eq!(
            v.authenticate(&present(&older), BODY, NOW + 5),
            Err(Refusal::Replayed)
        );
        // Replays are per id: gw-2 at the same instant is fine.
        let other = signed(KEY_2, "gw-2", NOW, BODY);
        assert_eq!(v.authenticate(&present(&other), BODY, NOW).unwrap(), "gw-2");
    }

    #[test]
    fn prefix_keys_sign_for_matching_ids_only() {
        let mut v = verifier();
        let edge = signed(KEY_EDGE, "edge-9", NOW, BODY);
        assert_eq!(
            v.authenticate(&present(&edge), BODY, NOW).unwrap(),
            "edge-9"
        );
        // The prefix key cannot sign for an id with keys of its own, or outside the prefix.
        for id in ["gw-1", "other"] {
            let h = signed(KEY_EDGE, id, NOW, BODY);
            assert!(v.authenticate(&present(&h), BODY, NOW).is_err(), "{id}");
        }
    }

    /// Table: what arrives → the refusal, its status and metric reason.
    #[test]
    fn every_way_to_fail_is_refused_with_its_reason() {
        let good = signed(KEY_1, "gw-1", NOW, BODY);
        type Case<'a> = (&'a str, Presented<'a>, &'a [u8], u64, Rejection, u16);
        let cases: Vec<Case<'_>> = vec![
            (
                "no headers",
                Presented::default(),
                BODY,
                NOW,
                Rejection::Unsigned,
                401,
            ),
            (
                "no signature",
                Presented {
                    signature: None,
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadHeaders,
                401,
            ),
            (
                "no id",
                Presented {
                    id: None,
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadHeaders,
                401,
            ),
            (
                "bad id",
                Presented {
                    id: Some("gw 1"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadHeaders,
                401,
            ),
            (
                "timestamp in seconds with a sign",
                Presented {
                    timestamp: Some("+1700000000"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadHeaders,
                401,
            ),
            (
                "timestamp too large",
                Presented {
                    timestamp: Some("99999999999999999999"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadHeaders,
                401,
            ),
            (
                "unknown gateway",
                Presented {
                    id: Some("gw-9"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::UnknownId,
                401,
            ),
            (
                "another id's header with my signature",
                Presented {
                    id: Some("gw-2"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadSignature,
                401,
            ),
            (
                "body changed",
                present(&good),
                br#"{"id":"gw-1","draining":true}"#,
                NOW,
                Rejection::BadSignature,
                401,
            ),
            (
                "signature not hex",
                Presented {
                    signature: Some("not-a-signature"),
                    ..present(&good)
                },
                BODY,
                NOW,
                Rejection::BadSignature,
                401,
            ),
            (
                "31 s late",
                present(&good),
                BODY,
                NOW + 30_001,
                Rejection::Expired,
                401,
            ),
            (
                "31 s early",
                present(&good),
                BODY,
                NOW - 30_001,
                Rejection::Expired,
                401,
            ),
        ];
        for (name, presented, body, now, reason, status) in cases {
            let mut v = verifier();
            let refusal = v.authenticate(&presented, body, now).expect_err(name);
            assert_eq!(
                (refusal.reason(), refusal.status()),
                (reason, status),
                "{name}: {refusal}"
            );
            assert_eq!(v.remembered(), 0, "{name}: a refusal is not remembered");
        }
        // The window is inclusive.
        for now in [NOW - 30_000, NOW + 30_000] {
            assert!(verifier().authenticate(&present(&good), BODY, now).is_ok());
        }
        // Unknown id and wrong key read the same to the sender.
        assert_eq!(
            Refusal::UnknownId.to_string(),
            Refusal::BadSignature.to_string()
        );
    }

    #[test]
    fn the_body_must_name_the_signed_gateway() {
        assert_eq!(check_body_id("gw-1", "gw-1"), Ok(()));
        let refusal = check_body_id("gw-2", "gw-1").unwrap_err();
        assert_eq!(
            (refusal.status(), refusal.reason()),
            (403, Rejection::Forbidden)
        );
        assert_eq!(
            refusal.to_string(),
            r#"a report signed for gateway "gw-2" cannot speak for gateway "gw-1""#
        );
    }

    #[test]
    fn the_replay_table_forgets_what_the_window_refuses_anyway() {
        let text = format!("g-* {KEY_EDGE}\n");
        let mut v = Verifier::new(Credentials::parse(&text).unwrap());
        let mut report = |id: String, at: u64| {
            let h = signed(KEY_EDGE, &id, at, BODY);
            v.authenticate(&present(&h), BODY, at).unwrap();
        };
        for i in 0..1025u64 {
            report(format!("g-{i}"), NOW);
        }
        // 1025 > 1024: pruned, but all are within the window; the next prune is at 2050.
        let late = NOW + CLOCK_WINDOW_MS + 1;
        for i in 0..1026u64 {
            report(format!("g-late-{i}"), late);
        }
        assert_eq!(
            v.remembered(),
            1026,
            "the first 1025 went, the later ones stay"
        );
    }

    #[test]
    fn new_credentials_apply_and_the_replay_table_survives() {
        let mut v = verifier();
        let h = signed(KEY_1, "gw-1", NOW, BODY);
        v.authenticate(&present(&h), BODY, NOW).unwrap();
        v.replace(Credentials::parse(&format!("gw-1 {KEY_1_NEXT}\n")).unwrap());
        let old_key = signed(KEY_1, "gw-1", NOW + 1, BODY);
        assert_eq!(
            v.authenticate(&present(&old_key), BODY, NOW + 1),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.authenticate(
                &present(&signed(KEY_1_NEXT, "gw-1", NOW, BODY)),
                BODY,
                NOW + 1
            ),
            Err(Refusal::Replayed)
        );
    }
}
