//! The handshake's key and its answer (RFC 6455 §4.1–§4.2.2): `Sec-WebSocket-Key` is the
//! base64 of 16 random bytes, and `Sec-WebSocket-Accept` is base64(SHA-1(key + GUID)).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key.
pub(super) const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bytes of a `Sec-WebSocket-Key` value: base64 of 16 bytes.
pub(super) const KEY_LEN: usize = 24;
/// Bytes of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub(super) const ACCEPT_LEN: usize = 28;

/// The `Sec-WebSocket-Key` value for 16 random bytes (the client's nonce).
pub(super) fn encode_key(nonce: &[u8; 16]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    // 16 bytes always encode to exactly 24.
    let _ = STANDARD.encode_slice(nonce, &mut key);
    key
}

/// Whether `key` is the base64 (with padding, canonical) of exactly 16 bytes.
pub(super) fn is_valid_key(key: &[u8]) -> bool {
    if key.len() != KEY_LEN {
        return false;
    }
    let mut decoded = [0u8; 18];
    matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// The `Sec-WebSocket-Accept` value answering `key` (taken as sent, surrounding spaces
/// already trimmed).
pub(super) fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut accept = [0u8; ACCEPT_LEN];
    // 20 bytes always encode to exactly 28.
    let _ = STANDARD.encode_slice(digest, &mut accept);
    accept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_section_1_3_example() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_section_4_1_nonce() {
        // §4.1: the nonce "the sample nonce" is sent as dGhlIHNhbXBsZSBub25jZQ==.
        assert_eq!(
            &encode_key(b"the sample nonce"),
            b"dGhlIHNhbXBsZSBub25jZQ=="
        );
    }

    #[test]
    fn keys_must_be_16_bytes_of_base64() {
        assert!(is_valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(is_valid_key(&encode_key(&[0xff; 16])));
        for bad in [
            &b""[..],
            b"dGhlIHNhbXBsZSBub25jZQ",     // no padding
            b"dGhlIHNhbXBsZSBub25jZQ=",    // short padding
            b"dGhlIHNhbXBsZSBub25jZR==",   // non-zero trailing bits
            b"dGhlIHNhbXBsZSBub25j!Q==",   // not base64
            b"dGhlIHNhbXBsZSBub25jZXM=",   // 17 bytes
            b"dGhlIHNhbXBsZSBub25jZQ==AA", // too long
        ] {
            assert!(!is_valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
