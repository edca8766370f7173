//! The keys login tokens are checked with: a JWK set (RFC 7517) and the legacy shared
//! secret, as one [`KeySet`].
//!
//! A JWK set is `{"keys":[…]}`; each key is one of
//!
//! - `{"kty":"EC","crv":"P-256","x":…,"y":…}` for ES256: a public point, both coordinates 32
//!   bytes of base64url, checked to be on the curve when the set is read;
//! - `{"kty":"RSA","n":…,"e":…}` for RS256: a public modulus of 2048 to 8192 bits (odd), an
//!   odd exponent from 3 to 2³³ − 1;
//! - `{"kty":"oct","k":…}` for HS256: a shared secret of at least 32 bytes (RFC 7518 §3.2).
//!
//! with optional `kid` (a non-empty string, unique in the set), `alg` (when given it must be
//! the one algorithm the key type allows), `use` (`sig`; a key with `use` `enc` is for
//! encryption and skipped) and `key_ops` (must then allow `verify`). A key holding private
//! parts (`d`) is refused: a host that verifies tokens needs, and should hold, no key able to
//! mint them (an `oct` secret always can: prefer EC or RSA keys). Anything else — another
//! `kty`, `crv` or `alg`, a coordinate of the wrong length, a duplicate `kid` — is an error
//! naming the key, so `check` refuses the file rather than silently dropping a key.
//!
//! Which key checks a token: the one whose `kid` is the token's `kid`; a token without `kid`
//! goes to the one key without a `kid` for its `alg` (the legacy `jwt_secret` is such a key,
//! HS256). A key only ever checks tokens of its own algorithm.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::{agreement, hmac, rand, signature};
use serde::Deserialize;
use thiserror::Error;

use super::alg::Alg;
use super::TokenError;

/// Largest JWK set file read, bytes.
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Most keys in one set.
pub const MAX_KEYS: usize = 64;
/// Shortest HS256 key in a JWK set, bytes (the hash's output size).
pub const MIN_OCT_BYTES: usize = 32;

/// One verification key: what it is, and the `kid` that selects it.
#[derive(Clone)]
pub(crate) struct Key {
    kid: Option<Box<str>>,
    material: Material,
}

#[derive(Clone)]
enum Material {
    Hmac(hmac::Key),
    /// The uncompressed point `04 ‖ x ‖ y`.
    Ec(Box<[u8]>),
    /// Big-endian, without leading zeros.
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
    },
}

impl Key {
    fn alg(&self) -> Alg {
        match self.material {
            Material::Hmac(_) => Alg::Hs256,
            Material::Ec(_) => Alg::Es256,
            Material::Rsa { .. } => Alg::Rs256,
        }
    }

    /// Whether `signature` is this key's signature of `signed` (HMAC tags compared in
    /// constant time).
    pub(crate) fn verifies(&self, signed: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Hmac(key) => hmac::verify(key, signed, sig).is_ok(),
            Material::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, sig)
                    .is_ok()
            }
            Material::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, sig)
                .is_ok(),
        }
    }
}

impl fmt::Debug for Key {
    /// The kid and the algorithm; never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kid {
            Some(kid) => write!(f, "{kid:?} {}", self.alg()),
            None => write!(f, "(no kid) {}", self.alg()),
        }
    }
}

/// The keys tokens are checked with.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

/// Why a JWK set (or the combination of keys) was refused. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeysError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not a JWK set ({{\"keys\":[…]}}): {0}")]
    NotJwks(String),
    #[error("more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("key {index} ({kid}): {why}")]
    BadKey {
        /// 1-based position in `keys`.
        index: usize,
        kid: String,
        why: String,
    },
    #[error("two keys have kid {0:?}")]
    DuplicateKid(String),
    #[error("two {0} keys have no kid: a token without kid could not tell which checks it")]
    DuplicateKidless(Alg),
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    k: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<serde::de::IgnoredAny>,
}

impl KeySet {
    /// The legacy shared secret: one HS256 key without a kid.
    pub fn hs256(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![Key {
                kid: None,
                material: Material::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            }],
        }
    }

    /// Reads a JWK set file.
    pub fn read_jwks(path: &Path) -> Result<KeySet, KeysError> {
        let read = |e: std::io::Error| KeysError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_JWKS_BYTES {
            return Err(KeysError::TooLarge);
        }
        KeySet::from_jwks(&std::fs::read(path).map_err(read)?)
    }

    /// Parses a JWK set.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, KeysError> {
        if json.len() as u64 > MAX_JWKS_BYTES {
            return Err(KeysError::TooLarge);
        }
        let set: Jwks =
            serde_json::from_slice(json).map_err(|e| KeysError::NotJwks(e.to_string()))?;
        if set.keys.len() > MAX_KEYS {
            return Err(KeysError::TooManyKeys);
        }
        let mut keys = KeySet::default();
        for (i, value) in set.keys.into_iter().enumerate() {
            let kid = value
                .get("kid")
                .and_then(|k| k.as_str())
                .map_or_else(|| "no kid".to_string(), |k| format!("kid {k:?}"));
            let bad = |why: String| KeysError::BadKey {
                index: i + 1,
                kid: kid.clone(),
                why,
            };
            let jwk: Jwk = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            if let Some(key) = jwk.into_key().map_err(bad)? {
                keys.add(key)?;
            }
        }
        Ok(keys)
    }

    /// This set with `other`'s keys added (a kid once, one kid-less key per algorithm).
    pub fn merge(mut self, other: KeySet) -> Result<KeySet, KeysError> {
        for key in other.keys {
            self.add(key)?;
        }
        Ok(self)
    }

    fn add(&mut self, key: Key) -> Result<(), KeysError> {
        let clash = self.keys.iter().find(|k| match (&k.kid, &key.kid) {
            (Some(a), Some(b)) => a == b,
            (None, None) => k.alg() == key.alg(),
            _ => false,
        });
        match (clash, &key.kid) {
            (Some(_), Some(kid)) => Err(KeysError::DuplicateKid(kid.to_string())),
            (Some(_), None) => Err(KeysError::DuplicateKidless(key.alg())),
            (None, _) => {
                self.keys.push(key);
                Ok(())
            }
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key (then no token verifies).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that checks a token with this `kid` and `alg`.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Alg) -> Result<&Key, TokenError> {
        let key = match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None => self.keys.iter().find(|k| k.kid.is_none() && k.alg() == alg),
        };
        match key {
            Some(key) if key.alg() == alg => Ok(key),
            Some(_) => Err(TokenError::WrongKeyType),
            None => Err(TokenError::UnknownKey),
        }
    }
}

impl Jwk {
    /// The key, `None` for an encryption key (skipped), or why it is refused.
    fn into_key(self) -> Result<Option<Key>, String> {
        match self.use_.as_deref() {
            None | Some("sig") => {}
            Some("enc") => return Ok(None),
            Some(other) => return Err(format!("use {other:?} is neither sig nor enc")),
        }
        if let Some(ops) = &self.key_ops {
            if !ops.iter().any(|op| op == "verify") {
                return Err("key_ops does not allow verify".into());
            }
        }
        if self.kid.as_deref() == Some("") {
            return Err("kid is empty".into());
        }
        let alg = match self.kty.as_str() {
            "oct" => Alg::Hs256,
            "EC" => Alg::Es256,
            "RSA" => Alg::Rs256,
            other => return Err(format!("kty {other:?} is not oct, EC or RSA")),
        };
        if let Some(named) = &self.alg {
            if named != alg.name() {
                return Err(format!(
                    "alg {named:?} does not go with kty {:?} (it takes {alg} only)",
                    self.kty
                ));
            }
        }
        if self.d.is_some() {
            return Err("holds a private key (d): give the public key only".into());
        }
        let material = match alg {
            Alg::Hs256 => {
                let k = part("k", self.k.as_deref())?;
                if k.len() < MIN_OCT_BYTES {
                    return Err(format!("k is shorter than {MIN_OCT_BYTES} bytes"));
                }
                Material::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &k))
            }
            Alg::Es256 => {
                if self.crv.as_deref() != Some("P-256") {
                    return Err(match &self.crv {
                        Some(crv) => format!("crv {crv:?} is not P-256"),
                        None => "crv is missing (P-256)".into(),
                    });
                }
                let (x, y) = (part("x", self.x.as_deref())?, part("y", self.y.as_deref())?);
                if x.len() != 32 || y.len() != 32 {
                    return Err("x and y must be 32 bytes each".into());
                }
                let point: Box<[u8]> = [&[4u8][..], &x, &y].concat().into();
                on_curve(&point)?;
                Material::Ec(point)
            }
            Alg::Rs256 => {
                let n = unsigned(part("n", self.n.as_deref())?);
                let e = unsigned(part("e", self.e.as_deref())?);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if !(2048..=8192).contains(&bits) || n.last().is_some_and(|b| b % 2 == 0) {
                    return Err(format!(
                        "n is {bits} bits: RS256 takes an odd modulus of 2048 to 8192 bits"
                    ));
                }
                let e_value = e
                    .iter()
                    .fold(0u64, |v, b| v.saturating_mul(256) | *b as u64);
                if e.len() > 5 || !(3..(1 << 33)).contains(&e_value) || e_value % 2 == 0 {
                    return Err("e must be odd, from 3 to 2^33 - 1".into());
                }
                Material::Rsa { n, e }
            }
        };
        Ok(Some(Key {
            kid: self.kid.map(String::into_boxed_str),
            material,
        }))
    }
}

/// A required base64url member, decoded.
fn part(name: &str, value: Option<&str>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("{name} is missing"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{name} is not base64url without padding"))?;
    if bytes.is_empty() {
        return Err(format!("{name} is empty"));
    }
    Ok(bytes)
}

/// A big-endian unsigned integer without its leading zero bytes.
fn unsigned(bytes: Vec<u8>) -> Box<[u8]> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes[zeros..].into()
}

/// Checks an uncompressed P-256 point is on the curve: ring validates a peer's point before
/// an ECDH agreement, so one agreement with a throwaway key does it.
fn on_curve(point: &[u8]) -> Result<(), String> {
    let not_on_curve = |_| "x, y is not a point on P-256".to_string();
    let rng = rand::SystemRandom::new();
    let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| "no randomness to check the point with".to_string())?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(mine, &peer, |_| ()).map_err(not_on_curve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Signer;
    use serde_json::json;

    fn jwks(keys: serde_json::Value) -> Result<KeySet, KeysError> {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn why(result: Result<KeySet, KeysError>) -> String {
        match result {
            Err(KeysError::BadKey { why, .. }) => why,
            other => panic!("expected a bad key, got {other:?}"),
        }
    }

    fn es256() -> serde_json::Value {
        Signer::generate_es256().unwrap().with_kid("e").public_jwk()
    }

    fn oct(kid: &str) -> serde_json::Value {
        json!({"kty": "oct", "kid": kid, "k": URL_SAFE_NO_PAD.encode([7u8; 32])})
    }

    #[test]
    fn a_set_of_each_kind_is_read_and_each_key_found_by_kid_and_alg() {
        let rsa = Signer::rs256_from_pem(include_bytes!("testdata/rs256.pem"))
            .unwrap()
            .with_kid("r")
            .public_jwk();
        let set = jwks(
            json!([es256(), rsa, oct("h"), {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"}]),
        )
        .unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(format!("{set:?}"), r#"["e" ES256, "r" RS256, "h" HS256]"#);
        assert_eq!(set.find(Some("e"), Alg::Es256).unwrap().alg(), Alg::Es256);
        assert_eq!(set.find(Some("r"), Alg::Rs256).unwrap().alg(), Alg::Rs256);
        assert_eq!(set.find(Some("h"), Alg::Hs256).unwrap().alg(), Alg::Hs256);
        // A kid names one key; a token of another algorithm never gets it.
        assert_eq!(
            set.find(Some("r"), Alg::Hs256).unwrap_err(),
            TokenError::WrongKeyType
        );
        assert_eq!(
            set.find(Some("e"), Alg::Hs256).unwrap_err(),
            TokenError::WrongKeyType
        );
        assert_eq!(
            set.find(Some("x"), Alg::Es256).unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(
            set.find(None, Alg::Es256).unwrap_err(),
            TokenError::UnknownKey
        );
    }

    #[test]
    fn kidless_keys_serve_kidless_tokens_of_their_algorithm() {
        let set = KeySet::hs256(b"legacy")
            .merge(jwks(json!([oct("h")])).unwrap())
            .unwrap();
        assert_eq!(set.find(None, Alg::Hs256).unwrap().kid, None);
        assert_eq!(
            set.find(None, Alg::Rs256).unwrap_err(),
            TokenError::UnknownKey
        );
        let mut kidless = oct("x");
        kidless.as_object_mut().unwrap().remove("kid");
        let clash = KeySet::hs256(b"legacy").merge(jwks(json!([kidless])).unwrap());
        assert_eq!(clash.unwrap_err(), KeysError::DuplicateKidless(Alg::Hs256));
        assert_eq!(
            jwks(json!([oct("h"), oct("h")])).unwrap_err(),
            KeysError::DuplicateKid("h".into())
        );
    }

    #[test]
    fn bad_sets_are_refused_with_a_reason() {
        for bad in [&b"not json"[..], b"[]", b"{}", br#"{"keys":{}}"#] {
            assert!(matches!(KeySet::from_jwks(bad), Err(KeysError::NotJwks(_))));
        }
        let many: Vec<_> = (0..=MAX_KEYS).map(|i| oct(&i.to_string())).collect();
        assert_eq!(jwks(json!(many)).unwrap_err(), KeysError::TooManyKeys);
        assert!(jwks(json!([])).unwrap().is_empty());
    }

    #[test]
    fn each_bad_key_is_named_with_why() {
        let mut ec = es256();
        let with = |base: &serde_json::Value, field: &str, v: serde_json::Value| {
            let mut k = base.clone();
            k[field] = v;
            json!([k])
        };
        let cases = [
            (json!([{"kid": "a"}]), "missing field `kty`"),
            (
                with(&ec, "kty", json!("OKP")),
                "kty \"OKP\" is not oct, EC or RSA",
            ),
            (
                with(&ec, "alg", json!("HS256")),
                "alg \"HS256\" does not go with kty \"EC\"",
            ),
            (
                with(&ec, "alg", json!("ES384")),
                "alg \"ES384\" does not go with kty \"EC\"",
            ),
            (
                with(&ec, "crv", json!("P-384")),
                "crv \"P-384\" is not P-256",
            ),
            (
                with(&ec, "x", json!("AAAA")),
                "x and y must be 32 bytes each",
            ),
            (
                with(&ec, "y", json!("a+b/")),
                "y is not base64url without padding",
            ),
            (
                with(&ec, "x", json!(URL_SAFE_NO_PAD.encode([1u8; 32]))),
                "not a point on P-256",
            ),
            (with(&ec, "d", json!("AAAA")), "holds a private key (d)"),
            (
                with(&ec, "use", json!("other")),
                "use \"other\" is neither sig nor enc",
            ),
            (
                with(&ec, "key_ops", json!(["sign"])),
                "key_ops does not allow verify",
            ),
            (with(&ec, "kid", json!("")), "kid is empty"),
            (with(&ec, "kid", json!(5)), "invalid type"),
            (
                with(&oct("h"), "k", json!(URL_SAFE_NO_PAD.encode([1u8; 31]))),
                "k is shorter than 32 bytes",
            ),
            (json!([{"kty": "oct"}]), "k is missing"),
            (
                json!([{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB"}]),
                "n is 1024 bits",
            ),
            (
                json!([{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xfeu8; 256]), "e": "AQAB"}]),
                "n is 2048 bits",
            ),
            (
                json!([{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "AQA"}]),
                "e must be odd",
            ),
            (
                json!([{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 256]), "e": "Aw"}]),
                "",
            ),
        ];
        for (keys, expected) in cases {
            let result = jwks(keys.clone());
            if expected.is_empty() {
                assert!(result.is_ok(), "{keys}: {result:?}");
                continue;
            }
            let why = why(result);
            assert!(why.contains(expected), "{keys}: {why}");
        }
        ec["kid"] = json!("k9");
        let err = jwks(json!([oct("h"), with(&ec, "d", json!("x"))[0].clone()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "key 2 (kid \"k9\"): holds a private key (d): give the public key only"
        );
    }

    #[test]
    fn a_file_is_read_and_a_missing_one_named() {
        let dir = std::env::temp_dir().join(format!("tether-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        std::fs::write(&path, json!({"keys": [oct("h")]}).to_string()).unwrap();
        assert_eq!(KeySet::read_jwks(&path).unwrap().len(), 1);
        let missing = dir.join("missing.json");
        let err = KeySet::read_jwks(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let set = KeySet::hs256(b"super-secret-value");
        assert_eq!(format!("{set:?}"), "[(no kid) HS256]");
    }
}
