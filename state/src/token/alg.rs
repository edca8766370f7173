//! The three JWS algorithms (RFC 7518 §3.1) the daemon knows, by their exact names.
//!
//! Each goes with exactly one kind of key (`kty`), so a token's `alg` can only ever be checked
//! with a key made for it: an RSA or EC public key is never an HMAC secret.

use std::fmt;

/// A signature algorithm a token may name in its `alg` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC with SHA-256: a shared secret (`kty` `oct`).
    Hs256,
    /// ECDSA on P-256 with SHA-256, the signature `r ‖ s` (64 bytes): `kty` `EC`, `crv` `P-256`.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, a modulus of 2048 to 8192 bits: `kty` `RSA`.
    Rs256,
}

impl Alg {
    /// Every algorithm, in the order documentation lists them.
    pub const ALL: [Alg; 3] = [Alg::Hs256, Alg::Es256, Alg::Rs256];

    /// The algorithm named exactly `name` (case matters: `hs256` and `none` are refused).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Its JWS name: `HS256`, `ES256` or `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Es256 => "ES256",
            Alg::Rs256 => "RS256",
        }
    }

    /// The JWK key type it needs: `oct`, `EC` or `RSA`.
    pub fn key_type(self) -> &'static str {
        match self {
            Alg::Hs256 => "oct",
            Alg::Es256 => "EC",
            Alg::Rs256 => "RSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_exact() {
        for alg in Alg::ALL {
            assert_eq!(Alg::from_name(alg.name()), Some(alg));
        }
        for name in [
            "none", "None", "hs256", "HS512", "ES384", "PS256", "RS 256", "",
        ] {
            assert_eq!(Alg::from_name(name), None, "{name}");
        }
    }
}
