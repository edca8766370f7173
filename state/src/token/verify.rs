//! The [`Verifier`]: a token's bytes and "now" in, its claims or the reason it is refused
//! out. Sans-IO: keys and policy are given to it, nothing is read or fetched.
//!
//! The order is fixed, and nothing from the claims is looked at before the signature
//! verifies: length ([`MAX_TOKEN_LEN`]), three base64url parts, the header
//! ([`super::header`]), the key its `kid` and `alg` select ([`super::keys`]), the signature
//! over `header.claims` with that key, then the claims ([`super::claims`]). With a
//! [`TokenCache`], an ES256 or RS256 token verified before is answered after its header
//! (`super::cache` says why that is the same answer).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::alg::Alg;
use super::cache::{digest_of, TokenCache};
use super::claims::Policy;
use super::header::Header;
use super::keys::KeySet;
use super::{Claims, TokenError, MAX_TOKEN_LEN};

/// Checks login tokens against a key set and a policy.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    policy: Policy,
}

impl Verifier {
    pub fn new(keys: KeySet, policy: Policy) -> Verifier {
        Verifier { keys, policy }
    }

    /// The keys it checks signatures with.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Checks `token` at `now_s` (Unix seconds).
    pub fn verify(&self, token: &[u8], now_s: u64) -> Result<Claims, TokenError> {
        self.verify_with(&mut TokenCache::default(), token, now_s)
    }

    /// [`Verifier::verify`], answering an ES256 or RS256 token verified before from `cache`
    /// (and keeping a newly verified one there). The cache must have been made for this
    /// verifier: a new verifier (new keys or policy) takes a new cache.
    pub fn verify_with(
        &self,
        cache: &mut TokenCache,
        token: &[u8],
        now_s: u64,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split(|b| *b == b'.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = Header::parse(&decode(header)?)?;
        let digest = (header.alg != Alg::Hs256 && cache.is_enabled()).then(|| digest_of(token));
        if let Some(hit) = digest.and_then(|d| cache.get(&d, now_s, self.policy.leeway_s)) {
            return Ok(hit);
        }
        let key = self.keys.find(header.kid.as_deref(), header.alg)?;
        let signed = &token[..token.len() - signature.len() - 1];
        if !key.verifies(signed, &decode(signature)?) {
            return Err(TokenError::BadSignature);
        }
        let verified = self.policy.check(&decode(claims)?, now_s)?;
        if let Some(digest) = digest {
            cache.put(digest, &verified);
        }
        Ok(verified)
    }
}

fn decode(part: &[u8]) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Alg, Signer};
    use serde_json::{json, Value};

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"test secret";

    fn policy() -> Policy {
        Policy {
            leeway_s: 0,
            max_lifetime_s: 86_400,
            audiences: Vec::new(),
            issuers: Vec::new(),
        }
    }

    fn verifier(signers: &[&Signer]) -> Verifier {
        let keys = json!({ "keys": signers.iter().map(|s| s.public_jwk()).collect::<Vec<_>>() });
        Verifier::new(
            KeySet::from_jwks(keys.to_string().as_bytes()).unwrap(),
            policy(),
        )
    }

    fn legacy() -> Verifier {
        Verifier::new(KeySet::hs256(SECRET), policy())
    }

    fn ok(sub: &str, exp: u64) -> Result<Claims, TokenError> {
        Ok(Claims {
            sub: sub.into(),
            exp,
            rooms: None,
        })
    }

    fn rs256() -> Signer {
        Signer::rs256_from_pem(include_bytes!("testdata/rs256.pem")).unwrap()
    }

    fn hs256_with_kid() -> Signer {
        Signer::hs256(&[9u8; 32]).with_kid("h1")
    }

    #[test]
    fn each_algorithm_verifies_its_own_tokens() {
        let es = Signer::generate_es256().unwrap().with_kid("e1");
        let rs = rs256().with_kid("r1");
        let hs = hs256_with_kid();
        let v = verifier(&[&es, &rs, &hs]);
        for signer in [&es, &rs, &hs] {
            let token = signer.sign("device-1", NOW + 60).unwrap();
            assert_eq!(
                v.verify(token.as_bytes(), NOW),
                ok("device-1", NOW + 60),
                "{signer:?}"
            );
        }
    }

    #[test]
    fn the_legacy_secret_still_verifies_kidless_hs256_tokens() {
        // Made with Python's hmac, hashlib and base64 from the RFC 7519 rules: header
        // {"alg":"HS256","typ":"JWT"}, claims {"sub":"d","exp":2000000000}, secret "k".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJkIiwiZXhwIjoyMDAwMDAwMDAwfQ.\
                     unWwgUvICyhkxZyCtOq1q_mQh4UL4LqdAvIDIjjhiq4";
        let v = Verifier::new(
            KeySet::hs256(b"k"),
            Policy {
                max_lifetime_s: u64::MAX,
                ..policy()
            },
        );
        assert_eq!(v.verify(token.as_bytes(), NOW), ok("d", 2_000_000_000));
        assert_eq!(crate::token::sign(b"k", "d", 2_000_000_000), token);
        let t = crate::token::sign(SECRET, "device-1", NOW + 60);
        assert_eq!(legacy().verify(t.as_bytes(), NOW), ok("device-1", NOW + 60));
    }

    #[test]
    fn tokens_openssl_signed_verify() {
        // testdata/make_interop.py: keys and tokens from the openssl command line.
        let keys = KeySet::from_jwks(include_bytes!("testdata/openssl-jwks.json")).unwrap();
        let v = Verifier::new(
            keys,
            Policy {
                max_lifetime_s: 3600,
                ..policy()
            },
        );
        let tokens = include_str!("testdata/openssl-tokens.txt");
        let now = 2_000_000_000 - 60;
        for token in tokens.lines() {
            assert_eq!(
                v.verify(token.as_bytes(), now),
                ok("interop", 2_000_000_000),
                "{token}"
            );
        }
        assert_eq!(tokens.lines().count(), 2);
    }

    #[test]
    fn a_wrong_key_or_a_changed_part_fails_the_signature() {
        let es = Signer::generate_es256().unwrap().with_kid("e1");
        let other = Signer::generate_es256().unwrap().with_kid("e1");
        let v = verifier(&[&es]);
        let forged = other.sign("d", NOW + 60).unwrap();
        assert_eq!(
            v.verify(forged.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        let token = es.sign("d", NOW + 60).unwrap();
        let claims = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": NOW + 60}).to_string());
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[1] = &claims;
        assert_eq!(
            v.verify(parts.join(".").as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        // A DER-encoded or truncated ECDSA signature is not r || s.
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let short = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig[..63]));
        assert_eq!(
            v.verify(short.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
        let hs = legacy();
        let other_secret = crate::token::sign(b"other", "d", NOW + 60);
        assert_eq!(
            hs.verify(other_secret.as_bytes(), NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn no_algorithm_confusion_a_public_key_is_never_an_hmac_secret() {
        let rs = rs256().with_kid("r1");
        let es = Signer::generate_es256().unwrap().with_kid("e1");
        let v = verifier(&[&rs, &es]);
        // The attacker knows the public keys and makes HS256 tokens with them as the secret,
        // naming the public key's kid, then with no kid at all.
        for (signer, kid) in [(&rs, "r1"), (&es, "e1")] {
            let jwk = signer.public_jwk();
            for secret in [jwk.to_string(), jwk["n"].to_string(), jwk["x"].to_string()] {
                let hs = Signer::hs256(secret.as_bytes());
                let claims = json!({"sub": "d", "exp": NOW + 60});
                let named = hs
                    .sign_parts(&json!({"alg": "HS256", "kid": kid}), &claims)
                    .unwrap();
                assert_eq!(
                    v.verify(named.as_bytes(), NOW),
                    Err(TokenError::WrongKeyType)
                );
                let kidless = hs.sign_claims(&claims).unwrap();
                assert_eq!(
                    v.verify(kidless.as_bytes(), NOW),
                    Err(TokenError::UnknownKey)
                );
            }
        }
        // An ES256 token naming the RSA key's kid, and the other way round.
        let es_as_rs = es
            .sign_parts(&json!({"alg": "ES256", "kid": "r1"}), &json!({}))
            .unwrap();
        assert_eq!(
            v.verify(es_as_rs.as_bytes(), NOW),
            Err(TokenError::WrongKeyType)
        );
        let rs_as_es = rs
            .sign_parts(&json!({"alg": "RS256", "kid": "e1"}), &json!({}))
            .unwrap();
        assert_eq!(
            v.verify(rs_as_es.as_bytes(), NOW),
            Err(TokenError::WrongKeyType)
        );
    }

    #[test]
    fn kid_selects_the_key_during_a_rotation() {
        let old = Signer::generate_es256().unwrap().with_kid("2026-01");
        let new = Signer::generate_es256().unwrap().with_kid("2026-02");
        let both = verifier(&[&old, &new]);
        let only_new = verifier(&[&new]);
        let old_token = old.sign("d", NOW + 60).unwrap();
        let new_token = new.sign("d", NOW + 60).unwrap();
        assert_eq!(both.verify(old_token.as_bytes(), NOW), ok("d", NOW + 60));
        assert_eq!(both.verify(new_token.as_bytes(), NOW), ok("d", NOW + 60));
        assert_eq!(
            only_new.verify(old_token.as_bytes(), NOW),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            only_new.verify(new_token.as_bytes(), NOW),
            ok("d", NOW + 60)
        );
        // A kid the set does not have, and no kid where only kid'd keys exist.
        let stray = Signer::generate_es256()
            .unwrap()
            .with_kid("nope")
            .sign("d", NOW + 60);
        assert_eq!(
            both.verify(stray.unwrap().as_bytes(), NOW),
            Err(TokenError::UnknownKey)
        );
        let kidless = Signer::generate_es256()
            .unwrap()
            .sign("d", NOW + 60)
            .unwrap();
        assert_eq!(
            both.verify(kidless.as_bytes(), NOW),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn crit_and_other_headers_are_refused_before_any_key_is_used() {
        let hs = hs256_with_kid();
        let v = verifier(&[&hs]);
        let claims = json!({"sub": "d", "exp": NOW + 60});
        let crit = json!({"alg": "HS256", "kid": "h1", "crit": ["exp"], "exp": 1});
        let token = hs.sign_parts(&crit, &claims).unwrap();
        assert_eq!(v.verify(token.as_bytes(), NOW), Err(TokenError::Critical));
        for alg in ["none", "HS512", "hs256"] {
            let token = hs
                .sign_parts(&json!({"alg": alg, "kid": "h1"}), &claims)
                .unwrap();
            assert_eq!(
                v.verify(token.as_bytes(), NOW),
                Err(TokenError::BadHeader),
                "{alg}"
            );
        }
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let unsigned = format!(
            "{none_header}.{}.",
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        assert_eq!(
            legacy().verify(unsigned.as_bytes(), NOW),
            Err(TokenError::BadHeader)
        );
    }

    #[test]
    fn the_policy_applies_to_every_algorithm() {
        let es = Signer::generate_es256().unwrap().with_kid("e1");
        let keys = KeySet::from_jwks(json!({"keys": [es.public_jwk()]}).to_string().as_bytes());
        let v = Verifier::new(
            keys.unwrap(),
            Policy {
                audiences: vec!["tether".into()],
                issuers: vec!["https://id.example".into()],
                ..policy()
            },
        );
        let good = json!({"sub": "d", "exp": NOW + 60, "aud": ["x", "tether"], "iss": "https://id.example"});
        let with = |field: &str, value: Value| {
            let mut claims = good.clone();
            claims[field] = value;
            es.sign_claims(&claims).unwrap()
        };
        assert_eq!(
            v.verify(es.sign_claims(&good).unwrap().as_bytes(), NOW),
            ok("d", NOW + 60)
        );
        let cases = [
            (with("aud", json!("billing")), TokenError::WrongAudience),
            (
                with("iss", json!("https://evil.example")),
                TokenError::WrongIssuer,
            ),
            (
                with("exp", json!(1_000_000_000_000u64)),
                TokenError::TooLongLived,
            ),
            (with("exp", json!(NOW - 1)), TokenError::Expired),
            (with("sub", json!("")), TokenError::BadSubject),
        ];
        for (token, error) in cases {
            assert_eq!(v.verify(token.as_bytes(), NOW), Err(error));
        }
        let stamped = es.with_audience("tether").with_issuer("https://id.example");
        assert_eq!(
            v.verify(stamped.sign("d", NOW + 60).unwrap().as_bytes(), NOW),
            ok("d", NOW + 60)
        );
    }

    #[test]
    fn shapes_and_lengths_are_refused() {
        let v = legacy();
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.b.c",
            "a..c",
            "..",
            "e30.e30.",
            "e30.e30.e30",
        ] {
            assert!(v.verify(bad.as_bytes(), NOW).is_err(), "{bad}");
        }
        assert_eq!(v.verify(b"a.b.c.d", NOW), Err(TokenError::Malformed));
        assert_eq!(v.verify(b"e30.e30.AA", NOW), Err(TokenError::BadHeader));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(v.verify(long.as_bytes(), NOW), Err(TokenError::TooLong));
        // Not UTF-8.
        assert_eq!(v.verify(b"\xff.\xfe.\xfd", NOW), Err(TokenError::Malformed));
        assert_eq!(Alg::from_name("ES256"), Some(Alg::Es256));
    }

    #[test]
    fn the_cache_answers_a_token_again_until_it_expires_and_only_that_token() {
        let es = Signer::generate_es256().unwrap().with_kid("e1");
        let v = verifier(&[&es]);
        let mut cache = TokenCache::new(16);
        let token = es.sign("d", NOW + 60).unwrap();
        assert_eq!(
            v.verify_with(&mut cache, token.as_bytes(), NOW),
            ok("d", NOW + 60)
        );
        // Another verifier without the key: only the cache can say yes, and it does, which is
        // why a reload makes a new cache along with the new verifier.
        let keyless = Verifier::new(KeySet::default(), policy());
        assert_eq!(
            keyless.verify_with(&mut cache, token.as_bytes(), NOW),
            ok("d", NOW + 60)
        );
        assert_eq!(
            keyless.verify(token.as_bytes(), NOW),
            Err(TokenError::UnknownKey)
        );
        // Expiry still applies to a cached token.
        assert_eq!(
            v.verify_with(&mut cache, token.as_bytes(), NOW + 61),
            Err(TokenError::Expired)
        );
        // A refused token is not cached, nor is a changed one served from the cache.
        let mut forged = token.clone().into_bytes();
        let inner = forged.len() - 10; // inside the signature, all six bits used
        forged[inner] = if forged[inner] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            v.verify_with(&mut cache, &forged, NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            v.verify_with(&mut cache, &forged, NOW),
            Err(TokenError::BadSignature)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = legacy().verify(&bytes, NOW);
        }

        #[test]
        fn arbitrary_text_in_each_part_never_panics(
            header in ".{0,80}", claims in ".{0,80}", sig in "[A-Za-z0-9_-]{0,120}", now in proptest::num::u64::ANY,
        ) {
            let v = legacy();
            let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
            for token in [
                format!("{}.{}.{sig}", enc(&header), enc(&claims)),
                format!("{}.{}.{sig}", enc(r#"{"alg":"ES256","kid":"x"}"#), enc(&claims)),
                format!("{header}.{claims}.{sig}"),
            ] {
                let _ = v.verify(token.as_bytes(), now);
            }
        }

        #[test]
        fn arbitrary_claims_signed_with_the_key_never_panic(
            claims in proptest::collection::vec(proptest::num::u8::ANY, 0..200), now in proptest::num::u64::ANY,
        ) {
            let v = legacy();
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
            let mut token = format!("{header}.{}", URL_SAFE_NO_PAD.encode(&claims));
            let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET), token.as_bytes());
            token = format!("{token}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
            let result = v.verify(token.as_bytes(), now);
            proptest::prop_assert!(!matches!(result, Err(TokenError::BadSignature | TokenError::Malformed)));
        }
    }
}
