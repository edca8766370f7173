//! CRC-32C (Castagnoli), the checksum on every journal record.
//!
//! Written by hand rather than pulled in as a dependency: it is a 256-entry table built at
//! compile time and one loop. Reflected polynomial `0x82F63B78`, initial value and final xor
//! `0xFFFFFFFF` — the variant used by iSCSI, ext4 and LevelDB, so `checksum(b"123456789")` is
//! `0xE3069283`.

const POLYNOMIAL: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLYNOMIAL
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

/// The CRC-32C of `bytes`.
pub(super) fn checksum(bytes: &[u8]) -> u32 {
    update(0, bytes)
}

/// Continues a checksum: `update(checksum(a), b) == checksum(a ++ b)`.
pub(super) fn update(crc: u32, bytes: &[u8]) -> u32 {
    let mut crc = !crc;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn known_vectors() {
        // RFC 3720 (iSCSI) appendix B.4.
        assert_eq!(checksum(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(checksum(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0u8..32).collect();
        assert_eq!(checksum(&ascending), 0x46DD_794E);
    }

    #[test]
    fn update_chains() {
        let data = b"the quick brown fox jumps over the lazy dog";
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(update(checksum(a), b), checksum(data));
        }
    }

    #[test]
    fn zero_length_field_does_not_checksum_to_zero() {
        // The journal checksums the length field too, so a zero-filled tail (length 0,
        // CRC 0) never passes for an empty record.
        assert_ne!(checksum(&[0u8; 4]), 0);
    }
}
