//! The client side of a session, sans-IO: how a connection logs in (not at all, anonymously,
//! or with a JWT minted per device), what it sends on a new socket (LOGIN, or RESUME with
//! the resume token of the session it already has), and what LOGIN_OK told it.
//!
//! Device ids are `<--device-prefix>-<--device-offset + connection index>`, so several
//! load generator processes with different offsets never log in as the same device. A token
//! is a JWT (HS256, ES256 or RS256: `tether_state::token::Signer`) with `sub` = the device
//! id, `exp` = now + one day, and the `kid`, `aud` and `iss` the flags name.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use serde::Deserialize;
use tether_state::token::{SignError, Signer};
use thiserror::Error;

/// How long a minted token is valid.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// PING interval when neither `--heartbeat` nor LOGIN_OK names one.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Whether and how connections log in. The JWT key never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// No LOGIN: DATA straight away (echo nodes, gateways without a state daemon).
    None,
    /// LOGIN with an empty token, which gateways without `--state` and echo nodes accept.
    Anonymous,
    /// LOGIN with a JWT this signer mints, one device per connection.
    Jwt(Arc<Signer>),
}

impl Login {
    /// `"none"`, `"anonymous"` or `"jwt"`, as in the JSON summary.
    pub fn name(&self) -> &'static str {
        match self {
            Login::None => "none",
            Login::Anonymous => "anonymous",
            Login::Jwt(_) => "jwt",
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, Login::None)
    }
}

/// The device id of connection `global`.
pub(crate) fn device_id(prefix: &str, offset: u64, global: usize) -> String {
    format!("{prefix}-{}", offset.saturating_add(global as u64))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The session a LOGIN_OK gave a connection, kept for RESUME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    pub id: String,
    /// Empty when the server cannot resume (anonymous sessions).
    pub resume_token: String,
}

/// What a connection sends first on a new socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hello {
    /// Nothing: the connection is ready at once.
    Nothing,
    /// LOGIN with this token.
    Login(Vec<u8>),
    /// RESUME with this resume token.
    Resume(Vec<u8>),
}

/// Claims a minted token carries besides `sub` and `exp`: with `rooms` (`--rooms-per-conn`),
/// the `rooms` claim naming what the device may JOIN itself, and then `aud`/`iss` written
/// here as the signer would (`--jwt-aud`, `--jwt-iss`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenClaims {
    pub aud: Option<String>,
    pub iss: Option<String>,
    /// The entries of the `rooms` claim (`"room-*"`: every room of the run); `None`: no claim.
    pub rooms: Option<Vec<String>>,
}

/// The first frame for device `device` under `login`, resuming `session` when it has a
/// resume token. `now` is the Unix time the token's expiry is counted from. Signing fails
/// only when the system's random source does (ES256, RS256).
#[cfg(test)]
pub(crate) fn hello(
    login: &Login,
    session: Option<&Session>,
    device: &str,
    now: Duration,
) -> Result<Hello, SignError> {
    hello_with(login, session, device, now, &TokenClaims::default())
}

/// [`hello`], minting tokens with `claims`.
pub(crate) fn hello_with(
    login: &Login,
    session: Option<&Session>,
    device: &str,
    now: Duration,
    claims: &TokenClaims,
) -> Result<Hello, SignError> {
    if let Some(session) = session.filter(|s| !s.resume_token.is_empty()) {
        if login.enabled() {
            return Ok(Hello::Resume(session.resume_token.clone().into_bytes()));
        }
    }
    Ok(match login {
        Login::None => Hello::Nothing,
        Login::Anonymous => Hello::Login(Vec::new()),
        Login::Jwt(signer) => {
            let exp = now.saturating_add(TOKEN_LIFETIME).as_secs();
            let token = match &claims.rooms {
                None => signer.sign(device, exp)?,
                Some(rooms) => {
                    let mut body = serde_json::json!({ "sub": device, "exp": exp, "rooms": rooms });
                    for (name, value) in [("aud", &claims.aud), ("iss", &claims.iss)] {
                        if let Some(value) = value {
                            body[name] = serde_json::json!(value);
                        }
                    }
                    signer.sign_claims(&body)?
                }
            };
            Hello::Login(token.into_bytes())
        }
    })
}

/// A LOGIN_OK body: `{"session","resume_token","heartbeat_s"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct LoginOk {
    pub session: String,
    #[serde(default)]
    pub resume_token: String,
    #[serde(default)]
    pub heartbeat_s: Option<u64>,
}

/// A LOGIN_OK whose body is not the JSON the protocol specifies.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("LOGIN_OK body is not {{\"session\",\"resume_token\",\"heartbeat_s\"}}: {0}")]
pub(crate) struct BadLoginOk(pub String);

impl LoginOk {
    pub(crate) fn parse(body: &[u8]) -> Result<LoginOk, BadLoginOk> {
        serde_json::from_slice(body).map_err(|e| BadLoginOk(e.to_string()))
    }

    pub(crate) fn session(&self) -> Session {
        Session {
            id: self.session.clone(),
            resume_token: self.resume_token.clone(),
        }
    }
}

/// The PING interval: `--heartbeat` when given, else the server's `heartbeat_s` (if above
/// 0), else [`DEFAULT_HEARTBEAT`].
pub(crate) fn heartbeat(flag: Option<Duration>, server_s: Option<u64>) -> Duration {
    flag.or_else(|| server_s.filter(|&s| s > 0).map(Duration::from_secs))
        .unwrap_or(DEFAULT_HEARTBEAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt() -> Login {
        Login::Jwt(Arc::new(Signer::hs256(b"k")))
    }

    #[test]
    fn device_ids_are_prefix_and_offset_index() {
        assert_eq!(device_id("loadgen", 0, 7), "loadgen-7");
        assert_eq!(device_id("demo", 1000, 7), "demo-1007");
    }

    #[test]
    fn jwt_logins_carry_a_token_for_the_device_valid_for_a_day() {
        let now = Duration::from_secs(1_700_000_000);
        let Ok(Hello::Login(token)) = hello(&jwt(), None, "dev-1", now) else {
            panic!("expected LOGIN");
        };
        let expected = tether_state::token::sign(b"k", "dev-1", 1_700_000_000 + 86_400);
        assert_eq!(token, expected.into_bytes());
        // ES256 with a kid and an audience: the daemon's verifier takes it.
        let signer = Signer::generate_es256()
            .unwrap()
            .with_kid("k1")
            .with_audience("tether");
        let keys = serde_json::json!({ "keys": [signer.public_jwk()] }).to_string();
        let verifier = tether_state::token::Verifier::new(
            tether_state::token::KeySet::from_jwks(keys.as_bytes()).unwrap(),
            tether_state::token::Policy {
                max_lifetime_s: 86_400,
                audiences: vec!["tether".into()],
                ..Default::default()
            },
        );
        let Ok(Hello::Login(token)) = hello(&Login::Jwt(Arc::new(signer)), None, "dev-2", now)
        else {
            panic!("expected LOGIN");
        };
        let claims = verifier.verify(&token, 1_700_000_000).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.exp),
            ("dev-2", 1_700_000_000 + 86_400)
        );
        assert_eq!(
            hello(&Login::Anonymous, None, "d", now).unwrap(),
            Hello::Login(Vec::new())
        );
        assert_eq!(hello(&Login::None, None, "d", now).unwrap(), Hello::Nothing);
    }

    #[test]
    fn a_rooms_claim_is_minted_with_the_audience() {
        let claims = TokenClaims {
            aud: Some("tether".into()),
            iss: None,
            rooms: Some(vec!["room-*".into()]),
        };
        let now = Duration::from_secs(1_700_000_000);
        let Ok(Hello::Login(token)) = hello_with(&jwt(), None, "dev-1", now, &claims) else {
            panic!("expected LOGIN");
        };
        let text = String::from_utf8(token).unwrap();
        let body = text.split('.').nth(1).unwrap();
        use base64::Engine;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["sub"], "dev-1");
        assert_eq!(v["aud"], "tether");
        assert_eq!(v["rooms"][0], "room-*");
        assert_eq!(v["exp"], 1_700_000_000u64 + 86_400);
    }

    #[test]
    fn a_session_with_a_resume_token_resumes() {
        let now = Duration::ZERO;
        let session = Session {
            id: "00000000000000ab".into(),
            resume_token: "00000000000000ab.ff".into(),
        };
        assert_eq!(
            hello(&jwt(), Some(&session), "d", now).unwrap(),
            Hello::Resume(b"00000000000000ab.ff".to_vec())
        );
        // Anonymous sessions have no resume token: log in again.
        let anon = Session {
            id: "anon-0-1".into(),
            resume_token: String::new(),
        };
        assert_eq!(
            hello(&Login::Anonymous, Some(&anon), "d", now).unwrap(),
            Hello::Login(Vec::new())
        );
        assert_eq!(
            hello(&Login::None, Some(&session), "d", now).unwrap(),
            Hello::Nothing
        );
    }

    #[test]
    fn login_ok_bodies_parse_or_are_refused() {
        let ok =
            LoginOk::parse(br#"{"session":"s1","resume_token":"s1.x","heartbeat_s":10}"#).unwrap();
        assert_eq!(ok.heartbeat_s, Some(10));
        assert_eq!(ok.session().resume_token, "s1.x");
        let anon = LoginOk::parse(br#"{"session":"anon-0-1","resume_token":"","heartbeat_s":30}"#)
            .unwrap();
        assert_eq!(anon.session().resume_token, "");
        assert!(LoginOk::parse(b"{}").is_err());
        assert!(LoginOk::parse(b"\xff").is_err());
        assert!(LoginOk::parse(br#"{"session":"s","heartbeat_s":-1}"#).is_err());
    }

    #[test]
    fn the_heartbeat_flag_wins_then_the_server_then_30s() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat(Some(s(5)), Some(10)), s(5));
        assert_eq!(heartbeat(None, Some(10)), s(10));
        assert_eq!(heartbeat(None, Some(0)), s(30));
        assert_eq!(heartbeat(None, None), s(30));
    }

    #[test]
    fn secrets_are_not_printed() {
        let text = format!("{:?}", Login::Jwt(Arc::new(Signer::hs256(b"hunter2"))));
        assert!(!text.contains("hunter2") && !text.contains("104"), "{text}");
        assert!(text.contains("HS256"), "{text}");
    }
}
