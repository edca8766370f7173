//! The DATA payload of request `id` on connection `conn`: a deterministic pattern, so an
//! echoed reply is checked byte for byte without keeping a copy of what was sent.
//!
//! Bytes 0..8 are the id, big-endian (when the payload has at least 16 bytes); every other
//! 8-byte word `j` is `mix(id ^ mix(conn)) ^ (j * φ)` little-endian, the last one truncated.
//! A payload shorter than 16 bytes is all pattern, so that it too carries the salt. A reply for the wrong id, with any
//! byte changed, or meant for another connection (a proxy's misroute: ids repeat across
//! connections, the connection salt does not) therefore fails [`verify`].

use thiserror::Error;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// How a reply body differs from the payload its id must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum Mismatch {
    #[error("body of {got} bytes, expected {expected}")]
    Length { expected: usize, got: usize },
    #[error("body differs at byte {offset}")]
    Byte { offset: usize },
}

/// splitmix64's finaliser: turns the id into a well-mixed base word.
fn mix(id: u64) -> u64 {
    let mut z = id.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 8 bytes of word `j` of the payload of `id` (whose length is `len`).
#[inline]
fn word(id: u64, base: u64, len: usize, j: usize) -> [u8; 8] {
    if j == 0 && len >= 16 {
        id.to_be_bytes()
    } else {
        (base ^ (j as u64).wrapping_mul(GOLDEN)).to_le_bytes()
    }
}

/// Appends the `len`-byte payload of request `id` of connection `conn` to `out`.
pub(crate) fn write(out: &mut Vec<u8>, conn: u64, id: u64, len: usize) {
    out.reserve(len);
    let base = mix(id ^ mix(conn));
    let mut j = 0;
    let mut left = len;
    while left > 0 {
        let take = left.min(8);
        out.extend_from_slice(&word(id, base, len, j)[..take]);
        left -= take;
        j += 1;
    }
}

/// Checks that `body` is exactly the `len`-byte payload of request `id` of connection `conn`.
pub(crate) fn verify(conn: u64, id: u64, len: usize, body: &[u8]) -> Result<(), Mismatch> {
    if body.len() != len {
        return Err(Mismatch::Length {
            expected: len,
            got: body.len(),
        });
    }
    let base = mix(id ^ mix(conn));
    for (j, chunk) in body.chunks(8).enumerate() {
        let expected = word(id, base, len, j);
        if chunk != &expected[..chunk.len()] {
            let within = chunk
                .iter()
                .zip(expected)
                .position(|(a, b)| *a != b)
                .unwrap_or(0);
            return Err(Mismatch::Byte {
                offset: j * 8 + within,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(id: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, 9, id, len);
        out
    }

    #[test]
    fn starts_with_the_id_and_has_the_right_length() {
        for len in [0, 1, 7, 8, 9, 64, 1000, 65_536] {
            let body = payload(0x0102_0304_0506_0708, len);
            assert_eq!(body.len(), len);
            if len >= 16 {
                assert_eq!(&body[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
            }
            assert_eq!(verify(9, 0x0102_0304_0506_0708, len, &body), Ok(()));
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_where_it_is() {
        for len in [1, 8, 9, 64, 4097] {
            for offset in [0, len / 2, len - 1] {
                let mut body = payload(42, len);
                body[offset] ^= 0x01;
                assert_eq!(verify(9, 42, len, &body), Err(Mismatch::Byte { offset }));
            }
        }
    }

    #[test]
    fn the_wrong_id_is_caught() {
        for len in [1, 4, 8, 64] {
            assert!(verify(9, 7, len, &payload(8, len)).is_err(), "len {len}");
        }
        // Beyond the id itself the pattern differs too.
        let (a, b) = (payload(1, 64), payload(2, 64));
        assert_ne!(a[8..], b[8..]);
    }

    #[test]
    fn another_connections_reply_is_caught() {
        // Same id, same length, different connection: what a misrouting proxy delivers.
        for len in [1, 8, 9, 15, 16, 64] {
            let mut theirs = Vec::new();
            write(&mut theirs, 10, 5, len);
            assert!(verify(11, 5, len, &theirs).is_err(), "len {len}");
        }
    }

    #[test]
    fn wrong_lengths_are_caught() {
        let body = payload(3, 64);
        assert_eq!(
            verify(9, 3, 64, &body[..63]),
            Err(Mismatch::Length {
                expected: 64,
                got: 63
            })
        );
        assert!(verify(9, 3, 63, &body).is_err());
    }

    #[test]
    fn appends_after_what_is_already_there() {
        let mut out = b"head".to_vec();
        write(&mut out, 9, 5, 20);
        assert_eq!(&out[..4], b"head");
        assert_eq!(verify(9, 5, 20, &out[4..]), Ok(()));
    }
}
