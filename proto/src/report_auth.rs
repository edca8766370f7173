//! Signed load reports: how a gateway proves to ipconfig which gateway a `POST /v1/report`
//! comes from, sans-IO. The gateway signs ([`sign`]); ipconfig checks ([`verifies`]) and
//! keeps the policy (whose keys, clock window, replays) to itself.
//!
//! A signed report carries three headers:
//!
//! | header | value |
//! |---|---|
//! | [`ID_HEADER`] `x-tether-gateway` | the gateway id, equal to the body's `id` |
//! | [`TIMESTAMP_HEADER`] `x-tether-timestamp` | Unix time in milliseconds, decimal |
//! | [`SIGNATURE_HEADER`] `x-tether-signature` | HMAC-SHA256, lowercase hex (64 digits) |
//!
//! The MAC is over `tether-report-v1\n{id}\n{timestamp}\nPOST /v1/report\n{body}`: the id,
//! the time and the exact body bytes, under a key only that gateway and ipconfig hold. The
//! request line signed is the route ipconfig serves, not the URL's path, so a proxy that
//! maps `http://host/prefix/` onto ipconfig does not break signatures.
//!
//! Keys are text, as `openssl rand -hex 32` prints them: [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`]
//! printable ASCII characters, no spaces, used as they are (their bytes) as the HMAC key. A
//! key file holds one key and may end in a newline ([`key_from_file`]).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// The gateway id the report is signed for.
pub const ID_HEADER: &str = "x-tether-gateway";
/// When the report was signed: Unix time in milliseconds.
pub const TIMESTAMP_HEADER: &str = "x-tether-timestamp";
/// HMAC-SHA256 of the signed text, lowercase hex.
pub const SIGNATURE_HEADER: &str = "x-tether-signature";
/// Shortest key, in characters: `openssl rand -hex 16` (128 bits).
pub const MIN_KEY_LEN: usize = 32;
/// Longest key, in characters.
pub const MAX_KEY_LEN: usize = 1024;
/// Hex digits in a signature.
pub const SIGNATURE_LEN: usize = 64;

/// What every signed text starts with: the scheme and its version.
const CONTEXT: &[u8] = b"tether-report-v1\n";
/// The request signed: the route ipconfig serves reports on.
const ROUTE: &[u8] = b"POST /v1/report\n";

/// Why a key is refused. The text never holds the key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("the key is {0} characters; at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)")]
    TooShort(usize),
    #[error("the key is longer than {MAX_KEY_LEN} characters")]
    TooLong,
    #[error("the key must be printable ASCII with no spaces (e.g. `openssl rand -hex 32`)")]
    NotPrintable,
}

/// Whether `key` is a usable key: [`MIN_KEY_LEN`]..=[`MAX_KEY_LEN`] printable ASCII
/// characters, no spaces.
pub fn check_key(key: &[u8]) -> Result<(), KeyError> {
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort(key.len()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if !key.iter().all(u8::is_ascii_graphic) {
        return Err(KeyError::NotPrintable);
    }
    Ok(())
}

/// The key a key file holds: its contents without the final line break, checked.
pub fn key_from_file(contents: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut key = contents.to_vec();
    if key.last() == Some(&b'\n') {
        key.pop();
        if key.last() == Some(&b'\r') {
            key.pop();
        }
    }
    check_key(&key)?;
    Ok(key)
}

fn mac(key: &[u8], id: &str, timestamp_ms: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(CONTEXT);
    mac.update(id.as_bytes());
    mac.update(b"\n");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(ROUTE);
    mac.update(body);
    mac
}

/// The [`SIGNATURE_HEADER`] value for a report of gateway `id` signed at `timestamp_ms`.
pub fn sign(key: &[u8], id: &str, timestamp_ms: u64, body: &[u8]) -> String {
    let tag = mac(key, id, timestamp_ms, body).finalize().into_bytes();
    let mut hex = String::with_capacity(SIGNATURE_LEN);
    for byte in tag {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `signature` (hex, either case) is `key`'s MAC of this report; compared in
/// constant time. A signature that is not 64 hex digits never verifies.
pub fn verifies(key: &[u8], id: &str, timestamp_ms: u64, body: &[u8], signature: &str) -> bool {
    let Some(tag) = decode_hex(signature) else {
        return false;
    };
    mac(key, id, timestamp_ms, body).verify_slice(&tag).is_ok()
}

fn decode_hex(text: &str) -> Option<[u8; SIGNATURE_LEN / 2]> {
    let digits = text.as_bytes();
    if digits.len() != SIGNATURE_LEN {
        return None;
    }
    let mut out = [0u8; SIGNATURE_LEN / 2];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high << 4 | low).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let body = br#"{"id":"gw-1"}"#;
        let sig = sign(KEY, "gw-1", 1_700_000_000_000, body);
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert!(sig.bytes().all(|b| HEX.contains(&b)));
        assert!(verifies(KEY, "gw-1", 1_700_000_000_000, body, &sig));
        assert!(verifies(
            KEY,
            "gw-1",
            1_700_000_000_000,
            body,
            &sig.to_uppercase()
        ));
        let other_key = b"fedcba9876543210fedcba9876543210";
        assert!(!verifies(other_key, "gw-1", 1_700_000_000_000, body, &sig));
        assert!(!verifies(KEY, "gw-2", 1_700_000_000_000, body, &sig));
        assert!(!verifies(KEY, "gw-1", 1_700_000_000_001, body, &sig));
        assert!(!verifies(KEY, "gw-1", 1_700_000_000_000, b"{}", &sig));
        for bad in [
            "",
            "zz",
            &sig[..63],
            &format!("{sig}0"),
            &sig.replace('a', "g"),
        ] {
            if bad != sig {
                assert!(
                    !verifies(KEY, "gw-1", 1_700_000_000_000, body, bad),
                    "{bad}"
                );
            }
        }
    }

    /// The signed text is exactly the documented one: the value is what
    /// `printf 'tether-report-v1\ngw-1\n1700000000000\nPOST /v1/report\n{}' |
    /// openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef` prints, so a gateway
    /// written in anything can check its own signer against it.
    #[test]
    fn the_signed_text_is_the_documented_one() {
        assert_eq!(
            sign(KEY, "gw-1", 1_700_000_000_000, b"{}"),
            "7efbaa7d389a3bbc32b4962959bcfcb2fd247e1b7cbf1a74576ff36ff5070721"
        );
    }

    #[test]
    fn keys_are_long_printable_text_and_files_may_end_in_a_newline() {
        assert_eq!(check_key(KEY), Ok(()));
        assert_eq!(check_key(b"short"), Err(KeyError::TooShort(5)));
        assert_eq!(check_key(&[b'a'; 1025]), Err(KeyError::TooLong));
        let spaced = b"0123456789abcdef 123456789abcdef0";
        assert_eq!(check_key(spaced), Err(KeyError::NotPrintable));
        assert_eq!(
            key_from_file(b"0123456789abcdef0123456789abcdef\n").unwrap(),
            KEY
        );
        assert_eq!(
            key_from_file(b"0123456789abcdef0123456789abcdef\r\n").unwrap(),
            KEY
        );
        assert!(key_from_file(b"0123456789abcdef0123456789abcdef\n\n").is_err());
        let err = key_from_file(b"secret-but-short\n").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    proptest::proptest! {
        /// Arbitrary signatures never panic and never verify.
        #[test]
        fn arbitrary_signatures_never_verify(sig in ".{0,80}") {
            let verified = verifies(KEY, "gw-1", 1, b"{}", &sig);
            proptest::prop_assert!(!verified);
        }
    }
}
