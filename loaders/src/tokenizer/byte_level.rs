//! GPT-2's reversible byte ↔ character mapping: every byte becomes a printable character, so a
//! byte-level BPE vocabulary can be stored as text.

/// Bytes that stand for themselves: the printable ASCII and Latin-1 ranges. Every other byte
/// is numbered in order and shifted to U+0100 and up.
const fn maps_to_itself(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The highest character the mapping uses is U+0100 + 67.
const N_CHARS: usize = 256 + 68;

/// `TO_CHAR[b]` is the codepoint standing for byte `b`.
const TO_CHAR: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut shifted = 0u16;
    let mut b = 0usize;
    while b < 256 {
        if maps_to_itself(b as u8) {
            table[b] = b as u16;
        } else {
            table[b] = 256 + shifted;
            shifted += 1;
        }
        b += 1;
    }
    table
};

/// `FROM_CHAR[c]` is the byte codepoint `c` stands for, or -1.
const FROM_CHAR: [i16; N_CHARS] = {
    let mut table = [-1i16; N_CHARS];
    let mut b = 0usize;
    while b < 256 {
        table[TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
};

/// The character that stands for `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    // Every entry is below U+0144, a valid scalar value.
    char::from_u32(u32::from(TO_CHAR[b as usize])).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte a codepoint stands for, if it is one of the 256 characters of the mapping.
pub(crate) fn char_to_byte(c: u32) -> Option<u8> {
    let b = *FROM_CHAR.get(c as usize)?;
    u8::try_from(b).ok()
}

/// Appends the UTF-8 of the character standing for each byte of `bytes`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        let mut buf = [0u8; 4];
        out.extend_from_slice(byte_to_char(b).encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_gpt2s() {
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(byte_to_char(0xAD), 'Ń');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(u32::from(byte_to_char(b))), Some(b));
        }
        assert_eq!(char_to_byte('€' as u32), None);
        let mut out = Vec::new();
        encode_into(" a\n".as_bytes(), &mut out);
        assert_eq!(out, "ĠaĊ".as_bytes());
    }
}
