//! Login tokens: JWT (RFC 7519) in compact JWS form (RFC 7515), as identity providers issue
//! them, signed with HS256, ES256 or RS256.
//!
//! The daemon only checks tokens; whoever authenticates users (an account service, an
//! identity provider) mints them. Sans-IO: bytes and "now" in, claims or a reason out.
//!
//! - [`alg`]: the three algorithms, each tied to one key type (no algorithm confusion).
//! - [`header`]: `alg`, `kid`; `crit` refused.
//! - [`claims`]: `sub`, `exp`, `nbf`, `iat`, `aud`, `iss` and the [`Policy`] they are judged by
//!   (leeway, longest lifetime, audiences, issuers).
//! - [`keys`]: the [`KeySet`] — a JWK set file (EC P-256 and RSA public keys, `oct` secrets),
//!   and the legacy shared secret as an HS256 key without `kid`.
//! - [`verify`]: the [`Verifier`], the order of the checks.
//! - [`cache`]: the [`TokenCache`] of ES256/RS256 tokens already verified.
//! - [`signer`]: the [`Signer`] that mints tokens of each kind, for tests, loadgen and
//!   benchmarks.
//!
//! Signatures are verified by `ring` (HMAC tags in constant time).

mod alg;
mod cache;
mod claims;
mod header;
mod keys;
mod rooms;
mod signer;
mod verify;

use thiserror::Error;

pub use alg::Alg;
pub use cache::TokenCache;
pub use claims::Policy;
pub use keys::{KeySet, KeysError, MAX_JWKS_BYTES, MAX_KEYS, MIN_OCT_BYTES};
pub use rooms::{RoomGrants, MAX_GRANTS};
pub use signer::{generate_es256_pem, SignError, Signer};
pub use verify::Verifier;

/// Longest device id (`sub`) accepted, in bytes.
pub const MAX_SUB_LEN: usize = 128;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The device id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The `rooms` claim: which rooms the session may JOIN by itself.
    pub rooms: Option<std::sync::Arc<RoomGrants>>,
}

/// Why a token was refused. The text goes to logs and LOGIN_FAIL reasons; it never holds
/// the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token header is not a JSON object with alg HS256, ES256 or RS256")]
    BadHeader,
    #[error("token header has crit: no extension is understood")]
    Critical,
    #[error("token kid names no configured key (or no key without kid fits its alg)")]
    UnknownKey,
    #[error("token alg does not match its key's type")]
    WrongKeyType,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token claims are not a JSON object")]
    BadClaims,
    #[error("token's rooms claim is not an array of at most {MAX_GRANTS} room names or prefixes ending in *")]
    BadRooms,
    #[error("token has no sub, or sub is empty, not a string or longer than {MAX_SUB_LEN} bytes")]
    BadSubject,
    #[error("token has no numeric exp")]
    MissingExpiry,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token lives longer than jwt_max_lifetime_s")]
    TooLongLived,
    #[error("token aud is not one of jwt_audiences")]
    WrongAudience,
    #[error("token iss is not one of jwt_issuers")]
    WrongIssuer,
}

/// An HS256 token for device `sub` expiring at `exp_s` (Unix seconds), signed with `secret`
/// and no `kid`: what the legacy `jwt_secret` verifies.
pub fn sign(secret: &[u8], sub: &str, exp_s: u64) -> String {
    Signer::hs256(secret).hs256_sign(sub, exp_s)
}

/// An HS256 token with arbitrary claims (tests use it for tokens that must be refused).
pub fn sign_claims(secret: &[u8], claims: &serde_json::Value) -> String {
    Signer::hs256(secret).hs256_token(&claims.to_string())
}
