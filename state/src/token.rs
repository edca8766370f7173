//! Login tokens: JWT (RFC 7519) in compact form, signed with HMAC-SHA256 (`alg` = `HS256`).
//!
//! The daemon only checks tokens; whoever authenticates users (an account service) mints them
//! with the same secret. [`sign`] is here for tests, benchmarks and that service's reference.
//! Sans-IO: the caller passes "now" in.
//!
//! A token is accepted when its header names `HS256`, its signature verifies (compared in
//! constant time), `sub` is a non-empty string of at most [`MAX_SUB_LEN`] bytes, `exp` is a
//! number with `now ≤ exp + leeway`, and `nbf`, when present, has `now ≥ nbf − leeway`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use thiserror::Error;

/// Longest device id (`sub`) accepted, in bytes.
pub(crate) const MAX_SUB_LEN: usize = 128;
/// Longest token accepted, in bytes.
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The device id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused. The text goes to logs and LOGIN_FAIL reasons; it never holds
/// the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum TokenError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token header is not a JSON object with alg HS256")]
    BadHeader,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claims are not a JSON object")]
    BadClaims,
    #[error("token has no sub, or sub is empty, not a string or longer than {MAX_SUB_LEN} bytes")]
    BadSubject,
    #[error("token has no numeric exp")]
    MissingExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    nbf: Option<serde_json::Value>,
}

/// Checks `token` against `secret` at `now_s` (Unix seconds), allowing `leeway_s` of clock skew.
pub(crate) fn verify(
    token: &str,
    secret: &[u8],
    now_s: u64,
    leeway_s: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = decode(header)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::BadHeader)?;
    if header.alg != "HS256" {
        return Err(TokenError::BadHeader);
    }
    let signature = decode(signature)?;
    let signed_len = header_json_len(token);
    mac(secret, &token.as_bytes()[..signed_len])
        .verify_slice(&signature)
        .map_err(|_| TokenError::BadSignature)?;

    let raw: RawClaims =
        serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::BadClaims)?;
    let sub = match raw.sub {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_LEN => s,
        _ => return Err(TokenError::BadSubject),
    };
    let exp = raw
        .exp
        .as_ref()
        .and_then(seconds)
        .ok_or(TokenError::MissingExpiry)?;
    if now_s > exp.saturating_add(leeway_s) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = raw.nbf.as_ref() {
        let nbf = seconds(nbf).ok_or(TokenError::BadClaims)?;
        if now_s < nbf.saturating_sub(leeway_s) {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(Claims { sub, exp })
}

/// Mints a token for device `sub` expiring at `exp_s` (Unix seconds).
pub fn sign(secret: &[u8], sub: &str, exp_s: u64) -> String {
    let sub = serde_json::Value::from(sub);
    sign_json(secret, &format!(r#"{{"sub":{sub},"exp":{exp_s}}}"#))
}

/// Mints a token with arbitrary claims (tests use it for tokens that must be refused).
pub fn sign_claims(secret: &[u8], claims: &serde_json::Value) -> String {
    sign_json(secret, &claims.to_string())
}

fn sign_json(secret: &[u8], claims: &str) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = mac(secret, token.as_bytes()).finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// Length of `header.claims`, the part the signature covers.
fn header_json_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn mac(secret: &[u8], signed: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(signed);
    mac
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

/// A NumericDate: a non-negative number of seconds (fractions are cut).
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"test secret";
    const NOW: u64 = 1_800_000_000;

    #[test]
    fn a_signed_token_verifies() {
        let token = sign(SECRET, "device-1", NOW + 60);
        assert_eq!(
            verify(&token, SECRET, NOW, 0),
            Ok(Claims {
                sub: "device-1".into(),
                exp: NOW + 60
            })
        );
    }

    #[test]
    fn accepts_a_token_from_another_implementation() {
        // Made with Python's hmac, hashlib and base64 from the RFC 7519 rules: header
        // {"alg":"HS256","typ":"JWT"}, claims {"sub":"d","exp":2000000000}, secret "k".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkIiwiZXhwIjoyMDAwMDAwMDAwfQ.\
                     unWwgUvICyhkxZyCtOq1q_mQh4UL4LqdAvIDIjjhiq4";
        assert_eq!(
            verify(token, b"k", NOW, 0),
            Ok(Claims {
                sub: "d".into(),
                exp: 2_000_000_000
            })
        );
        assert_eq!(sign(b"k", "d", 2_000_000_000), token);
    }

    #[test]
    fn a_wrong_secret_or_a_changed_claim_fails_the_signature() {
        let token = sign(SECRET, "device-1", NOW + 60);
        assert_eq!(
            verify(&token, b"other", NOW, 0),
            Err(TokenError::BadSignature)
        );
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin","exp":9999999999}"#);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &forged_claims;
        assert_eq!(
            verify(&parts.join("."), SECRET, NOW, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let token = sign(SECRET, "d", NOW - 10);
        assert_eq!(verify(&token, SECRET, NOW, 0), Err(TokenError::Expired));
        assert!(verify(&token, SECRET, NOW, 10).is_ok());
        assert!(verify(&sign(SECRET, "d", NOW), SECRET, NOW, 0).is_ok());
    }

    #[test]
    fn nbf_is_honoured_when_present() {
        let token = sign_claims(
            SECRET,
            &json!({"sub": "d", "exp": NOW + 60, "nbf": NOW + 5}),
        );
        assert_eq!(verify(&token, SECRET, NOW, 0), Err(TokenError::NotYetValid));
        assert!(verify(&token, SECRET, NOW, 5).is_ok());
    }

    #[test]
    fn claims_are_required_and_typed() {
        let cases = [
            (json!({"exp": NOW + 60}), TokenError::BadSubject),
            (json!({"sub": "", "exp": NOW + 60}), TokenError::BadSubject),
            (json!({"sub": 7, "exp": NOW + 60}), TokenError::BadSubject),
            (
                json!({"sub": "x".repeat(129), "exp": NOW + 60}),
                TokenError::BadSubject,
            ),
            (json!({"sub": "d"}), TokenError::MissingExpiry),
            (
                json!({"sub": "d", "exp": "tomorrow"}),
                TokenError::MissingExpiry,
            ),
            (json!(["sub", "d"]), TokenError::BadClaims),
        ];
        for (claims, error) in cases {
            assert_eq!(
                verify(&sign_claims(SECRET, &claims), SECRET, NOW, 0),
                Err(error),
                "{claims}"
            );
        }
    }

    #[test]
    fn other_algorithms_and_shapes_are_refused() {
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"sub":"d","exp":9999999999}"#);
        assert_eq!(
            verify(&format!("{none_header}.{claims}."), SECRET, NOW, 0),
            Err(TokenError::BadHeader)
        );
        for bad in ["", "a.b", "a.b.c.d", "!!!.b.c", "a..c"] {
            assert!(verify(bad, SECRET, NOW, 0).is_err(), "{bad}");
        }
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_LEN + 1), SECRET, NOW, 0),
            Err(TokenError::TooLong)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = verify(&text, SECRET, NOW, 0);
        }
    }
}
