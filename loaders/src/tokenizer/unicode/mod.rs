//! Codepoint classification and UTF-8 handling with llama.cpp's exact rules: its category table
//! (see `table.rs`), its whitespace set, and its lenient UTF-8 decoder.

mod table;

/// llama.cpp's category bits (`unicode_cpt_flags`). A codepoint carries exactly one of them.
pub(crate) const UNDEFINED: u8 = 0x01;
pub(crate) const NUMBER: u8 = 0x02;
pub(crate) const LETTER: u8 = 0x04;
pub(crate) const ACCENT_MARK: u8 = 0x10;
pub(crate) const PUNCTUATION: u8 = 0x20;
pub(crate) const SYMBOL: u8 = 0x40;

/// What the split rules ask of a codepoint. `Flags::default()` (all false, category 0) is what
/// llama.cpp reports for a position outside the current piece.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub category: u8,
    pub whitespace: bool,
}

impl Flags {
    pub fn is_number(self) -> bool {
        self.category & NUMBER != 0
    }
    pub fn is_letter(self) -> bool {
        self.category & LETTER != 0
    }
    pub fn is_accent_mark(self) -> bool {
        self.category & ACCENT_MARK != 0
    }
    /// Any bit set: false only outside the piece (llama.cpp's `flags.as_uint()`).
    pub fn is_some(self) -> bool {
        self.category != 0 || self.whitespace
    }
}

pub(crate) fn flags(cpt: u32) -> Flags {
    Flags { category: category(cpt), whitespace: is_whitespace(cpt) }
}

pub(crate) fn category(cpt: u32) -> u8 {
    if cpt >= 0x110000 {
        return UNDEFINED;
    }
    let ranges = &table::RANGES;
    // The first entry starts at 0, so the partition point is at least 1.
    let i = ranges.partition_point(|&(start, _)| start <= cpt);
    ranges[i - 1].1
}

/// llama.cpp's `unicode_set_whitespace`, which is Unicode's White_Space property.
pub(crate) fn is_whitespace(cpt: u32) -> bool {
    matches!(
        cpt,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

/// Length of the UTF-8 sequence a lead byte announces, as llama.cpp's `unicode_len_utf8` reads
/// it (a stray continuation byte counts as 1).
pub(crate) fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

pub(crate) const REPLACEMENT: u32 = 0xFFFD;

/// Decodes like llama.cpp's `unicode_cpts_from_utf8`: a malformed sequence becomes U+FFFD and
/// costs one byte. Overlong forms and surrogates are not checked, just as there.
pub(crate) fn decode_utf8(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match decode_one(&bytes[i..]) {
            Some((cpt, len)) => {
                out.push(cpt);
                i += len;
            }
            None => {
                out.push(REPLACEMENT);
                i += 1;
            }
        }
    }
    out
}

fn decode_one(b: &[u8]) -> Option<(u32, usize)> {
    let lead = b[0];
    let cont = |k: usize| b.get(k).filter(|&&c| c & 0xC0 == 0x80).map(|&c| u32::from(c & 0x3F));
    if lead & 0x80 == 0 {
        return Some((u32::from(lead), 1));
    }
    if lead & 0x40 == 0 {
        return None;
    }
    if lead & 0x20 == 0 {
        return Some(((u32::from(lead & 0x1F) << 6) | cont(1)?, 2));
    }
    if lead & 0x10 == 0 {
        return Some(((u32::from(lead & 0x0F) << 12) | (cont(1)? << 6) | cont(2)?, 3));
    }
    if lead & 0x08 == 0 {
        return Some(((u32::from(lead & 0x07) << 18) | (cont(1)? << 12) | (cont(2)? << 6) | cont(3)?, 4));
    }
    None
}

/// Encodes like llama.cpp's `unicode_cpt_to_utf8`, which also writes surrogates. Codepoints
/// past U+10FFFF cannot come out of `decode_utf8`, so they are not handled.
pub(crate) fn push_utf8(out: &mut Vec<u8>, cpt: u32) {
    match cpt {
        0..=0x7F => out.push(cpt as u8),
        0x80..=0x7FF => out.extend_from_slice(&[0xC0 | (cpt >> 6) as u8, 0x80 | (cpt & 0x3F) as u8]),
        0x800..=0xFFFF => out.extend_from_slice(&[
            0xE0 | (cpt >> 12) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xF0 | ((cpt >> 18) & 0x07) as u8,
            0x80 | ((cpt >> 12) & 0x3F) as u8,
            0x80 | ((cpt >> 6) & 0x3F) as u8,
            0x80 | (cpt & 0x3F) as u8,
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_match_llama_cpp() {
        assert_eq!(category('a' as u32), LETTER);
        assert_eq!(category('7' as u32), NUMBER);
        assert_eq!(category('$' as u32), SYMBOL);
        assert_eq!(category(',' as u32), PUNCTUATION);
        assert_eq!(category(0x0301), ACCENT_MARK);
        assert_eq!(category(0x4E2D), LETTER);
        assert_eq!(category(0x10FFFF), UNDEFINED);
        assert!(is_whitespace(0x3000) && !is_whitespace(0x200B));
    }

    #[test]
    fn lenient_decoding() {
        assert_eq!(decode_utf8("aé€😀".as_bytes()), vec![0x61, 0xE9, 0x20AC, 0x1F600]);
        assert_eq!(decode_utf8(&[0x80, 0x61, 0xE2, 0x82]), vec![REPLACEMENT, 0x61, REPLACEMENT, REPLACEMENT]);
        let mut back = Vec::new();
        for c in decode_utf8("aé€😀".as_bytes()) {
            push_utf8(&mut back, c);
        }
        assert_eq!(back, "aé€😀".as_bytes());
    }
}
