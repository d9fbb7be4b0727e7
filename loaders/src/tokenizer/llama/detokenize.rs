//! Ids back to bytes: llama.cpp's `token_to_piece` and `detokenize`, including the space
//! clean-up some BPE vocabularies ask for.

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::byte_level;
use crate::tokenizer::llama::{Kind, LlamaTokenizer};
use crate::tokenizer::unicode;

impl LlamaTokenizer {
    /// The bytes a token stands for. Control and unknown tokens render as nothing unless
    /// `special`; ids outside the vocabulary render as nothing (llama.cpp would throw).
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_piece(id, special, false, &mut out);
        out
    }

    /// Appends a token's bytes, dropping one leading space if `lstrip`.
    fn append_piece(&self, id: u32, special: bool, lstrip: bool, out: &mut Vec<u8>) {
        if !self.vocab.contains(id) {
            return;
        }
        let attr = self.vocab.attr(id);
        let shown_raw = TokenAttr::CONTROL.with(TokenAttr::UNKNOWN);
        if !special && attr.intersects(shown_raw) {
            return;
        }
        let text = self.vocab.text(id);
        let start = out.len();
        if attr.intersects(shown_raw.with(TokenAttr::USER_DEFINED)) {
            out.extend_from_slice(text);
        } else if attr.is_normal() {
            match self.kind {
                Kind::Spm => unescape_whitespace(text, out),
                Kind::Bpe { .. } => decode_byte_level(text, out),
            }
        } else if attr.is_byte() {
            out.push(byte_of(text));
        } else {
            // Unused and undefined tokens have no text, as in llama.cpp.
            return;
        }
        if lstrip && out.get(start) == Some(&b' ') {
            out.remove(start);
        }
    }

    /// llama.cpp's `detokenize`: the pieces back to back, minus the space the tokenizer put in
    /// front of the text, and with spaces cleaned up if the vocabulary asks for it.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let mut ids = ids;
        let mut remove_space = self.settings.add_space_prefix;
        if remove_special && self.settings.add_bos && !ids.is_empty() && Some(ids[0]) == self.ids.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && self.settings.add_eos && ids.last().is_some_and(|&id| Some(id) == self.ids.eos) {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            self.append_piece(id, unparse_special, remove_space, &mut text);
            remove_space = false;
        }
        if self.settings.clean_spaces {
            clean_spaces(&mut text);
        }
        text
    }
}

fn unescape_whitespace(text: &[u8], out: &mut Vec<u8>) {
    let marker = "\u{2581}".as_bytes();
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with(marker) {
            out.push(b' ');
            rest = &rest[marker.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
}

/// GPT-2 byte-level text back to bytes. A character outside the byte alphabet comes out as
/// llama.cpp writes it: `[UNK_BYTE_0x<hex>` followed by the whole token text and `]`.
fn decode_byte_level(text: &[u8], out: &mut Vec<u8>) {
    for cpt in unicode::decode_utf8(text) {
        match byte_level::char_to_byte(cpt) {
            Some(b) => out.push(b),
            None => {
                let mut utf8 = Vec::new();
                unicode::push_utf8(&mut utf8, cpt);
                out.extend_from_slice(b"[UNK_BYTE_0x");
                for b in utf8 {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text);
                out.push(b']');
            }
        }
    }
}

/// The byte of a `<0xNN>` token, read as llama.cpp's `strtol` reads the two characters at
/// offset 3 (hex digits up to the first non-digit; none gives 0).
fn byte_of(text: &[u8]) -> u8 {
    let digits = text.get(3..5.min(text.len())).unwrap_or(&[]);
    let mut value = 0u32;
    for &c in digits {
        match (c as char).to_digit(16) {
            Some(d) => value = value * 16 + d,
            None => break,
        }
    }
    value as u8
}

/// llama.cpp's three clean-up passes, run in place on the bytes exactly as it runs them: no
/// space before `? ! . ,`, none around a lone `'`, and none before `'s 'm 're 've`.
fn clean_spaces(text: &mut Vec<u8>) {
    // " ?" → "?" and so on.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }

    // " ' " → "'". The byte after the quote is overwritten with NUL and skipped, which the next
    // step then sees as its previous byte.
    let n = total;
    total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }

    // " 's" → "'s", also for 'm, 're and 've.
    let n = total;
    total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let drop_space = match x1 {
                b't' | b'd' => false,
                b's' | b'm' => true,
                _ => i + 2 < n && matches!((x1, text[i + 2]), (b'r', b'e') | (b'v', b'e')),
            };
            if drop_space {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_up_matches_llama_cpp() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");

        assert_eq!(clean("we 're ok 'd"), "we're ok 'd");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn byte_tokens() {
        assert_eq!(byte_of(b"<0x0A>"), 10);
        assert_eq!(byte_of(b"<0xFF>"), 255);
        assert_eq!(byte_of(b"<0x"), 0);
    }
}
