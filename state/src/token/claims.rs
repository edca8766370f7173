//! A token's claims (RFC 7519 §4.1) and the [`Policy`] they are judged by, once the
//! signature has verified.
//!
//! - `sub`: required, a non-empty string of at most [`MAX_SUB_LEN`] bytes (the device id).
//! - `exp`: required NumericDate; refused once `now > exp + leeway`.
//! - `nbf`: optional; refused while `now < nbf − leeway`.
//! - `iat`: optional. When present it must not be later than `now + leeway`, and the
//!   lifetime is `exp − iat`; without it the lifetime is `exp − now`. Either way a lifetime
//!   over `max_lifetime_s + leeway` is refused, so no token is good for longer than
//!   `max_lifetime_s` from now, whatever it claims. (`iat` is not required: tokens minted
//!   before it was checked carry none, and without it the bound still holds from now.)
//! - `aud`: a string or an array of strings. With audiences configured it is required and
//!   one of its values must be one of them; with none configured a token that names an
//!   audience is refused (RFC 7519 §4.1.3: a recipient that does not identify itself with
//!   the audience must reject the token).
//! - `rooms`: optional; an array of room names or prefixes (see [`RoomGrants`]).
//! - `iss`: with issuers configured it is required and must be one of them (exact string
//!   match); with none configured it is not looked at.
//!
//! NumericDates are non-negative numbers of seconds; fractions are cut. A claim given twice
//! makes the claims invalid.

use serde::Deserialize;
use serde_json::Value;

use super::{Claims, RoomGrants, TokenError, MAX_SUB_LEN};

/// What a valid token's claims must satisfy, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Clock skew allowed on `exp`, `nbf`, `iat` and the lifetime, seconds.
    pub leeway_s: u64,
    /// Longest lifetime accepted: `exp − iat`, or `exp − now` without `iat`.
    pub max_lifetime_s: u64,
    /// Accepted `aud` values; empty: tokens must name no audience.
    pub audiences: Vec<String>,
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub issuers: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    aud: Option<Value>,
    iss: Option<Value>,
    rooms: Option<Value>,
}

impl Policy {
    /// Judges the decoded claims JSON at `now_s` (Unix seconds).
    pub(crate) fn check(&self, json: &[u8], now_s: u64) -> Result<Claims, TokenError> {
        let raw: Raw = serde_json::from_slice(json).map_err(|_| TokenError::BadClaims)?;
        let sub = match raw.sub {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_LEN => s,
            _ => return Err(TokenError::BadSubject),
        };
        let exp = raw
            .exp
            .as_ref()
            .and_then(seconds)
            .ok_or(TokenError::MissingExpiry)?;
        if now_s > exp.saturating_add(self.leeway_s) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = raw.nbf.as_ref() {
            let nbf = seconds(nbf).ok_or(TokenError::BadClaims)?;
            if now_s < nbf.saturating_sub(self.leeway_s) {
                return Err(TokenError::NotYetValid);
            }
        }
        let issued = match raw.iat.as_ref() {
            Some(iat) => {
                let iat = seconds(iat).ok_or(TokenError::BadClaims)?;
                if iat > now_s.saturating_add(self.leeway_s) {
                    return Err(TokenError::IssuedInFuture);
                }
                iat
            }
            None => now_s,
        };
        if exp.saturating_sub(issued) > self.max_lifetime_s.saturating_add(self.leeway_s) {
            return Err(TokenError::TooLongLived);
        }
        self.check_audience(raw.aud.as_ref())?;
        if !self.issuers.is_empty() {
            match raw.iss {
                Some(Value::String(iss)) if self.issuers.contains(&iss) => {}
                _ => return Err(TokenError::WrongIssuer),
            }
        }
        let rooms = match raw.rooms.as_ref() {
            None => None,
            Some(v) => Some(RoomGrants::from_claim(v).ok_or(TokenError::BadRooms)?),
        };
        Ok(Claims { sub, exp, rooms })
    }

    fn check_audience(&self, aud: Option<&Value>) -> Result<(), TokenError> {
        let named = |a: &Value| {
            a.as_str()
                .is_some_and(|a| self.audiences.iter().any(|x| x == a))
        };
        let ok = match aud {
            None => self.audiences.is_empty(),
            Some(_) if self.audiences.is_empty() => false,
            Some(Value::Array(list)) => list.iter().all(Value::is_string) && list.iter().any(named),
            Some(one) => named(one),
        };
        ok.then_some(()).ok_or(TokenError::WrongAudience)
    }
}

/// A NumericDate: a non-negative number of seconds (fractions are cut).
fn seconds(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy {
            leeway_s: 0,
            max_lifetime_s: 3600,
            audiences: Vec::new(),
            issuers: Vec::new(),
        }
    }

    fn check(policy: &Policy, claims: Value) -> Result<Claims, TokenError> {
        policy.check(claims.to_string().as_bytes(), NOW)
    }

    fn ok(sub: &str, exp: u64) -> Result<Claims, TokenError> {
        Ok(Claims {
            sub: sub.into(),
            exp,
            rooms: None,
        })
    }

    #[test]
    fn sub_and_exp_are_required_and_typed() {
        let p = policy();
        let cases = [
            (json!({"exp": NOW + 60}), TokenError::BadSubject),
            (json!({"sub": "", "exp": NOW + 60}), TokenError::BadSubject),
            (json!({"sub": 7, "exp": NOW + 60}), TokenError::BadSubject),
            (
                json!({"sub": "x".repeat(MAX_SUB_LEN + 1), "exp": NOW + 60}),
                TokenError::BadSubject,
            ),
            (json!({"sub": "d"}), TokenError::MissingExpiry),
            (
                json!({"sub": "d", "exp": "tomorrow"}),
                TokenError::MissingExpiry,
            ),
            (json!({"sub": "d", "exp": -1}), TokenError::MissingExpiry),
            (json!(["sub", "d"]), TokenError::BadClaims),
        ];
        for (claims, error) in cases {
            assert_eq!(check(&p, claims.clone()), Err(error), "{claims}");
        }
        let dup = format!(r#"{{"sub":"a","sub":"b","exp":{}}}"#, NOW + 60);
        assert_eq!(p.check(dup.as_bytes(), NOW), Err(TokenError::BadClaims));
        let longest = "x".repeat(MAX_SUB_LEN);
        assert_eq!(
            check(&p, json!({"sub": longest, "exp": NOW as f64 + 1.5})),
            ok(&longest, NOW + 1)
        );
    }

    #[test]
    fn expiry_and_nbf_honour_the_leeway() {
        let mut p = policy();
        let expired = json!({"sub": "d", "exp": NOW - 10});
        assert_eq!(check(&p, expired.clone()), Err(TokenError::Expired));
        assert_eq!(check(&p, json!({"sub": "d", "exp": NOW})), ok("d", NOW));
        let early = json!({"sub": "d", "exp": NOW + 60, "nbf": NOW + 5});
        assert_eq!(check(&p, early.clone()), Err(TokenError::NotYetValid));
        let bad_nbf = json!({"sub": "d", "exp": NOW + 60, "nbf": "soon"});
        assert_eq!(check(&p, bad_nbf), Err(TokenError::BadClaims));
        p.leeway_s = 10;
        assert_eq!(check(&p, expired), ok("d", NOW - 10));
        assert_eq!(check(&p, early), ok("d", NOW + 60));
    }

    #[test]
    fn the_lifetime_is_bounded_from_iat_or_else_from_now() {
        let mut p = policy();
        // No iat: exp at most max_lifetime_s after now.
        assert_eq!(
            check(&p, json!({"sub": "d", "exp": NOW + 3600})),
            ok("d", NOW + 3600)
        );
        let far = json!({"sub": "d", "exp": NOW + 3601});
        assert_eq!(check(&p, far.clone()), Err(TokenError::TooLongLived));
        let huge = json!({"sub": "d", "exp": 1_000_000_000_000u64});
        assert_eq!(check(&p, huge), Err(TokenError::TooLongLived));
        // With iat: exp − iat, even when the token expires soon.
        let issued_long_ago = json!({"sub": "d", "iat": NOW - 7000, "exp": NOW + 60});
        assert_eq!(check(&p, issued_long_ago), Err(TokenError::TooLongLived));
        let fits = json!({"sub": "d", "iat": NOW - 3000, "exp": NOW + 600});
        assert_eq!(check(&p, fits), ok("d", NOW + 600));
        // iat in the future is refused beyond the leeway.
        let future = json!({"sub": "d", "iat": NOW + 20, "exp": NOW + 600});
        assert_eq!(check(&p, future.clone()), Err(TokenError::IssuedInFuture));
        let bad_iat = json!({"sub": "d", "iat": "now", "exp": NOW + 600});
        assert_eq!(check(&p, bad_iat), Err(TokenError::BadClaims));
        // The leeway widens both.
        p.leeway_s = 30;
        assert_eq!(check(&p, future), ok("d", NOW + 600));
        assert_eq!(check(&p, far), ok("d", NOW + 3601));
    }

    #[test]
    fn aud_is_a_string_or_an_array_and_must_name_us() {
        let mut p = policy();
        // Nothing configured: a token naming an audience is not for us.
        assert_eq!(check(&p, json!({"sub": "d", "exp": NOW})), ok("d", NOW));
        let aud = |aud: Value| json!({"sub": "d", "exp": NOW, "aud": aud});
        assert_eq!(
            check(&p, aud(json!("tether"))),
            Err(TokenError::WrongAudience)
        );
        p.audiences = vec!["tether".into(), "tether-eu".into()];
        assert_eq!(check(&p, aud(json!("tether"))), ok("d", NOW));
        assert_eq!(check(&p, aud(json!("tether-eu"))), ok("d", NOW));
        assert_eq!(
            check(&p, aud(json!(["billing", "tether-eu"]))),
            ok("d", NOW)
        );
        for wrong in [
            json!("billing"),
            json!("Tether"),
            json!(["billing"]),
            json!([]),
            json!(["tether", 5]),
            json!(5),
            json!(null),
            json!({"tether": true}),
        ] {
            assert_eq!(
                check(&p, aud(wrong.clone())),
                Err(TokenError::WrongAudience),
                "{wrong}"
            );
        }
        // Configured: required.
        assert_eq!(
            check(&p, json!({"sub": "d", "exp": NOW})),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn iss_must_be_a_configured_issuer_when_any_is() {
        let mut p = policy();
        let iss = |iss: Value| json!({"sub": "d", "exp": NOW, "iss": iss});
        assert_eq!(check(&p, iss(json!("anyone"))), ok("d", NOW));
        p.issuers = vec!["https://id.example".into()];
        assert_eq!(check(&p, iss(json!("https://id.example"))), ok("d", NOW));
        for wrong in [
            json!("https://id.example/"),
            json!("evil"),
            json!(["https://id.example"]),
            json!(1),
        ] {
            assert_eq!(
                check(&p, iss(wrong.clone())),
                Err(TokenError::WrongIssuer),
                "{wrong}"
            );
        }
        assert_eq!(
            check(&p, json!({"sub": "d", "exp": NOW})),
            Err(TokenError::WrongIssuer)
        );
    }
}
