//! Fuzz target: arbitrary bytes through the state daemon's login-token verifier
//! (`tether_state::token::Verifier`), with a key set of every kind: the legacy HS256 secret
//! `k` (no kid), an HS256 key with kid `h1`, and the openssl-made ES256 (`openssl-ec`) and
//! RS256 (`openssl-rsa`) public keys of the unit tests. Claims policy: audience `tether`,
//! issuer `iss`, a one-day lifetime, 30 s of leeway, "now" = 1999999940.
//!
//! Input layout: byte 0 picks how the rest is read.
//! - even: the rest is a token exactly as a client sends it;
//! - odd: the rest is a token's claims, which the target signs with the `h1` key (header
//!   `{"alg":"HS256","kid":"h1"}`), so mutations reach the claim checks behind a valid
//!   signature.
//!
//! Invariants checked:
//! - `verify` never panics and is deterministic (the same answer twice);
//! - an accepted token's `sub` is 1 to 128 bytes, it has not expired
//!   (`exp + leeway ≥ now`) and it lives no longer than the policy allows from now
//!   (`exp ≤ now + max_lifetime + 2 × leeway`);
//! - a token the target signed is never refused for its shape, header, key or signature
//!   (only for its claims, or for its length past 4096 bytes).

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tether_state::token::{KeySet, Policy, Signer, TokenError, Verifier, MAX_SUB_LEN};

const NOW: u64 = 2_000_000_000 - 60;
const LEEWAY: u64 = 30;
const MAX_LIFETIME: u64 = 86_400;
/// The `h1` key's secret (32 bytes, as a key set requires).
const H1: &[u8] = b"fuzz-hs256-key-of-32-bytes-long!";

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let openssl = include_bytes!("../../state/src/token/testdata/openssl-jwks.json");
        let mut set: serde_json::Value = serde_json::from_slice(openssl).expect("the test set");
        let h1 = Signer::hs256(H1).with_kid("h1").public_jwk();
        set["keys"].as_array_mut().expect("keys").push(h1);
        let keys = KeySet::hs256(b"k")
            .merge(KeySet::from_jwks(set.to_string().as_bytes()).expect("a valid set"))
            .expect("no clash");
        let policy = Policy {
            leeway_s: LEEWAY,
            max_lifetime_s: MAX_LIFETIME,
            audiences: vec!["tether".into()],
            issuers: vec!["iss".into()],
        };
        Verifier::new(keys, policy)
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let v = verifier();
    let signed_here = mode & 1 == 1;
    let token = if signed_here {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"h1"}"#);
        let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(rest));
        let tag = ring_tag(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag)).into_bytes()
    } else {
        rest.to_vec()
    };
    let result = v.verify(&token, NOW);
    assert_eq!(result, v.verify(&token, NOW), "verify is not deterministic");
    match &result {
        Ok(claims) => {
            assert!((1..=MAX_SUB_LEN).contains(&claims.sub.len()), "{claims:?}");
            assert!(claims.exp + LEEWAY >= NOW, "accepted an expired token: {claims:?}");
            assert!(
                claims.exp <= NOW + MAX_LIFETIME + 2 * LEEWAY,
                "accepted a token living too long: {claims:?}"
            );
        }
        Err(e) if signed_here => assert!(
            !matches!(
                e,
                TokenError::Malformed
                    | TokenError::BadHeader
                    | TokenError::Critical
                    | TokenError::UnknownKey
                    | TokenError::WrongKeyType
                    | TokenError::BadSignature
            ) || (*e == TokenError::TooLong),
            "a token signed with h1 refused for {e:?}"
        ),
        Err(_) => {}
    }
});

/// The HMAC-SHA256 tag the `h1` key puts on `signed`.
fn ring_tag(signed: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, H1);
    ring::hmac::sign(&key, signed).as_ref().to_vec()
}
