//! UTF-8 validation of a text message as its fragments arrive, with no state of its own.
//!
//! The fragments of a message are joined in the caller's buffer, so validating a new fragment
//! only needs the bytes already checked to end on a character boundary or inside one
//! character. It restarts at the last character start before the new bytes (at most three
//! bytes back) and runs the standard library's validator from there. An invalid sequence is
//! refused at the first fragment that shows it, even when it began in an earlier fragment; a
//! character cut at a fragment boundary waits for the next one.

/// Checks the text `joined[from..]` that continues `joined[..from]`, which an earlier call
/// checked. `last`: the message ends here, so a cut character at the end is invalid too.
/// Returns whether the text is valid so far.
pub(super) fn continues_valid(joined: &[u8], from: usize, last: bool) -> bool {
    let from = from.min(joined.len());
    let mut start = from.saturating_sub(3);
    while start < from && is_continuation(joined[start]) {
        start += 1;
    }
    match std::str::from_utf8(&joined[start..]) {
        Ok(_) => true,
        // `error_len() == None`: the bytes end inside a character that may still complete.
        Err(e) => e.error_len().is_none() && !last,
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0xc0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in the given pieces and returns after how many pieces it was refused.
    fn refused_at(pieces: &[&[u8]]) -> Option<usize> {
        let mut joined = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let from = joined.len();
            joined.extend_from_slice(piece);
            if !continues_valid(&joined, from, i + 1 == pieces.len()) {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn characters_split_at_every_byte_are_accepted() {
        let text = "κόσμε, 𝄞 and ascii".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(refused_at(&[&text[..cut], &text[cut..]]), None, "cut {cut}");
        }
        // One byte per fragment.
        let singles: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(refused_at(&singles), None);
    }

    #[test]
    fn invalid_sequences_fail_in_the_fragment_that_shows_them() {
        // A surrogate (ED A0 80) fails on its second byte.
        assert_eq!(refused_at(&[b"ab\xed", b"\xa0\x80", b"cd"]), Some(1));
        // Beyond U+10FFFF (F4 90 ..) fails on its second byte.
        assert_eq!(refused_at(&[b"\xf4", b"\x90\x80\x80"]), Some(1));
        // A lone continuation byte, an overlong encoding, bytes never valid.
        assert_eq!(refused_at(&[b"ok", b"\x80"]), Some(1));
        assert_eq!(refused_at(&[b"\xc0\xaf"]), Some(0));
        assert_eq!(refused_at(&[b"a", b"\xff"]), Some(1));
        // Valid so far, then the message ends in the middle of a character.
        assert_eq!(refused_at(&[b"\xf0\x9d", b"\x84"]), Some(1));
        assert_eq!(refused_at(&[b"\xf0\x9d", b"\x84", b"\x9e"]), None);
    }

    #[test]
    fn the_rest_of_a_message_after_a_complete_character_is_checked() {
        // The look-back lands on a complete 4-byte character and skips it.
        assert_eq!(refused_at(&["𝄞".as_bytes(), b"\xc3"]), Some(1));
        assert_eq!(refused_at(&["𝄞".as_bytes(), b"\xc3", b"\xa9"]), None);
        assert!(continues_valid(b"", 0, true));
    }
}
