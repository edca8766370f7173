//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, the same operation both ways.

/// XORs `bytes` with `key`, as if `bytes` began `offset` bytes into a masked payload (so a
/// payload can be masked or unmasked in pieces). Masking twice gives back the input.
pub fn apply_mask(bytes: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = bytes.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(eight) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(bytes: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_byte_by_byte_definition_at_every_length_and_offset() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            for offset in 0..8 {
                let input: Vec<u8> = (0..len as u8).collect();
                let mut fast = input.clone();
                let mut slow = input.clone();
                apply_mask(&mut fast, key, offset);
                naive(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
                apply_mask(&mut fast, key, offset);
                assert_eq!(fast, input);
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let key = [1, 2, 3, 4];
        let mut whole = vec![0xAA; 23];
        apply_mask(&mut whole, key, 0);
        let mut pieces = vec![0xAA; 23];
        let (a, b) = pieces.split_at_mut(7);
        apply_mask(a, key, 0);
        apply_mask(b, key, 7);
        assert_eq!(whole, pieces);
    }
}
