//! Minting tokens, for tests, benchmarks (loadgen, `state_load`, the e2e helpers) and as the
//! reference an account service or identity provider can compare its tokens with.
//!
//! A [`Signer`] holds one key — an HS256 secret, or an ES256 or RS256 private key read from
//! a PKCS#8 PEM file (`openssl genpkey` writes those) — and optionally the `kid`, `aud` and
//! `iss` it stamps into every token. [`Signer::public_jwk`] gives the JWK a verifying host
//! needs (for ES256 and RS256, the public key only).

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{json, Value};
use thiserror::Error;

use super::alg::Alg;

/// Why a signer could not be made, or a token not signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignError {
    #[error("not a PEM \"PRIVATE KEY\" (PKCS#8): {0}")]
    NotPem(&'static str),
    #[error("not a PKCS#8 {0} private key: {1}")]
    BadKey(Alg, String),
    #[error("the system's random source failed")]
    Random,
}

enum Material {
    Hmac(hmac::Key, Vec<u8>),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A key that mints tokens, with the `kid`, `aud` and `iss` it puts in each.
pub struct Signer {
    material: Material,
    kid: Option<String>,
    aud: Option<String>,
    iss: Option<String>,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    /// The algorithm and the stamps; never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &format_args!("{}", self.alg()))
            .field("key", &format_args!("<redacted>"))
            .field("kid", &self.kid)
            .field("aud", &self.aud)
            .field("iss", &self.iss)
            .finish()
    }
}

/// Two signers are equal when they mint the same tokens: the same key (the same JWK) and the
/// same stamps. (ES256 signatures are randomised, so the tokens are equal as claims, not as
/// bytes.)
impl PartialEq for Signer {
    fn eq(&self, other: &Signer) -> bool {
        self.public_jwk() == other.public_jwk()
            && (&self.aud, &self.iss) == (&other.aud, &other.iss)
    }
}

impl Eq for Signer {}

impl Signer {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Signer {
        Signer::with(Material::Hmac(
            hmac::Key::new(hmac::HMAC_SHA256, secret),
            secret.to_vec(),
        ))
    }

    /// ES256 with a P-256 private key in a PKCS#8 PEM file
    /// (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn es256_from_pem(pem: &[u8]) -> Result<Signer, SignError> {
        Signer::es256_from_pkcs8(&pkcs8_der(pem)?)
    }

    /// ES256 with a P-256 private key in PKCS#8 DER.
    pub fn es256_from_pkcs8(der: &[u8]) -> Result<Signer, SignError> {
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map(|key| Signer::with(Material::Ecdsa(key)))
        .map_err(|e| SignError::BadKey(Alg::Es256, e.to_string()))
    }

    /// ES256 with a fresh P-256 key (tests).
    pub fn generate_es256() -> Result<Signer, SignError> {
        Signer::es256_from_pem(generate_es256_pem()?.as_bytes())
    }

    /// RS256 with an RSA private key (2048 to 8192 bits) in a PKCS#8 PEM file
    /// (`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`).
    pub fn rs256_from_pem(pem: &[u8]) -> Result<Signer, SignError> {
        RsaKeyPair::from_pkcs8(&pkcs8_der(pem)?)
            .map(|key| Signer::with(Material::Rsa(key)))
            .map_err(|e| SignError::BadKey(Alg::Rs256, e.to_string()))
    }

    /// The `alg` key from a PEM file: ES256 or RS256 (HS256 takes a secret, not a PEM file).
    pub fn from_pem(alg: Alg, pem: &[u8]) -> Result<Signer, SignError> {
        match alg {
            Alg::Es256 => Signer::es256_from_pem(pem),
            Alg::Rs256 => Signer::rs256_from_pem(pem),
            Alg::Hs256 => Err(SignError::NotPem("HS256 takes a secret, not a key file")),
        }
    }

    fn with(material: Material) -> Signer {
        Signer {
            material,
            kid: None,
            aud: None,
            iss: None,
            rng: SystemRandom::new(),
        }
    }

    /// Stamps `kid` into every header.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Signer {
        self.kid = Some(kid.into());
        self
    }

    /// Stamps `aud` into the claims of [`Signer::sign`].
    pub fn with_audience(mut self, aud: impl Into<String>) -> Signer {
        self.aud = Some(aud.into());
        self
    }

    /// Stamps `iss` into the claims of [`Signer::sign`].
    pub fn with_issuer(mut self, iss: impl Into<String>) -> Signer {
        self.iss = Some(iss.into());
        self
    }

    /// Its algorithm.
    pub fn alg(&self) -> Alg {
        match self.material {
            Material::Hmac(..) => Alg::Hs256,
            Material::Ecdsa(_) => Alg::Es256,
            Material::Rsa(_) => Alg::Rs256,
        }
    }

    /// A token for device `sub` expiring at `exp_s` (Unix seconds), with this signer's `aud`
    /// and `iss` when it has them.
    pub fn sign(&self, sub: &str, exp_s: u64) -> Result<String, SignError> {
        self.token(&self.header_json(), &self.claims_json(sub, exp_s))
    }

    /// A token with exactly these claims (tests use it for tokens that must be refused).
    pub fn sign_claims(&self, claims: &Value) -> Result<String, SignError> {
        self.token(&self.header_json(), &claims.to_string())
    }

    /// A token with this header and these claims, signed with this key whatever the header
    /// says (tests use it for forged headers: `crit`, another `alg`).
    pub fn sign_parts(&self, header: &Value, claims: &Value) -> Result<String, SignError> {
        self.token(&header.to_string(), &claims.to_string())
    }

    /// [`Signer::sign`] for an HS256 signer, which cannot fail (for [`super::sign`]).
    pub(super) fn hs256_sign(&self, sub: &str, exp_s: u64) -> String {
        self.hs256_token(&self.claims_json(sub, exp_s))
    }

    /// The HS256 path, which cannot fail (for [`super::sign_claims`]).
    pub(super) fn hs256_token(&self, claims: &str) -> String {
        let mut token = encode_parts(&self.header_json(), claims);
        if let Material::Hmac(key, _) = &self.material {
            let tag = hmac::sign(key, token.as_bytes());
            push_signature(&mut token, tag.as_ref());
        }
        token
    }

    /// `{"alg":…,"typ":"JWT"[,"kid":…]}`, members in that order.
    fn header_json(&self) -> String {
        let alg = self.alg().name();
        match &self.kid {
            Some(kid) => format!(r#"{{"alg":"{alg}","typ":"JWT","kid":{}}}"#, json!(kid)),
            None => format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
        }
    }

    /// `{"sub":…,"exp":…[,"aud":…][,"iss":…]}`, members in that order.
    fn claims_json(&self, sub: &str, exp_s: u64) -> String {
        let mut claims = format!(r#"{{"sub":{},"exp":{exp_s}"#, json!(sub));
        for (name, value) in [("aud", &self.aud), ("iss", &self.iss)] {
            if let Some(value) = value {
                claims.push_str(&format!(r#","{name}":{}"#, json!(value)));
            }
        }
        claims.push('}');
        claims
    }

    fn token(&self, header: &str, claims: &str) -> Result<String, SignError> {
        let mut token = encode_parts(header, claims);
        let signature = match &self.material {
            Material::Hmac(key, _) => hmac::sign(key, token.as_bytes()).as_ref().to_vec(),
            Material::Ecdsa(key) => key
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| SignError::Random)?
                .as_ref()
                .to_vec(),
            Material::Rsa(key) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    token.as_bytes(),
                    &mut out,
                )
                .map_err(|_| SignError::Random)?;
                out
            }
        };
        push_signature(&mut token, &signature);
        Ok(token)
    }

    /// The JWK that verifies this signer's tokens, with its `kid` and `alg`: for ES256 and
    /// RS256 the public key only; for HS256 the secret itself (`k`).
    pub fn public_jwk(&self) -> Value {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let mut jwk = match &self.material {
            Material::Hmac(_, secret) => json!({ "kty": "oct", "k": b64(secret) }),
            Material::Ecdsa(key) => {
                let point = key.public_key().as_ref();
                let (x, y) = point[1..].split_at(32);
                json!({ "kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y) })
            }
            Material::Rsa(key) => {
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                json!({ "kty": "RSA", "n": b64(&public.n), "e": b64(&public.e) })
            }
        };
        jwk["alg"] = json!(self.alg().name());
        jwk["use"] = json!("sig");
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

/// A fresh P-256 private key as a PKCS#8 PEM file, what
/// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` writes (tests).
pub fn generate_es256_pem() -> Result<String, SignError> {
    let der = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .map_err(|_| SignError::Random)?;
    let body = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// `base64url(header).base64url(claims)`, the part a signature covers.
fn encode_parts(header: &str, claims: &str) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    token
}

fn push_signature(token: &mut String, signature: &[u8]) {
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
}

/// The DER inside a PEM "PRIVATE KEY" block (RFC 7468; text around the block is ignored).
fn pkcs8_der(pem: &[u8]) -> Result<Vec<u8>, SignError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let text = std::str::from_utf8(pem).map_err(|_| SignError::NotPem("not text"))?;
    let start = text.find(BEGIN).ok_or(SignError::NotPem(
        "no BEGIN PRIVATE KEY line (an \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" file converts \
         with `openssl pkcs8 -topk8 -nocrypt`)",
    ))? + BEGIN.len();
    let len = text[start..]
        .find(END)
        .ok_or(SignError::NotPem("no END PRIVATE KEY line"))?;
    let body: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(body)
        .map_err(|_| SignError::NotPem("the block is not base64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_are_found_among_text_and_bad_ones_named() {
        let pem = include_bytes!("testdata/rs256.pem");
        assert_eq!(Signer::rs256_from_pem(pem).unwrap().alg(), Alg::Rs256);
        assert!(matches!(
            Signer::es256_from_pem(pem),
            Err(SignError::BadKey(Alg::Es256, _))
        ));
        for bad in [
            &b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"[..],
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
            b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n",
            b"\xff\xfe",
        ] {
            assert!(
                matches!(Signer::es256_from_pem(bad), Err(SignError::NotPem(_))),
                "{bad:?}"
            );
        }
        assert!(Signer::from_pem(Alg::Hs256, pem).is_err());
    }

    #[test]
    fn tokens_carry_the_stamps_and_debug_hides_the_key() {
        let signer = Signer::hs256(b"do-not-print")
            .with_kid("k1")
            .with_audience("tether")
            .with_issuer("id");
        let token = signer.sign("d", 100).unwrap();
        let mut parts = token.split('.');
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header, json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(
            claims,
            json!({"sub": "d", "exp": 100, "aud": "tether", "iss": "id"})
        );
        let debug = format!("{signer:?}");
        assert!(
            !debug.contains("do-not-print") && debug.contains("k1"),
            "{debug}"
        );
    }

    #[test]
    fn public_jwks_hold_no_private_part() {
        let es = Signer::generate_es256().unwrap().with_kid("e").public_jwk();
        assert_eq!(es["kty"], "EC");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(es["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert!(es.get("d").is_none());
        let rs = Signer::rs256_from_pem(include_bytes!("testdata/rs256.pem"))
            .unwrap()
            .public_jwk();
        assert_eq!(rs["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(rs["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
        assert!(rs.get("d").is_none() && rs.get("kid").is_none());
    }
}
